"""The rolling summary (issue 14, off by default): written by the model between turns from the
dropped turns, stored in memory_summaries, first in the memory block, shown by `history context`,
dropped when a message of the conversation is forgotten. The tiny random model writes it (its text
is never checked); the real store and CLI."""

from __future__ import annotations

from chatbot.cli import main
from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.summary import HEADING, message_ids, update_summary
from chatbot.personas.registry import find
from chatbot.session import ChatSession
from chatbot.store import Store
from test_memory_recall import FILLER, stored

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=4)


def test_the_summary_is_written_between_turns_shown_and_forgotten(isolated_settings, tiny_runtime, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "384")
    monkeypatch.setenv("CHATBOT_MEMORY_SUMMARY", "1")
    monkeypatch.setattr("chatbot.memory.summary.SUMMARY_TOKENS", 12)  # the tiny model writes noise: a short one
    settings = Settings()
    assert settings.memory_summary and not Settings.model_fields["memory_summary"].default
    with Store.open(settings.database_url()) as store:
        conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER[:16])
        session = ChatSession(tiny_runtime, settings, find("assistant", settings.data_dir), store, conversation)
        assert update_summary(session) and not update_summary(session)  # nothing new dropped the second time
        dropped = session.history[: session.context_for("?").dropped_turns]
        through, text = store.memory_summary(conversation, message_ids(dropped))
        assert through == message_ids(dropped)[-1] and text.strip()
        reply = session.send("What is my name?", GREEDY)
        reply.run()
        session.settle()  # the background update: the window moved no further, so nothing new
        summary = reply.context.recalled[0]
        assert (summary.source, summary.text) == ("summary", text) and f"{HEADING}\n- " in reply.context.text
        assert store.recalled_of(reply.message_id)[0] == {
            "source": "summary", "message_id": None, "conversation_id": None, "text": text, "heading": HEADING}
        assert any(p.message_id == store.active_branch(conversation)[0].id for p in reply.context.recalled)
        fact = store.active_branch(conversation)[0].id
    assert main(["history", "context", str(conversation)]) == 0
    assert "#   summary: " in capsys.readouterr().out
    assert main(["history", "forget", str(fact)]) == 0
    with Store.open(settings.database_url()) as store:
        assert store.memory_summary(conversation, message_ids(dropped)) is None
        assert all(i["source"] != "summary" for i in store.recalled_of(reply.message_id))
