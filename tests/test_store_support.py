"""Shared fixtures and sample data for the store tests (imported by them; holds no tests)."""

from __future__ import annotations

import pytest

from chatbot.store import Store

PIRATE = {"text": "Always talk like a pirate.", "placement": "user"}
PLAIN = {"text": ""}


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "chatbot.db"


@pytest.fixture
def store(db_path):
    s = Store.open(str(db_path))
    yield s
    s.close()


def sample_conversation(store: Store) -> dict[str, int]:
    """A conversation with a regenerated reply (two branches), a persona switch, stats, a seed and
    unusual text. Returns the ids by name."""
    pirate = store.persona_version("pirate", "control", PIRATE)
    plain = store.persona_version("assistant", "control", PLAIN)
    c = store.new_conversation(None, "SmolLM2-135M-Instruct")
    u1 = store.add_user_message(c, "What is the secret word?\nIt is PINEAPPLE. 🍍 \x07\x1b[1m [b]x[/b]", None)
    r1 = store.start_reply(c, u1, pirate, {"temperature": 0.7, "top_p": 0.9}, 1234, "SmolLM2-135M-Instruct")
    store.update_reply(r1, "Arr")
    stats = {"prompt_tokens": 40, "reused_tokens": 0, "new_tokens": 9, "ttft_ms": 120.5, "tokens_per_s": 24.5}
    store.finish_reply(r1, "Arr, the secret word be PINEAPPLE!", "complete", {**stats, "dropped_turns": 0})
    r2 = store.start_reply(c, u1, pirate, {"temperature": 1.0}, 99, "SmolLM2-135M-Instruct")
    store.finish_reply(r2, "Arr, PINEAPPLE it be.", "complete", stats)
    sw = store.record_persona_switch(c, plain)
    u2 = store.add_user_message(c, "Now answer plainly.", r2)
    r3 = store.start_reply(c, u2, plain, {}, None, "SmolLM2-135M-Instruct")
    store.finish_reply(r3, "The secret word is PINEAPPLE", "interrupted", {"new_tokens": 6, "tokens_per_s": 30.0})
    return dict(conversation=c, pirate=pirate, plain=plain, u1=u1, r1=r1, r2=r2, switch=sw, u2=u2, r3=r3)
