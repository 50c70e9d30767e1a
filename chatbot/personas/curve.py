"""A loss curve drawn with characters, for the end of a training run."""

from __future__ import annotations


def plot(history: list[dict], width: int = 60, height: int = 10) -> str:
    """Train loss as `·`, held-out loss as `o`, best held-out point as `*`; steps on x."""
    train = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    held = [(h["step"], h["heldout_loss"]) for h in history if h.get("heldout_loss") is not None]
    points = train + held
    if not points:
        return "(no loss recorded)"
    low = min(v for _, v in points)
    high = max(v for _, v in points)
    if high - low < 1e-9:
        high = low + 1e-3
    last_step = max(max(s for s, _ in points), 1)
    grid = [[" "] * width for _ in range(height)]

    def put(step: int, value: float, mark: str) -> None:
        x = round(step / last_step * (width - 1))
        y = round((high - value) / (high - low) * (height - 1))
        if mark == "·" and grid[y][x] != " ":
            return
        grid[y][x] = mark

    for step, value in train:
        put(step, value, "·")
    for step, value in held:
        put(step, value, "o")
    if held:
        best_step, best_value = min(held, key=lambda p: p[1])
        put(best_step, best_value, "*")
    lines = []
    for row, cells in enumerate(grid):
        value = high - row / (height - 1) * (high - low)
        label = f"{value:6.3f}" if row in (0, height // 2, height - 1) else " " * 6
        lines.append(f"{label} │{''.join(cells)}")
    lines.append(" " * 7 + "└" + "─" * width)
    left, right = "0", f"step {last_step}"
    lines.append(" " * 8 + left + " " * max(width - len(left) - len(right), 1) + right)
    lines.append(" " * 8 + "· train loss   o held-out loss   * best (kept)")
    return "\n".join(lines)
