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
