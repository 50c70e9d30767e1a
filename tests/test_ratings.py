"""Rating replies: `history rate`, stored per message, shown, exported and imported."""

from __future__ import annotations

import json

import pytest
from test_history_cli import run
from test_persona_support import run_cli, tiny_dir, tokenizer  # noqa: F401
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


# -- learning from use: persona train --from-history ------------------------------------------------


def liked_history(path) -> dict[str, int]:
    """A conversation with the persona 'mara': an opening, four answered turns; replies 1, 3 and 4
    liked, reply 2 disliked; and one liked reply of another persona elsewhere."""
    definition = {"name": "mara", "kind": "control_code", "control_code": "You are Mara."}
    ids = {}
    with Store.open(str(path)) as store:
        mara = store.persona_version("mara", "control_code", definition)
        other = store.persona_version("pirate", "control_code", {"name": "pirate"})
        c = store.new_conversation(None, "tiny")
        (opening,) = store.add_openings(c, ["*Mara waves.* Welcome aboard."], mara, "tiny")
        parent = opening
        turns = [("Where are we going?", "Port Hallow, deckhand."), ("Why?", "Don't ask why."),
                 ("Can I steer?", "Not in this lifetime."), ("What now?", "Swab the deck, deckhand.")]
        for n, (question, answer) in enumerate(turns, start=1):
            user, reply = store.add_turn(c, question, parent, mara, {}, None, "tiny")
            store.finish_reply(reply, answer, "complete", {"dropped_turns": 0})
            ids[f"r{n}"], parent = reply, reply
        for name, rating in (("r1", "good"), ("r2", "bad"), ("r3", "good"), ("r4", "good")):
            store.rate(ids[name], rating)
        c2 = store.new_conversation(None, "tiny")
        _, elsewhere = store.add_turn(c2, "Ahoy?", None, other, {}, None, "tiny")
        store.finish_reply(elsewhere, "Arr!", "complete", {})
        store.rate(elsewhere, "good")
        ids.update(conversation=c, elsewhere=elsewhere)
    return ids


def test_train_from_history_uses_liked_replies_only_and_continues(tiny_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "h.db"
    ids = liked_history(db)
    args = ["--model", str(tiny_dir), "--db", str(db), "persona", "train", "mara-soft", "--from-history",
            "--replies-of", "mara", "--virtual-tokens", "4", "--steps", "2", "--batch-size", "2", "--heldout", "0.34"]
    assert run_cli(args) == 0, capsys.readouterr().err
    folder = tmp_path / "data" / "personas" / "mara-soft"
    record = json.loads((folder / "soft_prompt" / "training.json").read_text())
    used = record["from_history"]
    liked = {ids["r1"], ids["r3"], ids["r4"]}
    assert set(used["train_message_ids"]) | set(used["heldout_message_ids"]) == liked
    assert len(used["heldout_message_ids"]) == 1 and not used["continued"]
    assert record["heldout_loss_init"] > 0 and record["heldout_loss_best"] <= record["heldout_loss_init"]
    lines = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    assert [line["meta"]["message_id"] for line in lines] == sorted(liked)
    # each line: the stored context (opening first), every other reply as history only
    last = lines[-1]["messages"]
    assert last[0] == {"role": "assistant", "content": "*Mara waves.* Welcome aboard.", "target": False}
    assert {"role": "assistant", "content": "Don't ask why.", "target": False} in last
    targets = [m["content"] for line in lines for m in line["messages"] if m["role"] == "assistant" and m.get("target", True)]
    assert "Don't ask why." not in targets and len(targets) == 3
    assert f"held out [{used['heldout_message_ids'][0]}]" in capsys.readouterr().err
    # again: it continues from the soft prompt it made (the held-out loss starts where it ended)
    assert run_cli(args) == 0
    again = json.loads((folder / "soft_prompt" / "training.json").read_text())
    assert again["from_history"]["continued"]
    assert again["heldout_loss_init"] == pytest.approx(record["heldout_loss_best"], rel=1e-4)


def test_train_from_history_needs_liked_replies(tiny_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "h.db"
    ids = liked_history(db)
    base = ["--model", str(tiny_dir), "--db", str(db), "persona", "train"]
    assert run_cli([*base, "pirate-soft", "--from-history", "--replies-of", "pirate"]) == 1
    assert "1 liked reply of pirate, pirate-soft in the history: at least 2" in capsys.readouterr().err
    assert run_cli([*base, "x", "--from-history", "--replies-of", "mara", "--conversation", "99"]) == 1
    assert "no conversation with id 99" in capsys.readouterr().err
    assert run_cli([*base, "x", "--from-history", "--data", "f.jsonl"]) == 2
    assert run_cli([*base, "pirate", "--from-history"]) == 1  # a control-code persona
    assert "--replies-of pirate" in capsys.readouterr().err
    assert not (tmp_path / "data" / "personas").exists()


# -- the TUI: a key on the selected reply ---------------------------------------------------------


@pytest.mark.asyncio
async def test_tui_rates_the_selected_reply_and_shows_it(tmp_path):
    from tui_fakes import idle, make_app, wait_for

    app = make_app(tmp_path)
    async with app.run_test(size=(110, 34)) as pilot:
        screen = app.get_screen("chat")
        await wait_for(pilot, lambda: idle(app), what="model")
        for text in ("first", "second"):
            screen.composer.focus()
            screen.composer.text = text
            await pilot.press("enter")
            await wait_for(pilot, lambda: not screen.busy and screen.log_view.messages[-1].status == "complete",
                           what="reply")
        first, last = [m for m in screen.log_view.messages if m.role == "assistant"]
        await pilot.press("alt+g")  # nothing selected: the last reply
        await wait_for(pilot, lambda: last.rating == "good", what="rated")
        assert "✓ good" in str(last.query_one(".header").render())
        await pilot.press("alt+up", "alt+up", "alt+b")  # the first reply, selected
        await wait_for(pilot, lambda: first.rating == "bad", what="rated bad")
        assert "✗ bad" in str(first.query_one(".header").render())
        await pilot.press("alt+b")  # again: cleared
        await wait_for(pilot, lambda: first.rating is None, what="cleared")
        assert "bad" not in str(first.query_one(".header").render())
    with Store.open(app.controller.settings.database_url()) as store:
        replies = [m for m in store.active_branch(store.latest_conversation_id()) if m.role == "assistant"]
    assert [m.rating for m in replies] == [None, "good"]
    # opened again, the rating is shown
    app = make_app(tmp_path, resume="last")
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        screen = app.get_screen("chat")
        await wait_for(pilot, lambda: len(screen.log_view.messages) == 4, what="conversation")
        assert screen.log_view.messages[-1].rating == "good"


def test_a_liked_reply_trains_in_its_stored_context_with_what_memory_recalled(tmp_path, smol_tokenizer):
    from chatbot.personas.data import Encoder
    from chatbot.personas.from_history import liked_replies
    from chatbot.personas.schema import Persona

    db = tmp_path / "h.db"
    ids = liked_history(db)
    with Store.open(str(db)) as store:
        store.record_recalled(ids["r3"], [{"source": "lorebook", "message_id": None, "conversation_id": None,
                                           "text": "The Kestrel is a brass airship.", "heading": "World info:"}])
        liked = {item.message_id: item for item in liked_replies(store, {"mara"})}
    assert sorted(liked) == sorted([ids["r1"], ids["r3"], ids["r4"]])
    encoder = Encoder(smol_tokenizer, 512)
    student = Persona(name="mara-soft")
    prompt = smol_tokenizer.decode(encoder.encode(student, liked[ids["r3"]].example).prompt_ids)
    assert "World info:\n- The Kestrel is a brass airship." in prompt
    assert prompt.index("Welcome aboard.") < prompt.index("Don't ask why.") < prompt.index("Can I steer?")
    assert "brass airship" not in smol_tokenizer.decode(encoder.encode(student, liked[ids["r4"]].example).prompt_ids)
