"""The TUI against `chatbot ask`, in one run: first paint, and tokens/s while it streams.

Both run as real processes: the TUI in a pseudo-terminal (its output drained as a terminal
would), `chatbot ask --json` in a pipe; same prompt, greedy, same number of new tokens, same
database settings, turns alternated so background load hits both alike.

- first paint: from starting `chatbot` to the first frame holding the chat screen (the model
  loads behind it). Target < 1.5 s.
- tokens/s: the rate the UI shows in its status bar (the engine's own count, stored with the
  reply) over the rate `ask` reports, median of the runs. Target >= 90%.

    .venv/bin/python -m benchmarks.tui [--runs 3] [--tokens 64]
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
POLL_S = 1.0  # how often the harness looks for the finished reply
PAINT_MARKER = b"Search conversations"  # drawn in the first frame of the chat screen


class Terminal:
    """A process on a pseudo-terminal of a given size; its output is read (and kept) as it comes."""

    def __init__(self, argv: list[str], env: dict, cols: int = 120, rows: int = 36):
        self.started = time.perf_counter()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(ROOT)
            os.execvpe(argv[0], argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = bytearray()

    def read_until(self, marker: bytes, timeout: float) -> float | None:
        """Seconds from start until `marker` appeared in the output, or None."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if marker in self.output:
                return None  # already there before this call
            if self.pump(0.05) and marker in self.output:
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


def environment(work: Path, tokens: int, db_name: str) -> dict:
    env = dict(os.environ)
    env.update(
        CHATBOT_DB=str(work / db_name),
        CHATBOT_DATA_DIR=str(work / "data"),
        CHATBOT_TUI_CONFIG=str(work / "tui.toml"),
        CHATBOT_TEMPERATURE="0",
        CHATBOT_MAX_NEW_TOKENS=str(tokens),
        TERM="xterm-256color",
        TQDM_DISABLE="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def first_paint(work: Path, tokens: int) -> float | None:
    term = Terminal(CHATBOT, environment(work, tokens, "paint.db"))
    try:
        return term.read_until(PAINT_MARKER, timeout=30)
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
    if row is None or row[0] == "streaming":
        return None
    return {"status": row[0], "text": row[1], "stats": {"tokens_per_s": row[2]}}


def tui_turn(work: Path, tokens: int, run: int) -> dict:
    db_name = f"tui-{run}.db"
    term = Terminal(CHATBOT, environment(work, tokens, db_name))
    try:
        term.read_until(PAINT_MARKER, timeout=30)
        term.send(PROMPT.encode() + b"\r")  # sent as soon as the model is ready
        deadline = time.perf_counter() + 600
        next_poll = 0.0
        while time.perf_counter() < deadline:
            term.pump(0.2)  # drain the screen as a terminal would
            if time.perf_counter() < next_poll:
                continue
            next_poll = time.perf_counter() + POLL_S
            reply = latest_reply(work / db_name)
            if reply is not None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paints = [first_paint(work, args.tokens) for _ in range(args.runs)]
        ask_rates, tui_rates, texts_match = [], [], []
        for run in range(args.runs):
            asked = ask_turn(work, args.tokens)
            shown = tui_turn(work, args.tokens, run)
            ask_rates.append(asked["stats"]["tokens_per_s"])
            tui_rates.append(shown["stats"]["tokens_per_s"])
            texts_match.append(asked["reply"] == shown["text"])
    paint = statistics.median([p for p in paints if p is not None]) if any(paints) else None
    ask_rate, tui_rate = statistics.median(ask_rates), statistics.median(tui_rates)
    ratio = tui_rate / ask_rate if ask_rate else 0.0
    rows = [
        ("first paint (s, median)", "n/a" if paint is None else f"{paint:.2f}",
         "target < 1.5 s: " + ("ok" if paint is not None and paint < 1.5 else "MISSED")),
        ("chatbot ask tok/s (median)", f"{ask_rate:.1f}", ""),
        ("TUI tok/s shown (median)", f"{tui_rate:.1f}", ""),
        ("TUI / ask", f"{ratio:.0%}", "target >= 90%: " + ("ok" if ratio >= 0.9 else "MISSED")),
        ("same greedy text", str(all(texts_match)), ""),
    ]
    report("TUI vs chatbot ask", rows, {
        "prompt": PROMPT, "new_tokens": args.tokens, "runs": args.runs,
        "first_paint_s": paints, "ask_tokens_per_s": ask_rates, "tui_tokens_per_s": tui_rates,
        "ratio": ratio, "same_text": texts_match,
    })


if __name__ == "__main__":
    main()
