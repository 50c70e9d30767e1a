"""The Store API the chat side uses: personas, conversations, the message tree, replies, titles."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import NotFoundError
from chatbot.store import Store, persona_hash
from chatbot.store.repository import derive_title
from test_store_support import PIRATE, db_path, sample_conversation, store  # noqa: F401


def test_new_file_is_private(db_path, store):
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    for side in ("-wal", "-shm"):
        extra = db_path.with_name(db_path.name + side)
        if extra.exists():
            assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0


def test_sqlite_pragmas(store):
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_persona_versions_are_content_addressed(store):
    a = store.persona_version("pirate", "control", PIRATE)
    assert store.persona_version("pirate", "control", dict(reversed(list(PIRATE.items())))) == a
    assert store.persona_version("pirate", "control", {**PIRATE, "text": "Yo ho"}) != a
    assert store.persona_version("pirate", "soft_prompt", PIRATE) != a
    canonical = json.dumps(PIRATE, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert persona_hash(PIRATE) == hashlib.sha256(canonical.encode()).hexdigest()


def test_conversation_tree_and_active_branch(store):
    ids = sample_conversation(store)
    c = ids["conversation"]
    branch = store.active_branch(c)
    # the regenerated reply (r2) is newer than r1, so the active branch goes through it
    assert [m.id for m in branch] == [ids["u1"], ids["r2"], ids["u2"], ids["r3"]]
    assert [m.id for m in store.active_branch(c, ids["r1"])] == [ids["u1"], ids["r1"]]
    assert [m.id for m in store.siblings(ids["r1"])] == [ids["r1"], ids["r2"]]
    assert [m.id for m in store.siblings(ids["u1"])] == [ids["u1"]]
    record = store.conversation(c)
    assert record.title == "What is the secret word?"
    assert len(record.messages) == 5
    r1 = next(m for m in record.messages if m.id == ids["r1"])
    assert r1.persona.name == "pirate" and r1.persona.kind == "control" and len(r1.persona.hash) == 64
    assert r1.settings == {"temperature": 0.7, "top_p": 0.9} and r1.seed == 1234
    assert r1.stats == {
        "prompt_tokens": 40, "reused_tokens": 0, "new_tokens": 9, "ttft_ms": 120.5, "tokens_per_s": 24.5,
        "dropped_turns": 0,
    }
    assert r1.status == "complete" and r1.model == "SmolLM2-135M-Instruct" and r1.finished_at is not None
    assert record.persona_switches[0].after_message_id == ids["r2"]
    assert record.persona_switches[0].persona.name == "assistant"


def test_streaming_reply_is_flushed(store):
    c = store.new_conversation("t", "m")
    u = store.add_user_message(c, "hi", None)
    r = store.start_reply(c, u, None, {}, None, "m")
    assert store.active_branch(c)[-1].status == "streaming"
    store.update_reply(r, "partial te")
    # another connection (as another process would) sees the flushed text
    with Store.open(str(store.location.path)) as other:
        last = other.active_branch(c)[-1]
        assert (last.content, last.status) == ("partial te", "streaming")  # a live writer is spared
    store.finish_reply(r, "partial text", "interrupted", {})
    assert store.active_branch(c)[-1].status == "interrupted"
    with pytest.raises(ValueError):
        store.finish_reply(r, "x", "streaming", {})


def test_unknown_ids(store):
    with pytest.raises(NotFoundError, match="no conversation with id 42"):
        store.conversation(42)
    with pytest.raises(NotFoundError):
        store.add_user_message(42, "hi", None)
    with pytest.raises(NotFoundError):
        store.active_branch(42)
    c = store.new_conversation(None, "m")
    other = store.new_conversation(None, "m")
    u = store.add_user_message(other, "hi", None)
    with pytest.raises(ValueError):
        store.add_user_message(c, "parent from elsewhere", u)


def test_latest_conversation_and_list(store):
    assert store.latest_conversation_id() is None
    a = store.new_conversation(None, "m")
    b = store.new_conversation(None, "m")
    assert store.latest_conversation_id() == b
    store.add_user_message(a, "back to the first", None)
    assert store.latest_conversation_id() == a
    rows = store.list_conversations()
    assert [r.id for r in rows] == [a, b] and rows[0].message_count == 1
    assert [r.id for r in store.list_conversations(limit=1)] == [a]
    store.rename_conversation(b, "renamed")
    store.delete_conversation(a)
    assert [(r.id, r.title) for r in store.list_conversations()] == [(b, "renamed")]


def test_title_derivation():
    assert derive_title("\n\n  hello   world \nsecond") == "hello world"
    long = "word " * 30
    title = derive_title(long)
    assert len(title) <= 61 and title.endswith("…") and "\n" not in title
    assert derive_title("") == ""


def test_in_memory_url():
    with Store.open("sqlite://") as s:
        c = s.new_conversation(None, "m")
        s.add_user_message(c, "hello", None)
        assert s.search("hello")[0].conversation_id == c


text_any = st.text(max_size=300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=text_any.filter(lambda t: t.strip()), content=text_any)
def test_any_text_round_trips(store, title, content):
    c = store.new_conversation(title, "m")
    u = store.add_user_message(c, content, None)
    r = store.start_reply(c, u, None, {"note": content}, None, "m")
    store.finish_reply(r, content[::-1], "complete", {})
    record = store.conversation(c)
    assert record.title == title
    assert [m.content for m in record.messages] == [content, content[::-1]]
    assert record.messages[1].settings == {"note": content}
    store.rename_conversation(c, content or "x")
    assert store.conversation(c).title == (content or "x")
