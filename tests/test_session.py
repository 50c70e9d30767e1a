"""The turn protocol of ChatSession on a real SQLite file (tiny random model for speed)."""

import threading

import pytest

from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UsageError
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.schema import Persona
from chatbot.session import ChatSession
from chatbot.store import Store

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=8)


@pytest.fixture
def runtime(tiny_runtime):
    return tiny_runtime


@pytest.fixture
def store(isolated_settings):
    with Store.open(isolated_settings.database_url()) as opened:
        yield opened


PLAIN = Persona(name="assistant", display_name="Assistant")  # no control code: the model as it is


def session_for(runtime, settings, store, persona=PLAIN, conversation_id=None):
    return ChatSession(runtime, settings, InstalledPersona(persona, "shipped", None), store, conversation_id)


def test_a_turn_is_stored_with_its_stats_and_persona(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    reply = session.send("hello", GREEDY)
    text = reply.run()
    branch = store.active_branch(session.conversation_id)
    assert [m.role for m in branch] == ["user", "assistant"]
    assert branch[0].content == "hello"
    assert branch[1].content == text and branch[1].status == "complete"
    assert branch[1].persona.name == "assistant"
    assert branch[1].stats["new_tokens"] == 8


def test_user_message_is_committed_before_generation(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    reply = session.send("first words", GREEDY)
    stored = store.active_branch(session.conversation_id)  # nothing decoded yet
    assert stored[0].content == "first words" and stored[1].status == "streaming"
    reply.run()


def test_cancel_keeps_the_partial_reply_as_interrupted(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    cancel = threading.Event()
    reply = session.send("go on", GREEDY.model_copy(update={"max_new_tokens": 50}), cancel)
    for _ in reply:
        if reply.stats.new_tokens >= 3:
            cancel.set()
    stored = store.active_branch(session.conversation_id)[-1]
    assert stored.status == "interrupted" and stored.content == reply.text and reply.text


def test_regenerate_makes_a_sibling_and_branch_before_a_new_branch(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    session.send("one", GREEDY).run()
    session.send("two", GREEDY).run()
    user_two = store.active_branch(session.conversation_id)[2]
    sampled = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=8, seed=5)
    session.regenerate(user_two.id, sampled).run()
    assert len(store.siblings(store.active_branch(session.conversation_id)[-1].id)) == 2
    assert len(session.history) == 2
    session.branch_before(user_two.id)
    session.send("two, edited", GREEDY).run()
    branch = store.active_branch(session.conversation_id)
    assert [m.content for m in branch if m.role == "user"] == ["one", "two, edited"]
    assert len(store.siblings(branch[2].id)) == 2  # the old "two" is kept beside it


def test_resume_rebuilds_memory_from_the_store(runtime, isolated_settings, store):
    first = session_for(runtime, isolated_settings, store)
    first.send("remember me", GREEDY).run()
    again = session_for(runtime, isolated_settings, store, conversation_id=first.conversation_id)
    assert again.history == first.history
    context = again.context_for("next")
    assert "remember me" in context.text


def test_switching_persona_is_recorded_and_used(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    session.send("hi", GREEDY).run()
    pirate = Persona(name="pirate", control_code="Talk like a pirate.")
    session.switch_persona(InstalledPersona(pirate, "shipped", None))
    reply = session.send("hi again", GREEDY)
    reply.run()
    assert "Talk like a pirate." in reply.context.text
    record = store.conversation(session.conversation_id)
    assert [s.persona.name for s in record.persona_switches] == ["pirate"]
    assert [m.persona.name for m in record.messages if m.role == "assistant"] == ["assistant", "pirate"]


def test_empty_message_sends_nothing(runtime, isolated_settings, store):
    session = session_for(runtime, isolated_settings, store)
    with pytest.raises(UsageError):
        session.send(" \n\t", GREEDY)
    assert session.conversation_id is None and store.latest_conversation_id() is None
