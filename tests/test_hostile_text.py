"""Hostile message text through the real turn protocol (fake engine, real store): control
characters, NUL, ANSI escapes, markup-looking text and a 1 MB paste are stored and shown exactly;
a lone surrogate (not encodable as UTF-8) is refused with one line everywhere, nothing stored."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import dump, run_cli, session_for, settings_for
from tui_fakes import FakeEngine, idle, make_app, make_settings, wait_for

from chatbot.errors import UserError
from chatbot.store import Store, exchange
from chatbot.tui.widgets.text import clean

NASTY = [
    "nul \x00 inside",
    "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;title\x07 bell",
    "[bold]not bold[/] [link=https://x]x[/link] [/]",
    "tabs\tand\r\nCRLF\rCR \x7f \x85 \u2028 \ufeff",
    "emoji 🙂 CJK 東京 RTL \u202eevil",
    "<script>alert(1)</script> ' OR 1=1; --",
]
SURROGATES = ["\ud800", "bad \udcff byte", "\udfff at the end \udfff"]
echo = FakeEngine(reply_for=lambda prompt: "ok")


def text_shown_for(text: str) -> str:
    """What the TUI shows: the text, with control characters as visible pictures."""
    return clean(text)


@pytest.fixture
def store(tmp_path):
    with Store.open(str(tmp_path / "chat.db")) as s:
        yield s


@pytest.mark.parametrize("text", NASTY + ["a 1 MB paste\n" + "0123456789abcdef" * 65536], ids=range(7))
def test_stored_and_exported_exactly(store, tmp_path, text):
    session = session_for(store, settings_for(tmp_path), echo)
    reply = session.send(text, session.sampling_params())
    reply.run()
    branch = store.active_branch(session.conversation_id)
    assert branch[0].content == text
    doc = exchange.parse_document(exchange.to_json(store.export_conversation(session.conversation_id)), "x")
    assert doc.conversation.messages[0].content == text
    new_id = store.import_conversation(doc)
    assert store.active_branch(new_id)[0].content == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=200).filter(str.strip))
def test_any_text_round_trips(store, text):
    c = store.new_conversation(None, "m")
    u = store.add_user_message(c, text, None)
    r = store.start_reply(c, u, None, {}, None, "m")
    store.finish_reply(r, text, "complete", {})
    assert [m.content for m in store.active_branch(c)] == [text, text]
    shown = text_shown_for(text)
    assert "\x1b" not in shown and "\x00" not in shown  # nothing reaches the terminal raw


@pytest.mark.parametrize("text", SURROGATES)
def test_lone_surrogate_refused_by_the_session(store, tmp_path, text):
    path = tmp_path / "chat.db"
    session = session_for(store, settings_for(tmp_path), echo)
    session.send("fine", session.sampling_params()).run()
    before = dump(path)
    with pytest.raises(UserError, match="lone surrogate") as err:
        session.send(text, session.sampling_params())
    assert "\n" not in str(err.value)
    assert dump(path) == before


@pytest.mark.parametrize("text", SURROGATES)
def test_lone_surrogate_refused_by_the_store(store, tmp_path, text):
    path = tmp_path / "chat.db"
    c = store.new_conversation("t", "m")
    before = dump(path)
    for write in (
        lambda: store.add_user_message(c, text, None),
        lambda: store.rename_conversation(c, text),
        lambda: store.new_conversation(text, "m"),
        lambda: store.persona_version("p", "control_code", {"control_code": text}),
    ):
        with pytest.raises(UserError, match="lone surrogate"):
            write()
    assert dump(path) == before


def test_lone_surrogate_in_an_import_is_refused(store, tmp_path):
    session = session_for(store, settings_for(tmp_path), echo)
    session.send("fine", session.sampling_params()).run()
    text = exchange.to_json(store.export_conversation(session.conversation_id)).replace('"fine"', '"\\udcff"')
    with pytest.raises(UserError, match="nothing imported"):
        exchange.parse_document(text, "x.json")


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    settings = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings.db)
    return tmp_path / "chat.db"


def test_cli_argument_that_was_not_utf8(cli_env, monkeypatch, capsys):
    # what Python makes of `chatbot ask $'\xff'`: os.fsdecode gives a lone surrogate
    code, out, err, loaded = run_cli(["ask", "caf\udce9"], monkeypatch, capsys)
    assert (code, out, loaded) == (2, "", False)
    assert err.startswith("chatbot: error: ") and "lone surrogate" in err and err.count("\n") == 1


@pytest.mark.parametrize("data", [b"caf\xe9\n", b"\xff\xfe\x00", b"ok \xed\xa0\x80 (an encoded surrogate)"])
def test_cli_stdin_that_is_not_utf8(cli_env, monkeypatch, capsys, data):
    code, out, err, loaded = run_cli(["ask", "-"], monkeypatch, capsys, stdin=data)
    assert (code, out, loaded) == (2, "", False)
    assert "lone surrogate" in err and err.count("\n") == 1 and "Traceback" not in err


def test_plain_chat_refuses_one_bad_line_and_goes_on(cli_env, monkeypatch, capsys):
    code, out, err, _ = run_cli(["chat", "--plain"], monkeypatch, capsys, stdin=b"hello\nbad \xff\nagain\n")
    assert code == 0 and out == "ok\nok\n"
    assert err.count("lone surrogate") == 1 and "Traceback" not in err
    with Store.open(str(cli_env)) as s:
        assert [m.content for m in s.active_branch(s.latest_conversation_id())] == ["hello", "ok", "again", "ok"]


@pytest.mark.parametrize("text", NASTY)
def test_cli_stores_and_shows_exactly(cli_env, monkeypatch, capsys, text):
    code, out, err, _ = run_cli(["ask", text], monkeypatch, capsys)
    assert (code, out) == (0, "ok\n"), err
    code, out, err, _ = run_cli(["history", "show", "1", "--json"], monkeypatch, capsys)
    import json

    assert json.loads(out)["messages"][0]["content"] == text


# --- TUI ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tui_shows_text_literally_and_refuses_a_surrogate(tmp_path):
    from chatbot.tui.widgets.chat_log import EventLine

    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: "ok"))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        screen = app.get_screen("chat")
        for text in NASTY[:3]:
            screen.composer.text = text
            await pilot.press("enter")
            await wait_for(pilot, lambda: idle(app) and screen.log_view.messages[-1].content == "ok", what="reply")
        assert [m.content for m in screen.log_view.messages if m.role == "user"] == NASTY[:3]
        body = str(screen.log_view.messages[4].query_one(".body").render())
        assert "[bold]not bold[/]" in body  # markup stays characters
        before = dump(tmp_path / "chat.db")
        screen.composer.text = "bad \udcff"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and screen.composer.text == "bad \udcff", what="refusal")
        events = [str(e.render()) for e in screen.log_view.query(EventLine)]
        assert any("lone surrogate" in e for e in events), events
        assert dump(tmp_path / "chat.db") == before
