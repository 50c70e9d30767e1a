"""The context window belongs to the conversation's branch: opening another conversation, or
another process, gives the same window (issue 13: the UI forgot turns after a switch)."""

import json

import pytest

from chatbot.cli import main
from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.personas.registry import scan
from chatbot.store import Store
from chatbot.tui.conversation import ChatController

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=8)
PASTE = " ".join(f"word{i}" for i in range(400))


@pytest.fixture
def runtime(tiny_runtime):
    return tiny_runtime


@pytest.fixture
def small_budget(isolated_settings, monkeypatch):
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "300")
    return Settings()


def controller_for(settings, store, runtime):
    personas, _ = scan(settings.data_dir)
    controller = ChatController(settings, personas, personas["assistant"])
    controller.attach_store(store)
    controller.attach_runtime(runtime)
    return controller


def send(controller, text):
    reply = controller.session.send(text, GREEDY)
    reply.run()
    controller.finished(reply)
    return reply


def test_opening_another_conversation_does_not_carry_the_window(small_budget, runtime, capsys):
    with Store.open(small_budget.database_url()) as store:
        controller = controller_for(small_budget, store, runtime)
        send(controller, "hi")
        assert send(controller, PASTE).context.dropped_turns == 1  # conversation 1's window moved
        first = controller.conversation_id
        controller.new()
        send(controller, "My dog is called Rex.")
        send(controller, "What is my dog called?")
        second = controller.conversation_id
        controller.open(first)
        assert controller.session.context_for("").dropped_turns >= 1  # the UI's preview of conversation 1
        controller.open(second)
        ui = controller.session.context_for("Repeat the name of my dog.")
    assert ui.dropped_turns == 0 and "Rex" in ui.text
    assert main(["history", "context", str(second), "--json", "--message", "Repeat the name of my dog."]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["dropped_turns"], shown["prompt"]) == (0, ui.text)


def test_the_window_is_the_same_after_a_reload_and_in_history_context(small_budget, runtime, capsys):
    """Many turns through a small budget: every reply's window is stored with it, and a fresh
    session (another process) and `history context` continue from the same window."""
    with Store.open(small_budget.database_url()) as store:
        controller = controller_for(small_budget, store, runtime)
        starts = [send(controller, f"message {i} " + "word " * 30).context.dropped_turns for i in range(10)]
        assert starts[-1] > 0
        ui = controller.session.context_for("next?")
        reopened = controller_for(small_budget, store, runtime)
        reopened.open(controller.conversation_id)
        assert reopened.session.context_for("next?").prompt_ids == ui.prompt_ids
        conversation = controller.conversation_id
    assert main(["history", "context", str(conversation), "--json", "--message", "next?"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["dropped_turns"], shown["prompt"]) == (ui.dropped_turns, ui.text)


@pytest.mark.asyncio
async def test_the_chat_ui_keeps_the_window_of_the_conversation_it_shows(tmp_path):
    """The issue's repro in the real UI (Pilot, fake model: one token per character)."""
    from tui_fakes import FakeEngine, idle, make_app, make_settings, wait_for

    settings = make_settings(tmp_path).model_copy(update={"context_budget": 300})
    engine = FakeEngine()
    app = make_app(tmp_path, engine, settings=settings)
    async with app.run_test(size=(110, 34)) as pilot:
        screen = app.get_screen("chat")

        async def say(text):
            count = len(screen.log_view.messages)
            screen.composer.focus()
            screen.composer.text = text
            await pilot.press("enter")
            await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == count + 2, what=text[:20])

        async def open_item(index, first_message):
            listing = screen.sidebar.query_one("#conversations")
            listing.focus()
            listing.index = index
            await pilot.press("enter")
            await wait_for(pilot, lambda: idle(app) and screen.log_view.messages
                           and screen.log_view.messages[0].content == first_message, what=first_message)

        await wait_for(pilot, lambda: idle(app), what="model")
        await say("hi")
        await say(PASTE)
        await pilot.press("ctrl+n")
        await say("My dog is called Rex.")
        await say("What is my dog called?")
        await open_item(1, "hi")
        assert screen.status.context[2] >= 1  # conversation 1 drops turns
        await open_item(0, "My dog is called Rex.")
        await wait_for(pilot, lambda: screen.status.context is not None and screen.status.context[2] == 0,
                       what="conversation 2's own window")
        await say("Repeat the name of my dog.")
        assert screen.status.context[2] == 0 and "Rex" in engine.prompts[-1]
