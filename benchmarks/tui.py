"""The TUI against `chatbot ask`, in one run: first paint, and tokens/s while it streams.

Both run as real processes: the TUI in a pseudo-terminal (its output drained as a terminal
would), `chatbot ask --json` in a pipe; same prompt, greedy, same number of new tokens, same
database settings, turns alternated so background load hits both alike.

- first paint: from starting `chatbot` to the first frame holding the whole chat screen: the
  conversation list's search box, the log's loading notice and the message box all drawn (the
  model, the settings and the store open behind it). Target < 0.8 s. With it, the CPU the UI
  process had used by then (less sensitive to other load than the wall time). `--paint-only`
  measures only this.
- tokens/s: the rate the UI shows in its status bar (the engine's own count, stored with the
  reply) over the rate `ask` reports, median of the runs. Target >= 97%.
- UI CPU: the share of a core the UI process itself (not the model's process) takes while the
  reply streams, from /proc/PID/stat. With `--baseline DIR` (another checkout, e.g. made with
  `git worktree add /tmp/base HEAD~3`) its UI runs too, alternated with this one, and the table
  gives this UI's CPU over the baseline's: only ratios within one run compare on a busy machine.

    .venv/bin/python -m benchmarks.tui [--runs 3] [--tokens 192] [--baseline DIR] [--paint-only]

`--headless` measures the screen alone instead (`benchmarks/tui_headless.py`: the real chat
screen through Textual's Pilot at 120x40, the tests' fake model streaming ~400 tokens of
paragraphs, code, a list and a heading at 60 tok/s; no model process), Markdown and raw text,
and the baseline's screen with `--baseline`, alternated: CPU seconds of the whole reply, medians.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

from benchmarks.common import report

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
ROOT = Path(__file__).resolve().parents[1]
CHATBOT = [sys.executable, "-m", "chatbot"]
POLL_S = 0.25  # how often the harness looks at the reply (plain sqlite3: costs next to nothing)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The chat screen's first whole frame holds all three; Textual draws one earlier in which the
# search box and the message box are still blank (they render once laid out): not counted.
PAINT_MARKERS = (b"Search conversations", "Loading the model".encode(), b"Enter sends")


class Terminal:
    """A process on a pseudo-terminal of a given size; its output is read (and kept) as it comes."""

    def __init__(self, argv: list[str], env: dict, cols: int = 120, rows: int = 40, cwd: Path = ROOT):
        self.started = time.perf_counter()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)  # `python -m` imports from the working directory first: the checkout's own
            os.execvpe(argv[0], argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = bytearray()

    def read_until(self, markers: tuple[bytes, ...], timeout: float) -> float | None:
        """Seconds from start until every one of `markers` had appeared in the output, or None."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if all(m in self.output for m in markers):
                return None  # already there before this call
            if self.pump(0.05) and all(m in self.output for m in markers):
                return time.perf_counter() - self.started
        return None

    def pump(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:
            return False
        self.output += chunk
        return bool(chunk)

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process itself (its children, the model's process, apart)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def close(self) -> None:
        try:
            self.send(b"\x11")  # ctrl+q
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:
                self.pump(0.05)
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    return
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)


def environment(work: Path, tokens: int, db_name: str, root: Path = ROOT) -> dict:
    env = dict(os.environ)
    env.update(
        CHATBOT_DB=str(work / db_name),
        CHATBOT_DATA_DIR=str(work / "data"),
        CHATBOT_TUI_CONFIG=str(work / "tui.toml"),
        CHATBOT_TEMPERATURE="0",
        CHATBOT_MAX_NEW_TOKENS=str(tokens),
        TERM="xterm-256color",
        TQDM_DISABLE="1",
        PYTHONPATH=str(root),
    )
    return env


def first_paint(work: Path, tokens: int, root: Path = ROOT) -> tuple[float | None, float | None]:
    """Wall seconds to the chat screen's first whole frame, and the UI process's CPU seconds then."""
    term = Terminal(CHATBOT, environment(work, tokens, f"paint-{root.name}.db", root), cwd=root)
    try:
        wall = term.read_until(PAINT_MARKERS, timeout=30)
        return wall, (term.cpu_seconds() if wall is not None else None)
    finally:
        term.close()


def latest_reply(db: Path) -> dict | None:
    """The last reply once finished, read with plain sqlite3: the harness must stay nearly idle
    while the UI streams (opening the Store every poll cost a fifth of a core, and on 2 cores
    that alone halved the UI's decode speed)."""
    if not db.exists():
        return None
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = connection.execute(
            "SELECT status, content, tokens_per_s FROM messages WHERE role = 'assistant' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError:  # not migrated yet
        return None
    finally:
        connection.close()
    if row is None:
        return None
    return {"status": row[0], "text": row[1], "stats": {"tokens_per_s": row[2]}}


def tui_turn(work: Path, tokens: int, run: int, root: Path = ROOT) -> dict:
    """One reply in the UI; with the share of a core its process took from the reply's row
    appearing (the question is stored as decoding starts) to the reply finishing."""
    db_name = f"tui-{run}-{root.name}.db"
    term = Terminal(CHATBOT, environment(work, tokens, db_name, root), cwd=root)
    try:
        term.read_until(PAINT_MARKERS, timeout=30)
        term.send(PROMPT.encode() + b"\r")  # sent as soon as the model is ready
        deadline = time.perf_counter() + 600
        next_poll, began = 0.0, None
        while time.perf_counter() < deadline:
            term.pump(0.05)  # drain the screen as a terminal would
            if time.perf_counter() < next_poll:
                continue
            next_poll = time.perf_counter() + POLL_S
            reply = latest_reply(work / db_name)
            if reply is None:
                continue
            if began is None:
                began = (time.perf_counter(), term.cpu_seconds())
            if reply["status"] != "streaming":
                wall, cpu = time.perf_counter() - began[0], term.cpu_seconds() - began[1]
                reply["ui_cpu"] = cpu / wall if wall > 0 else None
                return reply
        raise RuntimeError("the TUI reply did not finish")
    finally:
        term.close()


def ask_turn(work: Path, tokens: int) -> dict:
    out = subprocess.run(
        [*CHATBOT, "ask", "--json", PROMPT], env=environment(work, tokens, "ask.db"),
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    return json.loads(out.stdout)


def headless_turn(mode: str, root: Path = ROOT) -> dict:
    """One reply on the headless screen of checkout `root` (benchmarks/tui_headless.py)."""
    script = Path(__file__).with_name("tui_headless.py")
    env = {**os.environ, "PYTHONPATH": str(root), "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True, text=True, check=True, cwd=root)
    return json.loads(out.stdout.splitlines()[-1])


def headless(runs: int, baseline: Path | None) -> None:
    cpu: dict[str, list[float]] = {"markdown": [], "raw": [], "none": [], "baseline": []}
    for run in range(runs):
        for mode in ("markdown", "raw", "none"):
            cpu[mode].append(headless_turn(mode)["cpu_s"])
        if baseline is not None:
            cpu["baseline"].append(headless_turn("markdown", baseline.resolve())["cpu_s"])
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in cpu.items() if v), file=sys.stderr, flush=True)
    median = {k: statistics.median(v) for k, v in cpu.items() if v}
    rows = [(f"UI CPU s, {k} (median)", f"{v:.2f}", "") for k, v in median.items()]
    if "baseline" in median:
        for mode in ("markdown", "raw"):
            ratio = median[mode] / median["baseline"]
            rows.append((f"{mode} / baseline", f"{ratio:.2f}", "target <= 0.5: " + ("ok" if ratio <= 0.5 else "MISSED")))
    report("TUI screen alone (headless, fake model)", rows, {"runs": runs, "cpu_s": cpu, "baseline": str(baseline)})


def paint_rows(paints: list, paint_cpu: list) -> tuple[float | None, list[tuple[str, str, str]]]:
    shown = [p for p in paints if p is not None]
    paint = statistics.median(shown) if shown else None
    cpu = [c for c in paint_cpu if c is not None]
    return paint, [
        ("first paint (s, median)", "n/a" if paint is None else f"{paint:.2f}",
         "target < 0.8 s: " + ("ok" if paint is not None and paint < 0.8 else "MISSED")),
        ("UI CPU to the first paint (s, median)", f"{statistics.median(cpu):.2f}" if cpu else "n/a", ""),
    ]


def paint_only(work: Path, runs: int, tokens: int, baseline: Path | None) -> None:
    """`--paint-only`: the first paint alone, alternated with the baseline's when given."""
    roots = {"this": ROOT} | ({"baseline": baseline.resolve()} if baseline is not None else {})
    walls: dict[str, list] = {name: [] for name in roots}
    cpus: dict[str, list] = {name: [] for name in roots}
    for run in range(runs):
        for name, root in roots.items():
            wall, cpu = first_paint(work, tokens, root)
            walls[name].append(wall)
            cpus[name].append(cpu)
        print(f"run {run + 1}: " + ", ".join(f"{n} {walls[n][-1]} s (CPU {cpus[n][-1]} s)" for n in roots), file=sys.stderr, flush=True)
    _, rows = paint_rows(walls["this"], cpus["this"])
    payload = {"runs": runs, "first_paint_s": walls["this"], "first_paint_cpu_s": cpus["this"]}
    if baseline is not None:
        _, base_rows = paint_rows(walls["baseline"], cpus["baseline"])
        rows += [(f"baseline: {what}", figure, "") for what, figure, _ in base_rows]
        payload.update(baseline=str(baseline), baseline_first_paint_s=walls["baseline"], baseline_first_paint_cpu_s=cpus["baseline"])
    report("TUI first paint", rows, payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=192)
    parser.add_argument("--baseline", type=Path, help="another checkout whose UI runs alternated with this one")
    parser.add_argument("--headless", action="store_true", help="the screen alone, through the fake model")
    parser.add_argument("--paint-only", action="store_true", help="only the first paint, --runs times")
    args = parser.parse_args()
    if args.headless:
        headless(args.runs, args.baseline)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.paint_only:
            paint_only(work, args.runs, args.tokens, args.baseline)
            return
        measured = [first_paint(work, args.tokens) for _ in range(args.runs)]
        paints, paint_cpu = [w for w, _ in measured], [c for _, c in measured]
        print(f"first paint: {paints}, CPU {paint_cpu}", file=sys.stderr, flush=True)
        ask_rates, tui_rates, texts_match, cpu, base_cpu, base_rates = [], [], [], [], [], []
        for run in range(args.runs):
            asked = ask_turn(work, args.tokens)
            shown = tui_turn(work, args.tokens, run)
            ask_rates.append(asked["stats"]["tokens_per_s"])
            tui_rates.append(shown["stats"]["tokens_per_s"])
            texts_match.append(asked["reply"] == shown["text"])
            cpu.append(shown["ui_cpu"])
            line = f"run {run + 1}: ask {ask_rates[-1]:.1f} tok/s, UI {tui_rates[-1]:.1f} tok/s, UI CPU {cpu[-1]:.0%}"
            if args.baseline is not None:
                base = tui_turn(work, args.tokens, run, args.baseline.resolve())
                base_cpu.append(base["ui_cpu"])
                base_rates.append(base["stats"]["tokens_per_s"])
                line += f"; baseline UI {base_rates[-1]:.1f} tok/s, CPU {base_cpu[-1]:.0%}"
            print(line, file=sys.stderr, flush=True)  # what a cut-short run still leaves
    paint, rows = paint_rows(paints, paint_cpu)
    ask_rate, tui_rate = statistics.median(ask_rates), statistics.median(tui_rates)
    ratio = tui_rate / ask_rate if ask_rate else 0.0
    ui_cpu = statistics.median(c for c in cpu if c is not None)
    rows += [
        ("chatbot ask tok/s (median)", f"{ask_rate:.1f}", ""),
        ("TUI tok/s shown (median)", f"{tui_rate:.1f}", ""),
        ("TUI / ask", f"{ratio:.0%}", "target >= 97%: " + ("ok" if ratio >= 0.97 else "MISSED")),
        ("UI CPU while streaming (core)", f"{ui_cpu:.0%}", ""),
        ("same greedy text", str(all(texts_match)), ""),
    ]
    payload = {
        "prompt": PROMPT, "new_tokens": args.tokens, "runs": args.runs,
        "first_paint_s": paints, "first_paint_cpu_s": paint_cpu, "ask_tokens_per_s": ask_rates, "tui_tokens_per_s": tui_rates,
        "ratio": ratio, "same_text": texts_match, "ui_cpu": cpu,
    }
    if base_cpu:
        base = statistics.median(base_cpu)
        rows += [
            ("baseline UI CPU (core)", f"{base:.0%}", ""),
            ("UI CPU / baseline's", f"{ui_cpu / base:.2f}", "target <= 0.5: " + ("ok" if ui_cpu <= base / 2 else "MISSED")),
            ("baseline TUI tok/s (median)", f"{statistics.median(base_rates):.1f}", ""),
        ]
        payload.update(baseline=str(args.baseline), baseline_ui_cpu=base_cpu, baseline_tokens_per_s=base_rates)
    report("TUI vs chatbot ask", rows, payload)


if __name__ == "__main__":
    main()
