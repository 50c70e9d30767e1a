"""A full disk or a read-only database during a turn: the user gets one clear line, the reply text
stays on screen / stdout, and nothing already stored is damaged.

Tests run as root, which ignores file permissions, so faults are made the way SQLite itself
reports them: `PRAGMA query_only` (read-only), `PRAGMA max_page_count` (a full disk), or the
store's write raising SQLite's own error at one precise step of the turn protocol.
"""

from __future__ import annotations

import pytest
from reliability_helpers import (
    DISK_FULL,
    READ_ONLY,
    dump,
    fail_after,
    integrity,
    on_every_connection,
    page_count,
    run_cli,
    session_for,
    settings_for,
)
from tui_fakes import FakeEngine, idle, make_app, make_settings, wait_for

from chatbot.errors import UserError
from chatbot.session import turns_from_messages
from chatbot.store import Store

REPLY = "one two three four five six seven eight nine ten"
ENGINE = FakeEngine(reply_for=lambda p: REPLY)
MESSAGES = {DISK_FULL: "disk is full", READ_ONLY: "read-only"}
# where in the turn the writes start failing: [(repository function, successful calls first)]
STAGES = {
    "user message": [("add_message", 0)],
    "reply row": [("add_message", 1)],
    "mid-stream flush": [("update_content", 1), ("finish", 0)],
    "final write": [("finish", 0)],
}


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text


@pytest.fixture
def stored(tmp_path, monkeypatch):
    """A database with two complete turns, stored through a real ChatSession."""
    monkeypatch.setattr("chatbot.session.FLUSH_EVERY_S", 0.0)  # flush after every token
    settings = settings_for(tmp_path)
    store = Store.open(settings.database_url())
    session = session_for(store, settings, FakeEngine(reply_for=lambda p: REPLY))
    for text in ("first question", "second question"):
        session.send(text, session.sampling_params()).run()
    yield tmp_path / "chat.db", store, session
    store.close()


@pytest.mark.parametrize("error", [DISK_FULL, READ_ONLY], ids=["disk-full", "read-only"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_session_turn_under_write_failure(stored, monkeypatch, stage, error):
    path, store, session = stored
    before = dump(path)
    for function, calls_ok in STAGES[stage]:
        fail_after(monkeypatch, function, error, calls_ok)
    if stage in ("user message", "reply row"):
        with pytest.raises(UserError) as err:  # before any generation: nothing shown yet
            session.send("third question", session.sampling_params())
        problem = str(err.value)
    else:
        reply = session.send("third question", session.sampling_params())
        assert reply.run() == REPLY  # the whole reply still reaches the reader
        problem = reply.save_error
        assert problem is not None
    assert MESSAGES[error] in problem and one_line(problem), problem
    monkeypatch.undo()
    assert integrity(path) == "ok"
    after = dump(path)
    for table, rows in before.items():  # every row stored before the turn is unchanged
        assert set(rows) <= set(after[table]) or table in ("conversations",), table
    with Store.open(str(path)) as again:
        branch = again.active_branch(again.latest_conversation_id())
    # the session goes on with the questions a reload would give it (the next turn's context)
    assert [t.user for t in session.history] == [t.user for t in turns_from_messages(branch)]
    assert [m.content for m in branch[:4]] == ["first question", REPLY, "second question", REPLY]
    assert all(m.status == "complete" for m in branch[:4])
    if stage in ("user message", "reply row"):  # the question and its reply row: one transaction
        assert len(branch) == 4
    else:  # the reply row keeps what was flushed and is no longer `streaming`
        assert branch[4].content == "third question"
        assert branch[5].status == "interrupted" and REPLY.startswith(branch[5].content)
        if stage == "mid-stream flush":
            assert branch[5].content == "one"  # the last flush that worked


def test_a_flush_that_fails_once_loses_nothing(stored, monkeypatch):
    path, store, session = stored
    fail_after(monkeypatch, "update_content", DISK_FULL, 1)  # the final write works again
    reply = session.send("third question", session.sampling_params())
    assert reply.run() == REPLY and reply.save_error is None
    last = store.active_branch(session.conversation_id)[-1]
    assert (last.content, last.status) == (REPLY, "complete")


def test_really_read_only_database(stored):
    path, store, session = stored
    before = dump(path)
    on_every_connection(store, "PRAGMA query_only = ON")
    with pytest.raises(UserError, match="read-only") as err:
        session.send("third question", session.sampling_params())
    assert one_line(str(err.value))
    with pytest.raises(UserError, match="read-only"):
        store.rename_conversation(session.conversation_id, "new title")
    assert [m.content for m in store.active_branch(session.conversation_id)][-1] == REPLY  # reads still work
    assert dump(path) == before and integrity(path) == "ok"


def test_really_full_disk(stored):
    path, store, session = stored
    before = dump(path)
    on_every_connection(store, f"PRAGMA max_page_count = {page_count(path)}")
    with pytest.raises(UserError, match="disk is full") as err:
        session.send("a 1 MB paste " + "x" * 1_000_000, session.sampling_params())
    assert one_line(str(err.value))
    store.close()
    assert dump(path) == before and integrity(path) == "ok"
    with Store.open(str(path)) as again:  # the disk has room again: the chat goes on
        s = session_for(again, settings_for(path.parent), FakeEngine(reply_for=lambda p: REPLY), session.conversation_id)
        assert s.send("third question", s.sampling_params()).run() == REPLY


def test_read_only_database_can_still_be_read(tmp_path):
    path = tmp_path / "chat.db"
    with Store.open(str(path)) as store:
        c = store.new_conversation("kept", "m")
        store.add_user_message(c, "hello", None)
    before = dump(path)
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    with Store.open(url) as ro:
        assert [m.content for m in ro.active_branch(c)] == ["hello"]
        with pytest.raises(UserError, match="read-only"):
            ro.add_user_message(c, "more", None)
    assert dump(path) == before


@pytest.mark.parametrize("error", [DISK_FULL, "disk I/O error"], ids=["disk-full", "io-error"])
def test_a_database_that_cannot_be_written_opens_for_reading(stored, monkeypatch, error):
    """Opening writes (replies left `streaming` become `interrupted`): on a full disk that write
    fails, and the history can still be read, listed, searched and exported."""
    path, store, session = stored
    store.close()
    for write in ("mark_interrupted", "rename"):
        fail_after(monkeypatch, write, error)
    with Store.open(str(path)) as full:
        c = full.latest_conversation_id()
        assert [m.content for m in full.active_branch(c)][-1] == REPLY
        assert full.search("second")[0].conversation_id == c
        assert full.export_conversation(c).conversation.id == c
        with pytest.raises(UserError) as err:
            full.rename_conversation(c, "new")
        assert one_line(str(err.value))
    monkeypatch.undo()
    assert integrity(path) == "ok"


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("error", [DISK_FULL, READ_ONLY], ids=["disk-full", "read-only"])
def test_ask_keeps_the_reply_on_stdout(tmp_path, monkeypatch, capsys, error):
    settings = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings.db)
    assert run_cli(["ask", "first", "--temperature", "0"], monkeypatch, capsys, ENGINE)[0] == 0
    fail_after(monkeypatch, "finish", error)
    code, out, err, _ = run_cli(["ask", "second", "--continue", "--temperature", "0"], monkeypatch, capsys, ENGINE)
    assert code == 1
    assert out == REPLY + "\n"
    assert err.startswith("chatbot: error: ") and MESSAGES[error] in err and err.count("\n") == 1, err


def test_ask_refused_before_generating(tmp_path, monkeypatch, capsys):
    settings = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings.db)
    assert run_cli(["ask", "first"], monkeypatch, capsys, ENGINE)[0] == 0
    fail_after(monkeypatch, "add_message", DISK_FULL)
    code, out, err, _ = run_cli(["ask", "second", "--continue"], monkeypatch, capsys, ENGINE)
    assert (code, out) == (1, "")
    assert "disk is full" in err and err.count("\n") == 1, err


def test_plain_chat_reports_and_goes_on(tmp_path, monkeypatch, capsys):
    import io

    settings = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings.db)
    fail_after(monkeypatch, "finish", READ_ONLY)
    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo\n"))
    code, out, err, _ = run_cli(["chat", "--plain"], monkeypatch, capsys, ENGINE)
    assert code == 0
    assert out == f"{REPLY}\n{REPLY}\n"
    assert err.count("read-only") == 2 and "Traceback" not in err


# --- the TUI --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tui_keeps_the_reply_and_says_why(tmp_path, monkeypatch):
    from chatbot.tui.widgets.chat_log import EventLine

    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: REPLY))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        screen = app.get_screen("chat")
        screen.composer.text = "first"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == 2, what="first reply")
        fail_after(monkeypatch, "finish", DISK_FULL)
        screen.composer.text = "second"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == 4, what="second reply")
        await pilot.pause(0.1)
        assert [(m.role, m.content) for m in screen.log_view.messages][-2:] == [("user", "second"), ("assistant", REPLY)]
        events = [str(e.render()) for e in screen.log_view.query(EventLine)]
        assert any("disk is full" in e for e in events), events

        fail_after(monkeypatch, "add_message", READ_ONLY)  # this time the question cannot be stored
        screen.composer.text = "third"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and screen.composer.text == "third", what="text given back")
        events = [str(e.render()) for e in screen.log_view.query(EventLine)]
        assert any("read-only" in e for e in events), events
