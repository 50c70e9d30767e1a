"""Replay without a model: the timeline of a branch and the timing of each reply."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbot.store.records import MessageRecord
from chatbot.store.replay import DEFAULT_TOKENS_PER_S, Chunk, Switch, play, plan_reply, split_words, timeline
from test_store_support import db_path, sample_conversation, store  # noqa: F401


def reply(content: str, **stats) -> MessageRecord:
    return MessageRecord(
        id=1, parent_id=None, conversation_id=1, role="assistant", content=content, status="complete",
        stats=stats, created_at=datetime.now(timezone.utc),
    )


@given(st.text())
def test_words_join_back_exactly(text):
    assert "".join(split_words(text)) == text


def test_reply_takes_its_recorded_time():
    m = reply("one two three four five six", new_tokens=12, tokens_per_s=24.0, ttft_ms=300.0)
    chunks = plan_reply(m, speed=1.0)
    assert "".join(c.text for c in chunks) == m.content
    assert sum(c.delay_s for c in chunks) == pytest.approx(0.3 + 12 / 24.0)
    assert chunks[0].delay_s == pytest.approx(0.3 + 0.5 / 6)
    fast = plan_reply(m, speed=4.0)
    assert sum(c.delay_s for c in fast) == pytest.approx((0.3 + 0.5) / 4)


def test_reply_without_stats_uses_a_default_rate():
    chunks = plan_reply(reply("a b c d"), speed=1.0)
    assert sum(c.delay_s for c in chunks) == pytest.approx(4 / DEFAULT_TOKENS_PER_S)


def test_instant_and_bad_speed():
    assert plan_reply(reply("a b"), speed=None) == [Chunk(0.0, "a b")]
    assert plan_reply(reply(""), speed=1.0) == []
    with pytest.raises(ValueError):
        plan_reply(reply("a"), speed=0)


def test_play_writes_and_flushes_each_chunk():
    events = []
    play([Chunk(0.5, "a"), Chunk(0.0, " b")], lambda t: events.append(("w", t)), lambda: events.append("f"),
         lambda s: events.append(("s", s)))
    assert events == [("s", 0.5), ("w", "a"), "f", ("w", " b"), "f"]


def test_timeline_marks_persona_switches(store):
    ids = sample_conversation(store)
    c = store.conversation(ids["conversation"])
    items = timeline(c, store.active_branch(c.id))
    kinds = [i.__class__.__name__ if isinstance(i, Switch) else i.role for i in items]
    assert kinds == ["user", "assistant", "Switch", "user", "assistant"]
    switch = items[2]
    assert (switch.before.name, switch.after.name) == ("pirate", "assistant")
    # without the explicit record, the change of persona between replies is still shown
    bare = c.model_copy(update={"persona_switches": []})
    kinds = [i.__class__.__name__ if isinstance(i, Switch) else i.role for i in timeline(bare, store.active_branch(c.id))]
    assert kinds == ["user", "assistant", "user", "Switch", "assistant"]
