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
