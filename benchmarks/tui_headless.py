"""One streamed reply in the real chat screen, headless (Textual's Pilot, 120x40), through the
tests' fake model: the UI's own CPU seconds with no model process beside it, so that only the
screen's cost is measured. Run with PYTHONPATH set to the checkout to measure (its tests/ folder
gives the fake model): `benchmarks.tui --headless` runs it on this checkout and a baseline.

    PYTHONPATH=. .venv/bin/python benchmarks/tui_headless.py markdown|raw|none [--tokens 400] [--rate 60] [--profile FILE]

`none` streams without showing anything: the floor (the fake model's thread, timers, the store).
Prints one JSON line: mode, cpu_s, wall_s, tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path

PARAGRAPH = ("The lighthouse keeper climbed the **stairs** every night, counting each `step` as he went, "
             "and thinking about the ships that passed far out at sea. ")
BLOCKS = [PARAGRAPH * 3 + "\n\n", "```python\ndef count(steps):\n    total = 0\n    for s in steps:\n"
          "        total += s\n    return total\n```\n\n", "- first item of the list with some words\n"
          "- second item, a bit longer than the first one\n\n", "## A heading\n\n", PARAGRAPH * 2 + "\n\n"]


def reply_text(tokens: int) -> str:
    """Paragraphs, code, a list and a heading in turn, until `tokens` words (the fake model's tokens)."""
    text, i = "", 0
    while len(text.split()) < tokens:
        text += BLOCKS[i % len(BLOCKS)]
        i += 1
    return text


async def stream(mode: str, tokens: int, rate: float, profile: Path | None = None) -> dict:
    root = Path(os.environ.get("PYTHONPATH", ".").split(os.pathsep)[0]).resolve()
    sys.path.insert(0, str(root / "tests"))
    from tui_fakes import FakeEngine, idle, make_app, wait_for

    from chatbot.tui.preferences import Preferences

    text = reply_text(tokens)
    work = Path(tempfile.mkdtemp())
    engine = FakeEngine(reply_for=lambda prompt: text, delay_s=1 / rate)
    app = make_app(work, engine, prefs=Preferences(work / "tui.toml"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="the fake model")
        screen = app.get_screen("chat")
        if mode == "raw":
            await pilot.press("f7")
            await pilot.pause(0.2)
        if mode == "none":
            from chatbot.tui.widgets import chat_log

            async def show_nothing(self, grow=False):
                pass

            chat_log.MessageView._show_body = show_nothing
        screen.composer.text = "tell me a story"
        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        await pilot.press("enter")
        # Plain sleeps: Pilot's own pauses wait for the screen, a cost of their own.
        while not (idle(app) and len(screen.log_view.messages) == 2):
            await asyncio.sleep(0.5)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
    return {"mode": mode, "cpu_s": round(cpu, 3), "wall_s": round(wall, 2), "tokens": len(text.split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["markdown", "raw", "none"])
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--rate", type=float, default=60.0, help="the fake model's tokens a second")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the streaming (only) here")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(stream(args.mode, args.tokens, args.rate, args.profile))))


if __name__ == "__main__":
    main()
