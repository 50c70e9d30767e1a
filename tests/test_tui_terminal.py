"""The real `chatbot` TUI in a pseudo-terminal, driven by bytes as a person's terminal sends them
(Pilot bypasses the terminal driver, so it cannot see what the driver does with raw input)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX pseudo-terminals")

QUIT = b"\x11"  # ctrl+q


class Terminal:
    """A child process on a 100x30 pseudo-terminal; everything it draws is kept in `screen`."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.screen = b""

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    return
                if not chunk:
                    return
                self.screen += chunk

    def wait_for(self, text: bytes, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while text not in self.screen and self.process.poll() is None and time.monotonic() < deadline:
            self.read_for(0.2)
        return text in self.screen

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self, seconds: float) -> int | None:
        deadline = time.monotonic() + seconds
        while self.process.poll() is None and time.monotonic() < deadline:
            self.read_for(0.2)
        self.read_for(0.2)
        if self.process.poll() is None:
            self.process.kill()
        os.close(self.master)
        return self.process.wait()


@pytest.fixture
def start(tmp_path, model_cache_dir):
    """Starts `chatbot ARGS...` on a pseudo-terminal, with its own data dir and database."""
    started = []
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "CHATBOT_DATA_DIR": str(tmp_path / "data"),
        "CHATBOT_CACHE_DIR": str(model_cache_dir),
        "CHATBOT_DB": str(tmp_path / "chat.db"),
    }

    def start(*args: str) -> Terminal:
        started.append(Terminal([sys.executable, "-m", "chatbot", *args], env))
        return started[-1]

    yield start
    for terminal in started:
        if terminal.process.poll() is None:
            terminal.process.kill()
            terminal.process.wait()


@pytest.fixture
def tui(start):
    return start()


def test_bytes_that_are_not_utf8_do_not_kill_the_ui(tui):
    assert tui.wait_for(b"Enter sends", 60), tui.screen[-2000:]
    tui.read_for(1.0)
    tui.send(b"caf\xe9 \xff\xfe ok")  # Latin-1 "café", then bytes no UTF-8 text has
    tui.read_for(1.0)
    assert tui.process.poll() is None, tui.screen.decode("utf-8", "replace")[-2000:]
    assert "caf\ufffd \ufffd\ufffd ok".encode() in tui.screen  # shown as a terminal shows them
    tui.send(QUIT)
    code = tui.close(30)
    shown = tui.screen.decode("utf-8", "replace")
    assert "Traceback" not in shown and "UnicodeDecodeError" not in shown, shown[-2000:]
    assert code == 0


def test_resume_alone_opens_the_last_conversation(start, tmp_path):
    from chatbot.personas.registry import find
    from chatbot.store import Store

    with Store.open(f"sqlite:///{tmp_path / 'chat.db'}") as store:
        persona = find("assistant", tmp_path / "data").persona
        version = store.persona_version(persona.name, persona.kind, persona.definition())
        for which in ("older", "latest"):
            cid = store.new_conversation(None, "m")
            asked = store.add_user_message(cid, f"the {which} question", None)
            store.finish_reply(store.start_reply(cid, asked, version, {}, None, "m"), f"{which}-reply", "complete", {})
    tui = start("--resume", "--persona", "pirate")  # no ID, and another option after it
    # (The list of conversations shows both questions; only the open one's reply is drawn.)
    assert tui.wait_for(b"latest-reply", 60), tui.screen.decode("utf-8", "replace")[-2000:]
    assert tui.wait_for("persona: Captain Redbeard".encode(), 30)  # --persona after it: a switch
    assert b"older-reply" not in tui.screen
    tui.send(QUIT)
    assert tui.close(30) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--resume"], ["--resume", "last"]),
        (["--resume", "7"], ["--resume", "7"]),
        (["--resume", "--persona", "pirate"], ["--resume", "last", "--persona", "pirate"]),
        (["--db", "x.db", "--resume"], ["--db", "x.db", "--resume", "last"]),
        (["--db", "--resume"], ["--db", "--resume"]),  # a value of --db, left to it
        (["ask", "--resume"], ["ask", "--resume"]),  # a command's own arguments are left alone
    ],
)
def test_resume_without_a_value_means_last(args, expected):
    from chatbot.cli.app import resume_alone_means_last

    assert resume_alone_means_last(args) == expected


@pytest.mark.parametrize(
    ("args", "tui"),
    [
        ([], True),
        (["--db", "x.db", "--persona", "pirate", "--resume"], True),
        (["--resume", "7", "--model", "m"], True),
        (["--help"], False),
        (["--resume", "--help"], False),
        (["history", "list"], False),
        (["--db", "x.db", "ask", "hi"], False),
    ],
)
def test_only_root_options_open_the_tui(args, tui):
    from chatbot.cli.app import opens_the_tui

    assert opens_the_tui(args) is tui


def test_the_tui_starts_without_the_store_imported_and_help_still_lists_every_command():
    """Before the first paint: SQLAlchemy (the store, opened after the first frame) costs ~0.45 s
    of CPU; `chatbot --help` still registers every command group."""
    code = (
        "import sys\n"
        "import chatbot.cli.chat as chat\n"
        "chat.open_default_chat = lambda *a, **k: print('sqlalchemy' in sys.modules, 'chatbot.cli.history' in sys.modules)\n"
        "from chatbot.cli.app import main\n"
        "main([])\n"
    )
    env = {**os.environ, "CHATBOT_DB": "sqlite:///unused.db"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "False"]
    shown = subprocess.run([sys.executable, "-m", "chatbot", "--help"], capture_output=True, text=True, check=True, env=env).stdout
    assert "history" in shown and "ask" in shown


def test_the_root_options_that_take_values_are_all_known():
    """The `--resume` rewrite skips the values of the other root options: a new one must be listed."""
    import typer

    from chatbot.cli.app import ROOT_VALUE_OPTIONS, app

    taking_values = {opt for p in typer.main.get_command(app).params if not getattr(p, "is_flag", False) for opt in p.opts}
    assert taking_values - {"--resume"} == set(ROOT_VALUE_OPTIONS)


def _stored_messages(db_path) -> list[tuple[str, str]]:
    import sqlite3

    if not db_path.exists():
        return []
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        try:
            return db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


def test_a_bracketed_paste_is_stored_exactly_in_order(tui, tmp_path):
    """Textual's parser read an ESC inside a paste as a key sequence: `xyz ESC[31mQ` became the
    keys `^[31mQ` then `xyz`, and BEL, ^A and Tab were lost. Line breaks arrive as CR (terminals
    send a pasted newline so) and are stored as LF."""
    pasted = "xyz\x1b[31mQ a\x07b\x01c\td\x00e é 👍🏽 \x9b1m\rsecond line"
    assert tui.wait_for(b"Enter sends", 60), tui.screen[-2000:]
    tui.read_for(1.0)
    tui.send(b"\x1b[200~" + pasted.encode() + b"\x1b[201~")
    tui.read_for(0.5)
    tui.send(b"\r")  # Enter: send
    deadline = time.monotonic() + 120
    while not _stored_messages(tmp_path / "chat.db") and time.monotonic() < deadline:
        tui.read_for(0.5)
    assert _stored_messages(tmp_path / "chat.db")[:1] == [("user", pasted.replace("\r", "\n"))]
    assert tui.wait_for("xyz␛[31mQ a␇b␁c".encode(), 30)  # shown in the log as typed, in order
    tui.send(QUIT)
    tui.close(30)
