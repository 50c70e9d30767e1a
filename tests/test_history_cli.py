"""`chatbot history ...` and `chatbot db ...` through the real entry point, on a temporary database."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.cli import main
from chatbot.store import Store
from test_store_support import sample_conversation

CONTROL_TITLE = "tab\there \x1b[31mred\x1b[0m [bold]not markup[/bold] é 🏴\u200d☠️ \x07"


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "cli.db"
    with Store.open(str(path)) as store:
        sample_conversation(store)
    return path


def run(db: Path, *args: str, stdout=None) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit status, stdout, stderr). `stdout`: a StringIO to use."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = stdout or io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(["--db", str(db), *args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_list(db):
    code, out, _ = run(db, "history", "list")
    assert code == 0 and "What is the secret word?" in out and "5 msgs" in out
    code, out, _ = run(db, "history", "list", "--json", "--limit", "1")
    rows = json.loads(out)
    assert len(rows) == 1 and {"id", "title", "created_at", "updated_at", "message_count"} <= rows[0].keys()


def test_show_text_and_json(db):
    code, out, _ = run(db, "history", "show", "1")
    assert code == 0
    assert "pirate (control, " in out and "seed 99" in out
    assert "branch 2 of 2 (others: #2" in out
    assert "-- persona switched: pirate → assistant (control, " in out
    assert "The secret word is PINEAPPLE" in out and "interrupted" in out
    assert "␇␛[1m [b]x[/b]" in out  # stored text, its control characters shown, not obeyed
    code, out, _ = run(db, "history", "show", "1", "--leaf", "2")
    assert "Arr, the secret word be PINEAPPLE!" in out and "Now answer plainly." not in out
    code, out, _ = run(db, "history", "show", "1", "--json")
    data = json.loads(out)
    assert {"id", "title", "created_at", "messages"} <= data.keys()
    message_keys = {"id", "parent_id", "role", "content", "status", "persona", "settings", "stats"}
    assert all(message_keys <= m.keys() for m in data["messages"])
    assert data["messages"][1]["persona"].keys() == {"name", "kind", "hash"}
    assert data["messages"][1]["stats"]["tokens_per_s"] == 24.5


def test_json_vocabulary_is_shared(db, tmp_path):
    _, shown, _ = run(db, "history", "show", "1", "--json")
    _, exported, _ = run(db, "history", "export", "1", "--format", "json")
    assert json.loads(exported)["conversation"] == json.loads(shown)
    _, listed, _ = run(db, "history", "list", "--json")
    summary = json.loads(listed)[0]
    assert all(summary[k] == json.loads(shown)[k] for k in ("id", "title", "created_at", "updated_at", "model"))


def test_unknown_id_is_one_line_exit_1(db):
    for args in (["show", "42"], ["export", "42"], ["replay", "42"], ["rename", "42", "x"], ["delete", "42", "--yes"]):
        code, out, err = run(db, "history", *args)
        assert (code, out, err) == (1, "", "chatbot: error: no conversation with id 42\n"), args


def test_last_names_the_most_recent_conversation(db, tmp_path):
    with Store.open(str(db)) as store:
        newest = store.new_conversation("the newest one", "m")
        store.add_user_message(newest, "latest words", None)
    for args in (["show", "last"], ["show", "LAST", "--json"], ["export", "last", "--format", "md"], ["replay", "last", "--instant"]):
        code, out, err = run(db, "history", *args)
        assert code == 0 and "latest words" in out, (args, err)
    assert run(db, "history", "rename", "last", "renamed")[0] == 0
    assert run(db, "history", "delete", "last", "--yes")[0] == 0
    with Store.open(str(db)) as store:
        assert [c.id for c in store.list_conversations()] != [] and newest not in [c.id for c in store.list_conversations()]
    empty = tmp_path / "empty.db"
    Store.open(str(empty)).close()  # (a read command on a missing file says so: test_paths.py)
    assert run(empty, "history", "show", "last") == (1, "", "chatbot: error: there are no conversations yet\n")
    for huge in ("99999999999999999999", "0"):
        assert run(db, "history", "show", huge) == (1, "", f"chatbot: error: no conversation with id {int(huge)}\n")


@pytest.mark.parametrize(
    "args",
    [
        ["history", "show", "abc"],
        ["history", "list", "--limit", "0"],
        ["history", "replay", "1", "--speed", "0"],
        ["history", "replay", "1", "--speed", "2", "--instant"],
        ["history", "export", "1", "--format", "pdf"],
        ["history", "search", "   "],
        ["history", "rename", "1", ""],
        ["history", "nonsense"],
    ],
)
def test_usage_errors_exit_2(db, args):
    code, out, err = run(db, *args)
    assert code == 2 and err.startswith("chatbot: error: ") and err.count("\n") == 1


def test_rename_keeps_any_characters(db):
    assert run(db, "history", "rename", "1", CONTROL_TITLE)[0] == 0
    _, out, _ = run(db, "history", "list")
    assert "tab\there ␛[31mred␛[0m [bold]not markup[/bold] é 🏴\u200d☠️ ␇" in out  # shown, not obeyed
    _, out, _ = run(db, "history", "show", "1", "--json")  # stored exactly
    assert json.loads(out)["title"] == CONTROL_TITLE


def test_delete_needs_yes(db):
    code, _, err = run(db, "history", "delete", "1")
    assert code == 1 and "without --yes" in err
    assert run(db, "history", "show", "1")[0] == 0
    assert run(db, "history", "delete", "1", "--yes")[0] == 0
    assert run(db, "history", "show", "1")[0] == 1
    assert run(db, "history", "search", "pineapple", "--json")[1].strip() == "[]"


def test_search(db):
    code, out, _ = run(db, "history", "search", "pineapple", "--json")
    hits = json.loads(out)
    assert code == 0 and hits and all(h["conversation_id"] == 1 for h in hits)
    assert {"snippet", "highlights", "message_id", "score"} <= hits[0].keys()
    code, out, _ = run(db, "history", "search", 'PINEAPPLE" OR (NEAR *')
    assert code == 0


def test_export_import_round_trip(db, tmp_path):
    target = tmp_path / "out" 
    target.mkdir()
    exported = target / "c.json"
    assert run(db, "history", "export", "1", "--format", "json", "--output", str(exported))[0] == 0
    assert exported.stat().st_mode & 0o077 == 0
    code, out, _ = run(db, "history", "import", str(exported))
    assert code == 0 and out.strip() == "2"
    first = json.loads(run(db, "history", "show", "1", "--json")[1])
    second = json.loads(run(db, "history", "show", "2", "--json")[1])
    assert [m["content"] for m in first["messages"]] == [m["content"] for m in second["messages"]]
    assert [m["persona"] for m in first["messages"]] == [m["persona"] for m in second["messages"]]
    code, md, _ = run(db, "history", "export", "2", "--format", "md")
    assert code == 0 and md.startswith("# What is the secret word?")


def test_malformed_import_writes_nothing(db, tmp_path):
    data = json.loads(run(db, "history", "export", "1", "--format", "json")[1])
    data["conversation"]["messages"][2]["status"] = "exploded"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, out, err = run(db, "history", "import", str(bad))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and str(bad) in err and "conversation.messages.2.status" in err
    assert len(json.loads(run(db, "history", "list", "--json")[1])) == 1
    assert run(db, "history", "import", str(tmp_path / "missing.json"))[0] == 1


def test_replay(db, monkeypatch):
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    code, out, _ = run(db, "history", "replay", "1", "--speed", "2")
    assert code == 0
    assert out.splitlines()[1:] == [
        "user> What is the secret word?",
        "It is PINEAPPLE. 🍍 ␇␛[1m [b]x[/b]",
        "pirate> Arr, PINEAPPLE it be.",
        "-- persona switched: pirate → assistant (control, " + out.split("(control, ")[-1].split(")")[0] + ") --",
        "user> Now answer plainly.",
        "assistant> The secret word is PINEAPPLE",
        "[interrupted]",
    ]
    # reply 2: ttft 120.5 ms + 9 tokens at 24.5 tok/s; reply 3: 6 tokens at 30 tok/s; all at 2x
    assert sum(slept) == pytest.approx((0.1205 + 9 / 24.5 + 6 / 30) / 2)
    slept.clear()
    code, instant, _ = run(db, "history", "replay", "1", "--instant")
    assert code == 0 and instant == out and slept == []



def test_ctrl_c_in_a_replay_exits_130(db, monkeypatch):
    """Typer turns a Ctrl+C in any command into exit status 130: the entry point passes it on."""

    def ctrl_c(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", ctrl_c)
    code, out, err = run(db, "history", "replay", "1")
    assert code == 130 and "pirate> " in out and "Traceback" not in err

def test_db_commands(db, tmp_path):
    code, out, _ = run(db, "db", "current")
    assert code == 0 and "(latest)" in out
    code, out, _ = run(db, "db", "upgrade")
    assert code == 0 and "nothing to do" in out
    code, out, _ = run(db, "db", "backup")
    backup = Path(out.strip())
    assert code == 0 and backup.exists() and backup.name.startswith("cli.backup-")
    with Store.open(str(backup)) as copy:
        assert copy.conversation(1).title == "What is the secret word?"
    code, out, _ = run(tmp_path / "none.db", "db", "current")
    assert code == 0 and "no database yet" in out and not (tmp_path / "none.db").exists()
    assert run(db, "db", "backup", "--output", str(backup))[0] == 1  # no overwriting


def test_not_a_database_is_one_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some notes\n" * 100)
    before = path.read_bytes()
    for args in (["history", "list"], ["db", "upgrade"], ["db", "current"], ["db", "backup"]):
        code, out, err = run(path, *args)
        assert code == 1 and str(path) in err and err.count("\n") == 1, args
    assert path.read_bytes() == before


def test_newer_database_via_cli(db):
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffff_future'")
    conn.close()
    before = db.read_bytes()
    code, _, err = run(db, "history", "list")
    assert code == 1 and "newer than this chatbot" in err
    code, out, _ = run(db, "db", "current")
    assert code == 0 and "newer than this chatbot knows" in out
    assert db.read_bytes() == before


def test_console_script(db):
    """The installed `chatbot` script: a real process, real exit codes, unicode output."""
    script = Path(sys.executable).with_name("chatbot")
    proc = subprocess.run([str(script), "--db", str(db), "history", "show", "7"], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (1, "chatbot: error: no conversation with id 7\n")
    proc = subprocess.run([str(script), "--db", str(db), "history", "list"], capture_output=True, text=True)
    assert proc.returncode == 0 and "What is the secret word?" in proc.stdout
