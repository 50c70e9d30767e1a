"""Prefix reuse with recall on (issue 14): once a reply is finished, an interactive session
prefills the next turn's stable prefix (memory/warm.py), so the next send prefills only its memory
block and its message. Token counts of the real engine over the tiny random model."""

from __future__ import annotations

from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.personas.registry import find
from chatbot.session import ChatSession
from chatbot.store import Store

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=4)


def test_with_warm_up_only_the_block_and_the_message_are_prefilled(isolated_settings, tiny_runtime, monkeypatch):
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "192")
    settings = Settings()
    persona = find("assistant", settings.data_dir)
    with Store.open(settings.database_url()) as store:
        session = ChatSession(tiny_runtime, settings, persona, store)
        session.warm_between_turns = True
        replies = []
        for i in range(10):
            reply = session.send(f"Remember the castle number {i} please, castle {i}.", GREEDY)
            reply.run()
            session.settle()
            assert session.warmer is not None and session.warmer.error is None
            replies.append(reply)
    recalled = 0
    for reply in replies[1:]:
        context = reply.context
        stable = session.builder.stable_prefix(context)
        assert context.prompt_ids[: len(stable)] == stable
        # everything before the latest message came from the cache, also where the window moved
        assert reply.stats.reused_tokens == len(stable)
        fresh = reply.stats.prompt_tokens - reply.stats.reused_tokens
        message_tokens = len(session.builder.encode_content(context.message))
        assert fresh <= message_tokens + 8  # the message (with its block) and the template's few closing tokens
        if context.recalled:
            recalled += 1
            assert context.memory_tokens > 0 and fresh >= context.memory_tokens
    assert recalled >= 3


def test_a_session_without_warm_up_starts_none(isolated_settings, tiny_runtime):
    settings = Settings()
    session = ChatSession(tiny_runtime, settings, find("assistant", settings.data_dir), None)
    session.send("Hello there.", GREEDY).run()
    session.settle()
    assert session.warmer is None
