"""Export/import: lossless JSON round trip, malformed files refused with nothing written, Markdown."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import NotFoundError, UserError
from chatbot.store import exchange
from test_store_support import db_path, sample_conversation, store  # noqa: F401


def normalized(doc: exchange.ExportDocument) -> dict:
    """The document with ids replaced by positions (an import assigns new ids)."""
    data = doc.model_dump(mode="json")
    data.pop("exported_at")
    c = data["conversation"]
    position = {m["id"]: i for i, m in enumerate(c["messages"])}
    c.pop("id")
    for m in c["messages"]:
        m["id"] = position[m["id"]]
        m["parent_id"] = position.get(m["parent_id"])
        m.pop("conversation_id")
    for s in c["persona_switches"]:
        s.pop("id")
        s["after_message_id"] = position.get(s["after_message_id"])
    return data


def test_json_round_trip_is_identical(store):
    ids = sample_conversation(store)
    doc = store.export_conversation(ids["conversation"])
    text = exchange.to_json(doc)
    new_id = store.import_conversation(exchange.parse_document(text, "x.json"))
    assert new_id != ids["conversation"]
    again = store.export_conversation(new_id)
    assert normalized(again) == normalized(doc)
    assert {p.name for p in again.personas} == {"pirate", "assistant"}
    # the imported copy behaves like the original: same active branch, same search hits
    assert [m.content for m in store.active_branch(new_id)] == [
        m.content for m in store.active_branch(ids["conversation"])
    ]
    assert {h.conversation_id for h in store.search("pineapple")} == {ids["conversation"], new_id}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(title=st.text(max_size=80), contents=st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_any_text_survives_export_and_import(store, title, contents):
    c = store.new_conversation(title or None, "m")
    parent = None
    for text in contents:
        parent = store.add_user_message(c, text, parent)
    doc = store.export_conversation(c)
    copy = store.import_conversation(exchange.parse_document(exchange.to_json(doc).encode(), "x"))
    assert normalized(store.export_conversation(copy)) == normalized(doc)


def _valid_export(store) -> dict:
    return json.loads(exchange.to_json(store.export_conversation(sample_conversation(store)["conversation"])))


def _break_parent(d):
    d["conversation"]["messages"][1]["parent_id"] = 999


def _break_hash(d):
    d["personas"][0]["definition"]["text"] = "tampered"


def _break_role(d):
    d["conversation"]["messages"][0]["role"] = "wizard"


def _drop_title(d):
    del d["conversation"]["title"]


def _huge_seed(d):
    d["conversation"]["messages"][1]["seed"] = 2**70


def _unknown_persona(d):
    d["personas"].pop(0)


@pytest.mark.parametrize(
    "breaker, expected",
    [
        (_break_parent, "conversation.messages.1.parent_id"),
        (_break_hash, "personas.0.hash does not match"),
        (_break_role, "conversation.messages.0.role"),
        (_drop_title, "conversation.title"),
        (_huge_seed, "conversation.messages.1.seed"),
        (_unknown_persona, "is not among the document's personas"),
    ],
)
def test_malformed_document_is_refused_and_nothing_written(store, tmp_path, breaker, expected):
    data = _valid_export(store)
    breaker(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    before = store.list_conversations()
    with pytest.raises(UserError) as err:
        exchange.read_document(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message
    assert store.list_conversations() == before


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a conversation export"),
        (b'{"format": "something-else", "version": 1}', "format"),
        (b"\xff\xfe garbage", "not a conversation export"),
    ],
)
def test_not_an_export(tmp_path, content, expected):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected):
        exchange.read_document(path)


def test_missing_file(tmp_path):
    with pytest.raises(NotFoundError, match="no such file"):
        exchange.read_document(tmp_path / "nope.json")


def test_markdown_is_readable(store):
    ids = sample_conversation(store)
    doc = store.export_conversation(ids["conversation"])
    md = exchange.render_markdown(doc, store.active_branch(ids["conversation"]))
    assert md.startswith("# What is the secret word?\n")
    assert "## Assistant · pirate (control, " in md
    assert "*persona switched to assistant (control, " in md
    assert "The secret word is PINEAPPLE" in md and "· interrupted" in md
    assert "1 message(s) on other branches" in md


# --- numbers SQLite and JSON cannot hold, texts no command could show ------------------------------


def _raw_edit(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('"temperature": 0.7', '"temperature": 1e999'), "conversation.messages.1.settings.temperature is inf"),
        (('"ttft_ms": 120.5', '"ttft_ms": NaN'), "conversation.messages.1.stats.ttft_ms is nan"),
        (('"tokens_per_s": 24.5', '"tokens_per_s": -Infinity'), "stats.tokens_per_s is -inf"),
        (('"top_p": 0.9', '"top_p": [1, {"x": NaN}]'), "settings.top_p.1.x is nan"),
        (('"title": "What is the secret word?"', '"title": "' + "t" * 1_000_001 + '"'), "conversation.title is 1,000,001"),
        (('"model": "SmolLM2-135M-Instruct"', '"model": "' + "m" * 5_000 + '"'), "conversation.model is 5,000"),
        (('"top_p": 0.9', '"top_p": "' + "s" * 70_000 + '"'), "conversation.messages.1.settings is"),
    ],
    ids=["infinite setting", "NaN stat", "-inf stat", "NaN nested", "huge title", "huge model", "huge settings"],
)
def test_unstorable_values_are_refused(store, tmp_path, edit, expected):
    text = _raw_edit(json.dumps(_valid_export(store)), *edit)
    before = store.list_conversations()
    with pytest.raises(UserError) as err:
        exchange.parse_document(text, "doc.json")
    message = str(err.value)
    assert expected in message and "nothing imported" in message and "\n" not in message, message
    assert store.list_conversations() == before


def test_an_infinite_persona_setting_is_refused(store):
    data = _valid_export(store)
    text = _raw_edit(json.dumps(data), '"definition": {', '"definition": {"temperature": Infinity, ')
    with pytest.raises(UserError, match=r"personas\.0\.definition\.temperature is inf"):
        exchange.parse_document(text, "doc.json")


def test_a_huge_message_is_refused_by_import_and_by_the_store(store, monkeypatch):
    from chatbot.store import limits

    monkeypatch.setattr(limits, "MESSAGE_MAX_CHARS", 1_000)  # the same check, without 16 MB of text
    data = _valid_export(store)
    data["conversation"]["messages"][0]["content"] = "x" * 1_001
    with pytest.raises(UserError, match=r"messages\.0\.content is 1,001 characters long \(at most 1,000\)"):
        exchange.parse_document(json.dumps(data), "doc.json")
    c = store.new_conversation(None, "m")
    with pytest.raises(UserError, match="the message is 1,001 characters long.*nothing was saved"):
        store.add_user_message(c, "x" * 1_001, None)
    with pytest.raises(UserError, match="the title is 1,001 characters long"):
        store.rename_conversation(c, "t" * 1_001)
    assert store.conversation(c).messages == [] and store.conversation(c).title is None


def test_the_limits_keep_every_stored_conversation_importable(store):
    """What the chatbot stores itself imports back: the longest title and message it accepts."""
    from chatbot.store import limits

    c = store.new_conversation("t" * limits.TITLE_MAX_CHARS, "m" * limits.MODEL_NAME_MAX_CHARS)
    store.add_user_message(c, "a long paste " * 100_000, None)
    doc = exchange.parse_document(exchange.to_json(store.export_conversation(c)), "doc.json")
    assert normalized(store.export_conversation(store.import_conversation(doc))) == normalized(doc)
