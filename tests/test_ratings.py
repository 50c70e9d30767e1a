"""Rating replies: `history rate`, stored per message, shown, exported and imported."""

from __future__ import annotations

import json

import pytest
from test_history_cli import run
from test_store_support import sample_conversation

from chatbot.store import Store


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "rate.db"
    with Store.open(str(path)) as store:
        ids = sample_conversation(store)
    return path, ids


def test_rate_shows_and_clears(db):
    path, ids = db
    code, _, err = run(path, "history", "rate", str(ids["r2"]), "good")
    assert code == 0 and f"message {ids['r2']}: rated good" in err
    assert run(path, "history", "rate", str(ids["r3"]), "BAD")[0] == 0
    code, out, _ = run(path, "history", "show", "1")
    assert "rated good" in out and "rated bad" in out
    messages = {m["id"]: m for m in json.loads(run(path, "history", "show", "1", "--json")[1])["messages"]}
    assert messages[ids["r2"]]["rating"] == "good" and messages[ids["r3"]]["rating"] == "bad"
    assert messages[ids["r1"]]["rating"] is None
    assert run(path, "history", "rate", str(ids["r2"]), "none")[0] == 0
    with Store.open(str(path)) as store:
        assert [m.id for m in store.rated_replies("good")] == []
        assert [m.id for m in store.rated_replies("bad", [ids["conversation"]])] == [ids["r3"]]
        assert store.rated_replies("bad", [ids["conversation"] + 1]) == []


@pytest.mark.parametrize(
    "args, status, expected",
    [
        (["{r2}", "great"], 2, "a rating is good, bad or none"),
        (["{u1}", "good"], 1, "only replies are rated"),
        (["999", "good"], 1, "no message with id 999"),
        (["0", "good"], 1, "no message with id 0"),
        (["x", "good"], 2, "Invalid value"),
    ],
)
def test_a_bad_rating_is_one_line_and_changes_nothing(db, args, status, expected):
    path, ids = db
    code, _, err = run(path, "history", "rate", *(a.format(**ids) for a in args))
    assert code == status and expected in err
    with Store.open(str(path)) as store:
        assert all(m.rating is None for m in store.conversation(ids["conversation"]).messages)


def test_ratings_travel_with_an_export(db, tmp_path):
    path, ids = db
    run(path, "history", "rate", str(ids["r1"]), "bad")
    run(path, "history", "rate", str(ids["r2"]), "good")
    export = tmp_path / "c.json"
    assert run(path, "history", "export", "1", "--format", "json", "-o", str(export))[0] == 0
    doc = json.loads(export.read_text())
    assert [m["rating"] for m in doc["conversation"]["messages"] if m["role"] == "assistant"] == ["bad", "good", None]
    new_id = int(run(path, "history", "import", str(export))[1])
    with Store.open(str(path)) as store:
        ratings = [m.rating for m in store.conversation(new_id).messages if m.role == "assistant"]
    assert ratings == ["bad", "good", None]
    doc["conversation"]["messages"][1]["rating"] = "meh"  # a damaged export is refused, with the field named
    export.write_text(json.dumps(doc))
    code, _, err = run(path, "history", "import", str(export))
    assert code == 1 and "conversation.messages.1.rating" in err
