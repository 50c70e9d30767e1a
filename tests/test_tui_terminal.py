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
    """Starts `chatbot ARGS...` on a pseudo-terminal, with its own data dir and database
    (`start(..., python_code=CODE)`: `python -c CODE ARGS...` instead)."""
    started = []
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "CHATBOT_DATA_DIR": str(tmp_path / "data"),
        "CHATBOT_CACHE_DIR": str(model_cache_dir),
        "CHATBOT_DB": str(tmp_path / "chat.db"),
    }

    def start(*args: str, python_code: str | None = None) -> Terminal:
        run = ["-c", python_code] if python_code is not None else ["-m", "chatbot"]
        started.append(Terminal([sys.executable, *run, *args], env))
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


HEAVY = ("pydantic", "typer", "sqlalchemy", "alembic", "torch", "transformers", "gguf")


def test_the_first_frame_waits_for_no_settings_store_or_model_and_the_options_still_apply(start, tmp_path):
    """The real entry point on a terminal: when the backend starts (after the chat screen's
    first whole frame) none of the heavy modules has been imported; then `--persona` applies
    (the status bar names the persona)."""
    spy = (
        "import sys\n"
        "import chatbot.tui.screen as screen\n"
        "started = screen.ChatScreen._start_backend\n"
        "def spy(self):\n"
        "    if not self._backend_started:  # the first call (the next ones do nothing)\n"
        f"        open({str(tmp_path / 'imported')!r}, 'w').write(' '.join(m for m in {HEAVY!r} if m in sys.modules) + ' .')\n"
        "    started(self)\n"
        "screen.ChatScreen._start_backend = spy\n"
        "from chatbot.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    tui = start("--persona", "pirate", python_code=spy)
    assert tui.wait_for("Captain Redbeard".encode(), 60), tui.screen.decode("utf-8", "replace")[-2000:]
    assert (tmp_path / "imported").read_text() == " ."  # none of them
    tui.send(QUIT)
    assert tui.close(30) == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--engine", "bogus"], 2, "chatbot: error: invalid setting: engine: "),
        (["--persona", "nobody"], 1, "chatbot: error: no persona named 'nobody'"),
    ],
)
def test_what_the_first_frame_no_longer_waits_for_still_fails_in_one_line(start, args, code, message):
    """Read behind the first frame, an invalid setting or an unknown persona still ends the UI
    with the one line (and exit status) it had before the screen opened."""
    tui = start(*args)
    assert tui.close(60) == code
    shown = tui.screen.decode("utf-8", "replace")
    assert message in shown and "Traceback" not in shown, shown[-2000:]
    assert len([line for line in shown.splitlines() if "chatbot: error:" in line]) == 1


@pytest.mark.parametrize(
    ("args", "taken"),
    [
        ([], True), (["--resume"], True), (["--resume", "7"], True), (["--resume=7"], True),
        (["--resume", "--persona", "pirate"], True), (["--db", "x.db", "--resume"], True),
        (["--db=x.db", "--model", "m.gguf", "--engine", "fast"], True), (["--db="], True),
        (["--base-url", "http://h:1/v1", "--remote-model", "m", "--persona=bard"], True),
        # left to typer, which parses (or refuses) them as before
        (["--db", "--resume"], False), (["--db"], False), (["--help"], False), (["--db", "a", "--db", "b"], False),
        (["ask", "hi"], False), (["-x"], False), (["--resume", "7", "extra"], False), (["--", "--db", "x"], False),
    ],
)
def test_the_quick_start_reads_root_options_as_typer_does(args, taken):
    """`cli/tui_start.py` reads the root options without typer: what it takes, typer's parse
    (after cli/app.py's rewrites) gives the same values."""
    import typer

    from chatbot.cli.app import app, resume_alone_means_last, root_options_first
    from chatbot.cli.tui_start import tui_start

    quick = tui_start(args)
    assert (quick is not None) is taken
    if quick is None:
        return
    ctx = typer.main.get_command(app).make_context("chatbot", resume_alone_means_last(root_options_first(args)))
    params = {k: v for k, v in ctx.params.items() if v is not None}
    wanted = {**quick.overrides, "resume": quick.resume, "persona": quick.persona}
    assert params == {k: v for k, v in wanted.items() if v is not None}


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
