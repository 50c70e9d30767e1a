"""Switching the model from the command palette ("Model: NAME"): it loads behind the screen, the
open conversation goes on with it, and each reply stores the model that wrote it. Real Textual
app through Pilot, real SQLite; the runtimes are fakes named after the model asked for."""

from __future__ import annotations

import pytest
from cli_invoke import invoke_main
from gguf_tiny import write_tiny_gguf
from tui_fakes import FakeRuntime, idle, make_app, make_settings, wait_for

from chatbot.store import Store

pytestmark = pytest.mark.asyncio
SIZE = (100, 32)


async def send(pilot, text: str) -> None:
    for key in text:
        await pilot.press("space" if key == " " else key)
    await pilot.press("enter")


async def test_model_from_the_palette_takes_over_the_conversation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # only the planted models are found
    settings = make_settings(tmp_path)
    settings.models_dir = tmp_path / "models"
    settings.models_dir.mkdir()
    write_tiny_gguf(settings.models_dir / "house.gguf", "llama", "Q8_0")
    opened = []

    def open_runtime(progress):
        progress("pretending to load")
        runtime = FakeRuntime()
        runtime.model_name = settings.model or "fake-model"
        runtime.closed = False
        runtime.close = lambda: setattr(runtime, "closed", True)
        opened.append(runtime)
        return runtime

    app = make_app(tmp_path, settings=settings, open_runtime=open_runtime)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.get_screen("chat")
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "hi")
        await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == 2, what="first reply")
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Model: house")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.status.model == "house" and idle(app), what="the switch")
        assert opened[0].closed and not opened[1].closed
        # The reply by the model before the switch says so in its header; the status bar names the new one.
        first = screen.log_view.messages[1]
        assert first.model_note == "fake-model" and "fake-model" in str(first.query_one(".header").render())
        await send(pilot, "again")
        await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == 4, what="second reply")
        assert screen.log_view.messages[3].model_note is None
        screen.controller.open(screen.controller.conversation_id)  # drawn again from the store
        await screen._render_view()
        assert [v.model_note for v in screen.log_view.messages] == [None, "fake-model", None, None]
    with Store.open(settings.database_url()) as store:
        conversation_id = store.list_conversations()[0].id
        replies = [m for m in store.active_branch(conversation_id) if m.role == "assistant"]
    assert [m.model for m in replies] == ["fake-model", "house"]  # one conversation, a model per reply
    history_keeps_the_model_of_each_reply(capsys, tmp_path, settings.db, conversation_id)


def history_keeps_the_model_of_each_reply(capsys, tmp_path, db: str, conversation_id: int) -> None:
    """`history show`, the Markdown export name the model of a reply written after the switch; the
    JSON export and its import keep each reply's model."""
    capsys.readouterr()
    code, shown, _ = invoke_main(capsys, "--db", db, "history", "show", str(conversation_id))
    assert code == 0
    replies = [line for line in shown.splitlines() if " assistant · " in line]
    assert len(replies) == 2 and "by " not in replies[0] and "by house" in replies[1]  # the conversation's is fake-model
    code, markdown, _ = invoke_main(capsys, "--db", db, "history", "export", str(conversation_id))
    assert code == 0 and markdown.count("by `house`") == 1
    exported = tmp_path / "c.json"
    assert invoke_main(capsys, "--db", db, "history", "export", str(conversation_id), "-f", "json", "-o", str(exported))[0] == 0
    code, new_id, _ = invoke_main(capsys, "--db", db, "history", "import", str(exported))
    assert code == 0
    with Store.open(f"sqlite:///{db}") as store:
        imported = [m.model for m in store.active_branch(int(new_id)) if m.role == "assistant"]
    assert imported == ["fake-model", "house"]
