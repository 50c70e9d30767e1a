"""The settings panel (F9 / the palette): a conversation's own persona, sampling, context budget
and memory scope, kept in conversations.settings, applied from its next reply, shown in the status
bar, refused in one line when out of bounds. Pilot over the fake model and a real SQLite file."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Select
from tui_fakes import FakeEngine, FakeRuntime, idle, make_app, make_settings, seed_conversation, wait_for

from chatbot.store import Store
from chatbot.conversation_settings import session_settings, summary

SIZE = (110, 34)


@pytest.fixture(autouse=True)
def no_models_of_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the panel's model list: only planted ones


def chat(app):
    return app.get_screen("chat")


def stored(settings):
    with Store.open(settings.database_url()) as store:
        cid = store.latest_conversation_id()
        return store.conversation_settings(cid), store.active_branch(cid)


def status_line(app) -> str:
    return str(chat(app).status.render())


async def fill(pilot, **fields) -> None:
    """Open the panel and type into its fields (the memory scope is a choice)."""
    await pilot.press("f9")
    await wait_for(pilot, lambda: pilot.app.screen.query("#temperature"), what="the panel")
    for key, value in fields.items():
        if key in ("memory", "persona", "model"):
            pilot.app.screen.query_one(f"#{key}", Select).value = value
        else:
            pilot.app.screen.query_one(f"#{key}", Input).value = value
    await pilot.pause(0.1)


async def send(pilot, text: str, replies: int) -> None:
    chat(pilot.app).composer.text = text
    await pilot.press("enter")
    await wait_for(pilot, lambda: idle(pilot.app) and len(chat(pilot.app).log_view.messages) == replies, what="reply")


@pytest.mark.asyncio
async def test_settings_are_kept_with_the_conversation_and_apply_from_the_next_reply(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("Hello", "Hi there")])
    app = make_app(tmp_path, FakeEngine(), settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and chat(app).log_view.messages, what="resumed")
        await fill(pilot, temperature="0.3", top_k="5", max_new_tokens="40", context_budget="300",
                   repetition_penalty="1.0", memory="off")
        await pilot.press("enter")  # Enter in a field saves
        await wait_for(pilot, lambda: app.screen is chat(app), what="the panel closing")
        kept, _ = stored(settings)
        assert kept == {"temperature": 0.3, "top_k": 5, "max_new_tokens": 40, "context_budget": 300,
                        "repetition_penalty": 1.0, "memory": "off"}
        assert "temp 0.3" in status_line(app) and "budget 300" in status_line(app)
        await wait_for(pilot, lambda: chat(app).status.context and chat(app).status.context[1] == 300, what="budget")
        await send(pilot, "again", 4)
        _, branch = stored(settings)
        reply = branch[-1]
        assert {k: reply.settings[k] for k in ("temperature", "top_k", "max_new_tokens", "repetition_penalty")} == {
            "temperature": 0.3, "top_k": 5, "max_new_tokens": 40, "repetition_penalty": 1.0}
        assert branch[1].settings == {}  # the earlier reply keeps what it was made with
        assert chat(app).status.context[1] == 300
    app = make_app(tmp_path, FakeEngine(), settings=settings, resume="last")  # reopened: still there
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and chat(app).log_view.messages, what="resumed")
        assert "temp 0.3" in status_line(app)
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.screen.query("#temperature"), what="the panel")
        assert app.screen.query_one("#top_k", Input).value == "5"
        app.screen.query_one("#top_k", Input).value = ""  # emptied: back to the default
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is chat(app), what="the panel closing")
    assert "top_k" not in stored(settings)[0] and stored(settings)[0]["temperature"] == 0.3


@pytest.mark.asyncio
async def test_a_value_out_of_bounds_is_refused_in_one_line_and_nothing_is_kept(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("Hello", "Hi there")])
    app = make_app(tmp_path, FakeEngine(), settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and chat(app).log_view.messages, what="resumed")
        for field, value, says in (("top_p", "1.5", "Top-p"), ("temperature", "warm", "not a number"),
                                   ("context_budget", "10", "greater than or equal to 64")):
            await fill(pilot, **{field: value})
            await pilot.press("enter")
            await pilot.pause(0.2)
            error = str(app.screen.query_one("#settings-error").render())
            assert says in error and "\n" not in error, error
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is chat(app), what="the panel closing")
    assert stored(settings)[0] == {}


@pytest.mark.asyncio
async def test_a_new_conversations_settings_and_persona_are_stored_with_its_first_turn(tmp_path):
    app = make_app(tmp_path, FakeEngine())
    settings = app.controller.settings
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await fill(pilot, max_new_tokens="12", persona="pirate")
        await pilot.click("#save")
        await wait_for(pilot, lambda: app.screen is chat(app), what="the panel closing")
        assert chat(app).status.persona == "Pirate" and "max 12" in status_line(app)
        await send(pilot, "ahoy", 2)
        kept, branch = stored(settings)
    assert kept == {"max_new_tokens": 12}
    assert branch[-1].persona.name == "pirate" and branch[-1].settings["max_new_tokens"] == 12


@pytest.mark.asyncio
async def test_a_model_chosen_in_the_panel_loads_behind_the_screen(tmp_path):
    from gguf_tiny import write_tiny_gguf

    settings = make_settings(tmp_path)
    settings.models_dir = tmp_path / "models"
    settings.models_dir.mkdir()
    write_tiny_gguf(settings.models_dir / "house.gguf", "llama", "Q8_0")

    def open_runtime(progress):
        runtime = FakeRuntime()
        runtime.model_name = settings.model or "fake-model"
        return runtime

    app = make_app(tmp_path, settings=settings, open_runtime=open_runtime)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await fill(pilot, model="house", temperature="0.5")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat(app).status.model == "house" and idle(app), what="the switch")
        assert app.controller.conversation_settings == {"temperature": 0.5}  # kept across the new session
        await send(pilot, "hi", 2)
    kept, branch = stored(settings)
    assert branch[-1].model == "house" and branch[-1].settings["temperature"] == 0.5 and kept == {"temperature": 0.5}


def test_the_session_gets_the_budget_and_memory_scope_and_the_status_bar_a_summary(tmp_path):
    base = make_settings(tmp_path)
    mine = session_settings(base, {"context_budget": 300, "temperature": 0.2, "memory": "off"})
    assert mine.context_budget == 300 and base.context_budget == 2048
    assert mine.memory == "off" and base.memory == "conversation"
    assert session_settings(base, {"temperature": 0.2}) is base
    assert summary({"temperature": 0.25, "max_new_tokens": 64, "memory": "off"}) == "temp 0.25 · max 64 · memory off"


def _cli(settings, capsys, *args):
    from cli_invoke import invoke_main

    return invoke_main(capsys, "--db", settings.database_url(), *args)


def test_export_and_import_carry_the_settings(tmp_path, capsys):
    settings = make_settings(tmp_path)
    cid = seed_conversation(settings, [("Hello", "Hi there")])
    own = {"temperature": 0.3, "top_k": 7, "max_new_tokens": 64, "context_budget": 300, "memory": "off"}
    with Store.open(settings.database_url()) as store:
        store.set_conversation_settings(cid, own)
    exported = tmp_path / "c.json"
    assert _cli(settings, capsys, "history", "export", str(cid), "--format", "json", "-o", str(exported))[0] == 0
    assert json.loads(exported.read_text())["conversation"]["settings"] == own
    code, out, _ = _cli(settings, capsys, "history", "import", str(exported))
    with Store.open(settings.database_url()) as store:
        assert code == 0 and store.conversation_settings(int(out)) == own


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"temperature": -1}, "conversation.settings: Temperature (0 = greedy): input should be greater than or equal to 0"),
        ({"top_p": "0.5"}, "conversation.settings: Top-p"),  # a string is not a number, even one that reads as one
        ({"max_new_tokens": True}, "conversation.settings: Max new tokens"),
        ({"memory": "everything"}, "conversation.settings: Memory scope"),
        ({"seed": 3}, "conversation.settings: 'seed' is not a conversation setting"),
        ([1, 2], "conversation.settings: Input should be an object"),
    ],
    ids=["out of bounds", "a string", "a boolean", "an unknown scope", "an unknown key", "not an object"],
)
def test_an_import_with_bad_settings_is_one_line_and_writes_nothing(tmp_path, capsys, bad, expected):
    settings = make_settings(tmp_path)
    cid = seed_conversation(settings, [("Hello", "Hi there")])
    data = json.loads(_cli(settings, capsys, "history", "export", str(cid), "--format", "json")[1])
    data["conversation"]["settings"] = bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out, err = _cli(settings, capsys, "history", "import", str(path))
    assert code == 1 and out == "" and err.count("\n") == 1 and expected in err and "nothing imported" in err, err
    with Store.open(settings.database_url()) as store:
        assert [c.id for c in store.list_conversations()] == [cid]


def test_the_store_keeps_only_settings_an_import_takes_back(tmp_path):
    from chatbot.errors import UsageError

    settings = make_settings(tmp_path)
    cid = seed_conversation(settings, [("Hello", "Hi there")])
    with Store.open(settings.database_url()) as store:
        with pytest.raises(UsageError, match="'seed' is not a conversation setting.*nothing was saved"):
            store.set_conversation_settings(cid, {"temperature": 0.5, "seed": 3})
        assert store.conversation_settings(cid) == {}
