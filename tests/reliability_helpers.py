"""Shared by the reliability and hostile-input tests: a real ChatSession over a fast fake engine,
SQLite faults injected the way SQLite reports them, and a whole-database snapshot to compare."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from tui_fakes import FakeEngine, FakeRuntime

from chatbot.config import Settings
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.schema import Persona

DISK_FULL = "database or disk is full"
READ_ONLY = "attempt to write a readonly database"
ASSISTANT = InstalledPersona(Persona(name="assistant", display_name="Assistant"), "shipped", Path("."))


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", db=str(tmp_path / "chat.db"), temperature=0
    )


def session_for(store, settings: Settings, engine: FakeEngine | None = None, conversation_id=None):
    from chatbot.session import ChatSession

    return ChatSession(FakeRuntime(engine), settings, ASSISTANT, store, conversation_id)


def sqlite_error(message: str) -> OperationalError:
    """What SQLAlchemy raises when SQLite refuses a write."""
    return OperationalError("UPDATE messages ...", {}, sqlite3.OperationalError(message))


def fail_after(monkeypatch, function: str, message: str, calls_ok: int = 0) -> None:
    """Make `repository.<function>` fail like SQLite does, after `calls_ok` successful calls."""
    from chatbot.store import repository

    real = getattr(repository, function)
    count = {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls_ok:
            raise sqlite_error(message)
        return real(*args, **kwargs)

    monkeypatch.setattr(repository, function, flaky)


def on_every_connection(store, *pragmas: str) -> None:
    """Run pragmas on every new connection of the store (and drop the pooled ones)."""

    def apply(dbapi_conn, record) -> None:
        for pragma in pragmas:
            dbapi_conn.execute(pragma)

    event.listen(store._engine, "connect", apply)
    store._engine.dispose()


def pragma(path: Path, name: str):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def page_count(path: Path) -> int:
    return pragma(path, "page_count")


def integrity(path: Path) -> str:
    return pragma(path, "integrity_check")


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every ordinary table, sorted: for 'nothing already stored was changed'."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name NOT LIKE 'messages_fts%'"
            )
        ]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def forkserver():
    """A multiprocessing context whose children fork from a server that has already imported the
    store, the session and torch: a child starts in milliseconds instead of seconds."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    # Installed modules only: the server does not see pytest's sys.path (the tests folder), and
    # skips a module it cannot import without a word. pytest: the child re-imports `__main__`.
    ctx.set_forkserver_preload(["pytest", "chatbot.session", "chatbot.store.store", "chatbot.tui.app"])
    return ctx


def report(path: str, *fields: object) -> None:
    """Append one line to a report file in a single write (a SIGKILL leaves whole lines only, or
    a last line without its newline)."""
    import os

    line = ("\t".join(str(f).replace("\t", " ").replace("\n", " ") for f in fields) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_reports(path) -> list[list[str]]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [line.split("\t") for line in text.split("\n")[:-1]]  # a torn last line is dropped


def run_cli(args, monkeypatch, capsys, engine: FakeEngine | None = None, stdin: bytes | None = None):
    """`chatbot ARGS` in this process over a fake model: (exit code, stdout, stderr, model loaded)."""
    import io

    from chatbot.cli import main
    from chatbot.cli.state import AppState

    loads = []
    runtime = FakeRuntime(engine or FakeEngine(reply_for=lambda p: "ok"))
    monkeypatch.setattr(AppState, "runtime", lambda self: loads.append(1) or runtime)
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err, bool(loads)


def run_together(target, args_list: list[tuple], timeout_s: float = 300) -> tuple[list[str], list[int]]:
    """Start one forkserver process per args (each called as `target(*args, start, errors)`), let
    them go at once, wait for all: (errors they put, exit codes)."""
    ctx = forkserver()
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, errors)) for args in args_list]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout_s)
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found, [p.exitcode for p in procs]
