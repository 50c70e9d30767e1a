"""Where the database and the data dir go, through the real entry point: a command that only reads
never creates a database; a place a database cannot be is one line; SQLite URLs mean what they
say (`?mode=ro` is read-only); the data dir and its files are private whatever the umask."""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from chatbot.cli import main
from chatbot.store import Store, exchange
from test_store_support import sample_conversation

READ_COMMANDS = [
    ["history", "list"],
    ["history", "show", "1"],
    ["history", "show", "last"],
    ["history", "search", "word"],
    ["history", "export", "1"],
    ["history", "replay", "1", "--instant"],
    ["db", "upgrade"],
    # commands that change a conversation: with no database there is none to change
    ["history", "rename", "1", "x"],
    ["history", "delete", "1", "--yes"],
]


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> bool:
    return err.startswith("chatbot: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A data dir that does not exist yet; no CHATBOT_DB."""
    monkeypatch.delenv("CHATBOT_DB", raising=False)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture
def export_file(tmp_path) -> Path:
    """A valid export to import (the one write command that needs no model)."""
    with Store.open(str(tmp_path / "source.db")) as store:
        doc = store.export_conversation(sample_conversation(store)["conversation"])
    path = tmp_path / "export.json"
    path.write_text(exchange.to_json(doc))
    return path


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# --- reading never creates -------------------------------------------------------------------------


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("where", ["missing/dir/x.db", "x.db"])
def test_a_read_command_never_creates_a_database(env, command, where):
    before = tree(env)
    code, out, err = run("--db", str(env / where), *command)
    assert (code, out) == (1, "")
    assert err == f"chatbot: error: no database at {env / where}\n"
    assert tree(env) == before  # no folder, no file


def test_db_current_says_there_is_none_and_makes_none(env):
    code, out, _ = run("--db", str(env / "missing" / "x.db"), "db", "current")
    assert code == 0 and "no database yet" in out
    assert not (env / "missing").exists()


def test_the_default_database_not_made_yet_reads_as_an_empty_history(env):
    assert run("history", "list") == (0, "", "no conversations yet\n")
    assert run("history", "show", "last") == (1, "", "chatbot: error: there are no conversations yet\n")
    assert not (env / "data").exists()


def test_a_write_creates_the_default_data_dir(env, export_file):
    code, out, err = run("history", "import", str(export_file))
    assert code == 0, err
    assert (env / "data" / "chatbot.db").is_file()


# --- places a database cannot be -------------------------------------------------------------------


def test_a_new_database_needs_its_folder(env, export_file):
    code, _, err = run("--db", str(env / "missing" / "x.db"), "history", "import", str(export_file))
    assert code == 1 and err == f"chatbot: error: cannot create {env / 'missing' / 'x.db'}: the folder {env / 'missing'} does not exist\n"
    assert not (env / "missing").exists()


@pytest.mark.parametrize(
    "db, expected",
    [
        ("/proc/nonexistent-dir/y.db", "cannot create /proc/nonexistent-dir/y.db: the folder /proc/nonexistent-dir does not exist"),
        ("{tmp}/FILE/x.db", "cannot create {tmp}/FILE/x.db: {tmp}/FILE is not a folder"),
        ("{tmp}/FILE", "{tmp}/FILE is not a SQLite database or is corrupt"),
        ("/proc/x.db", "cannot create /proc/x.db: "),
    ],
)
def test_impossible_database_places_are_one_line(env, export_file, db, expected):
    (env / "FILE").write_text("a regular file\n")
    for command in (["history", "import", str(export_file)], ["history", "list"]):
        code, _, err = run("--db", db.format(tmp=env), *command)
        assert code == 1 and one_error_line(err), err
        if command[1] == "import":
            assert expected.format(tmp=env) in err, err
    assert (env / "FILE").read_text() == "a regular file\n"


@pytest.mark.parametrize(
    "data_dir, why",
    [("/proc/nonexistent/data", "No such file or directory"), ("{tmp}/FILE/data", "{tmp}/FILE is not a folder")],
)
def test_impossible_data_dirs_are_one_line(env, monkeypatch, export_file, data_dir, why):
    (env / "FILE").write_text("a regular file\n")
    data_dir = data_dir.format(tmp=env)
    monkeypatch.setenv("CHATBOT_DATA_DIR", data_dir)
    for command in (["history", "import", str(export_file)], ["persona", "new", "mine", "--control-code", "x"]):
        code, _, err = run(*command)
        assert code == 1 and one_error_line(err), (command, err)
        # (the persona's own folder, inside the data dir, is named)
        assert err.startswith(f"chatbot: error: cannot create the folder {data_dir}") and err.endswith(f": {why.format(tmp=env)}\n"), err


# --- SQLite URLs -------------------------------------------------------------------------------


@pytest.fixture
def stored(env) -> Path:
    path = env / "chat.db"
    with Store.open(str(path)) as store:
        c = store.new_conversation("kept", "m")
        store.add_user_message(c, "hello", None)
    return path


@pytest.mark.parametrize(
    "url",
    ["sqlite:///file:{path}?mode=ro&uri=true", "sqlite:///{path}?mode=ro", "sqlite:///{path}?immutable=1",
     "sqlite:///file:{path}?immutable=1&uri=true"],
)
def test_a_read_only_url_reads_and_refuses_writes(stored, url):
    db = url.format(path=stored)
    before = stored.read_bytes()
    code, out, err = run("--db", db, "history", "list")
    assert code == 0 and "kept" in out and err == "", err  # no SQLAlchemy warning either
    assert run("--db", db, "history", "search", "hello")[1].count("hello") == 1
    code, _, err = run("--db", db, "history", "rename", "1", "changed")
    assert code == 1 and "is read-only" in err and one_error_line(err), err
    assert stored.read_bytes() == before
    assert "kept" in run("--db", str(stored), "history", "list")[1]


@pytest.mark.parametrize(
    "url, expected, code",
    [
        ("sqlite:///file:{tmp}/nope.db?mode=ro&uri=true", "no database at {tmp}/nope.db", 1),
        ("sqlite:///{tmp}/nope.db?mode=ro", "no database at {tmp}/nope.db", 1),
        ("sqlite:///{tmp}/nope.db?mode=rw", "no database at {tmp}/nope.db", 1),
        ("sqlite:///{tmp}/chat.db?timeout=3", "unsupported parameter timeout=3", 2),
        ("sqlite:///{tmp}/chat.db?mode=bogus", "unsupported parameter mode=bogus", 2),
        ("sqlite:///file:?mode=ro&uri=true", "no file named", 2),
    ],
)
def test_sqlite_urls_that_cannot_be_honoured_are_one_line(env, export_file, url, expected, code):
    for command in (["history", "list"], ["history", "import", str(export_file)]):
        got, out, err = run("--db", url.format(tmp=env), *command)
        assert got == code and out == "" and expected.format(tmp=env) in err and one_error_line(err), err
    assert not (env / "nope.db").exists()


def test_an_in_memory_url_still_works(env, export_file):
    assert run("--db", "sqlite:///file:memdb?mode=memory&uri=true", "history", "list") == (0, "", "no conversations yet\n")
    assert run("--db", "sqlite://", "history", "import", str(export_file))[0] == 0


# --- private whatever the umask ----------------------------------------------------------------


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_is_private_whatever_the_umask(env, monkeypatch, export_file, umask_000):
    data = env / "new" / "deeper" / "data"
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(data))
    code, _, err = run("persona", "new", "mine", "--control-code", "x")
    assert code == 0, err
    for folder in (env / "new", env / "new" / "deeper", data, data / "personas", data / "personas" / "mine"):
        assert mode(folder) == 0o700, folder
    assert mode(data / "personas" / "mine" / "persona.toml") == 0o600
    assert run("history", "import", str(export_file))[0] == 0
    assert mode(data / "chatbot.db") == 0o600
    assert run("db", "backup", "-o", str(data / "copy.db"))[0] == 0
    assert mode(data / "copy.db") == 0o600
