"""A database this user cannot write (a 0444 file, a 0555 folder) can still be read, listed,
searched, exported and backed up; a write is one line; the files are not touched.

The suite runs as root here, and root ignores file permissions, so the CLI runs in a subprocess
without that power: as `nobody` where that user can run this Python, else as root without the
capabilities that let it ignore permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,
dropped from the bounding set before exec). A non-root run needs neither.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3
NOBODY = 65534


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _without_file_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _obeys_permissions(preexec, probe: Path) -> bool:
    """Whether a child started so runs this Python and is refused a write to a 0555 folder."""
    probe.mkdir(mode=0o755)
    probe.chmod(0o555)
    try:
        done = subprocess.run(
            [sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"], preexec_fn=preexec, capture_output=True, timeout=60
        )
        return b"PermissionError" in done.stderr
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)


@pytest.fixture(scope="module")
def unprivileged(tmp_path_factory):
    """(preexec_fn for the CLI's subprocess, a folder it can reach, how it is unprivileged)."""
    if os.geteuid() != 0:
        return None, tmp_path_factory.mktemp("ro"), "a non-root user"
    public = Path(__import__("tempfile").mkdtemp(prefix="chatbot-ro-"))  # /tmp/pytest-of-root is 0700
    public.chmod(0o755)
    if _obeys_permissions(_as_nobody, public / "probe"):
        return _as_nobody, public, "nobody"
    if _obeys_permissions(_without_file_capabilities, public / "probe"):
        return _without_file_capabilities, public, "root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH/CAP_FOWNER"
    pytest.skip("cannot run a process that obeys file permissions here: `nobody` cannot run this Python, "
                "and the capabilities that let root ignore them cannot be dropped")


@pytest.fixture
def place(unprivileged, request):
    preexec, base, who = unprivileged
    folder = base / request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
    folder.mkdir(mode=0o755)
    yield folder, preexec, who
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(folder)


def cli(place, *args: str) -> tuple[int, str, str]:
    folder, preexec, _ = place
    env = {**os.environ, "CHATBOT_DATA_DIR": str(folder / "data"), "HOME": str(folder)}
    env.pop("CHATBOT_DB", None)
    done = subprocess.run(
        [sys.executable, "-m", "chatbot", *args], env=env, preexec_fn=preexec, capture_output=True, text=True,
        timeout=120, cwd=Path(__file__).parents[1],
    )
    return done.returncode, done.stdout, done.stderr


def make_database(folder: Path) -> Path:
    path = folder / "chat.db"
    with Store.open(str(path)) as store:
        c = store.new_conversation("kept safe", "m")
        u = store.add_user_message(c, "hello walrus", None)
        r = store.start_reply(c, u, None, {}, None, "m")
        store.finish_reply(r, "a reply", "complete", {})
    return path


def lock(folder: Path, folder_mode: int) -> None:
    for f in folder.iterdir():
        f.chmod(0o444)
    folder.chmod(folder_mode)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def one_error_line(err: str) -> bool:
    return err.startswith("chatbot: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("folder_mode", [0o555, 0o777], ids=["read-only folder", "writable folder"])
def test_a_read_only_database_can_be_read_and_a_write_is_one_line(place, folder_mode):
    folder = place[0] / "db"
    folder.mkdir()
    path = make_database(folder)
    lock(folder, folder_mode)
    before = snapshot(folder)
    db = ["--db", str(path)]
    code, out, err = cli(place, *db, "history", "list")
    assert code == 0 and "kept safe" in out, (place[2], err)
    code, out, err = cli(place, *db, "history", "show", "1")
    assert code == 0 and "hello walrus" in out and "a reply" in out, err
    code, out, err = cli(place, *db, "history", "search", "walrus")
    assert code == 0 and "walrus" in out, err
    code, out, err = cli(place, *db, "history", "export", "1", "--format", "json")
    assert code == 0 and [m["content"] for m in json.loads(out)["conversation"]["messages"]] == ["hello walrus", "a reply"]
    code, out, err = cli(place, *db, "db", "current")
    assert code == 0 and "(latest)" in out, err
    backup = place[0] / "copy.db"
    code, out, err = cli(place, *db, "db", "backup", "-o", str(backup))
    assert code == 0, err
    with Store.open(str(backup)) as copy:
        assert [c.title for c in copy.list_conversations()] == ["kept safe"]
    for write in (["history", "rename", "1", "changed"], ["history", "delete", "1", "--yes"]):
        code, out, err = cli(place, *db, *write)
        assert code == 1 and "is read-only" in err and one_error_line(err), err
    if folder_mode == 0o555:
        assert snapshot(folder) == before  # not a byte, not a new file
    else:  # SQLite may leave its (empty) -wal and -shm files beside it; the database is unchanged
        assert snapshot(folder)["chat.db"] == before["chat.db"]


def _leave_changes_in_the_log(path: Path) -> None:
    """A writer killed after a commit, before any checkpoint: the change is only in chat.db-wal."""
    script = (
        "import os, sqlite3\n"
        f"c = sqlite3.connect({str(path)!r}); c.execute('PRAGMA wal_autocheckpoint = 0')\n"
        "c.execute(\"UPDATE conversations SET title = 'renamed in the log'\"); c.commit(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_changes_left_in_the_write_ahead_log_are_read(place):
    folder = place[0] / "db"
    folder.mkdir()
    path = make_database(folder)
    _leave_changes_in_the_log(path)
    lock(folder, 0o555)
    code, out, err = cli(place, "--db", str(path), "history", "list")
    assert code == 0 and "renamed in the log" in out, err


def test_a_log_that_cannot_be_read_is_one_line_not_old_contents(place):
    folder = place[0] / "db"
    folder.mkdir()
    path = make_database(folder)
    _leave_changes_in_the_log(path)
    (folder / "chat.db-shm").unlink()  # SQLite would have to make it, in a folder it cannot write
    lock(folder, 0o555)
    before = snapshot(folder)
    code, out, err = cli(place, "--db", str(path), "history", "list")
    assert code == 1 and out == "" and "write-ahead log chat.db-wal holds changes" in err and one_error_line(err), err
    assert snapshot(folder) == before


def test_a_read_only_database_of_an_older_schema_is_one_line(place):
    folder = place[0] / "db"
    folder.mkdir()
    shutil.copy(FIXTURES / "db-0001_initial.sqlite", folder / "chat.db")
    lock(folder, 0o555)
    before = snapshot(folder)
    code, out, err = cli(place, "--db", str(folder / "chat.db"), "history", "list")
    assert code == 1 and "is read-only and has the older schema 0001_initial" in err and one_error_line(err), err
    assert snapshot(folder) == before


def test_a_new_database_in_a_read_only_folder_is_one_line(place):
    folder = place[0] / "db"
    folder.mkdir()
    folder.chmod(0o555)
    export = place[0] / "export.json"
    with Store.open(str(place[0] / "source.db")) as store:
        c = store.new_conversation("x", "m")
        from chatbot.store import exchange

        export.write_text(exchange.to_json(store.export_conversation(c)))
    code, out, err = cli(place, "--db", str(folder / "new.db"), "history", "import", str(export))
    assert code == 1 and f"cannot create {folder / 'new.db'}: Permission denied" in err and one_error_line(err), err
    assert list(folder.iterdir()) == []


def test_the_sqlite_file_is_really_unwritable_to_the_cli(place):
    """The premise of this file: the child process is refused what the test process may do."""
    folder = place[0] / "db"
    folder.mkdir()
    path = make_database(folder)
    lock(folder, 0o555)
    preexec = place[1]
    probe = f"import sqlite3; sqlite3.connect({str(path)!r}).execute('DELETE FROM messages').connection.commit()"
    done = subprocess.run([sys.executable, "-c", probe], preexec_fn=preexec, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "readonly" in done.stderr, done.stderr
    assert sqlite3.connect(path).execute("SELECT count(*) FROM messages").fetchone() == (2,)
