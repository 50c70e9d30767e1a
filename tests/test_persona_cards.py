"""`persona import` of Tavern character cards (V2, V3) from JSON, PNG and CHARX, the mapping onto
a persona, opening messages in a new conversation, and `persona export --format card`."""

from __future__ import annotations

import copy
import json
import re

import pytest
from card_files import REAL_WORLD_V2, b64, card_png, charx, png, text_chunk, v3
from test_persona_support import run_cli, tiny_dir, tokenizer  # noqa: F401

from chatbot.engine.sampling import SamplingParams
from chatbot.personas.registry import find
from chatbot.session import ChatSession
from chatbot.store import Store


@pytest.fixture
def data_dir(isolated_settings, monkeypatch):
    monkeypatch.setenv("CHATBOT_USER_NAME", "Ann")
    return isolated_settings.data_dir


def import_file(tmp_path, name: str, content: bytes, *args: str) -> int:
    path = tmp_path / name
    path.write_bytes(content)
    return run_cli(["persona", "import", str(path), *args])


def test_a_real_world_v2_card_maps_onto_a_persona(tmp_path, data_dir, capsys):
    assert import_file(tmp_path, "mara.json", json.dumps(REAL_WORLD_V2).encode()) == 0
    installed = find("captain-mara-voss", data_dir)
    p = installed.persona
    assert p.display_name == "Captain Mara Voss" and p.kind == "control_code" and p.placement == "system"
    code = p.control_code
    # description, personality, scenario in order; names substituted everywhere
    assert code.index("airship *Kestrel*") < code.index("personality: gruff") < code.index("Scenario: Ann has just")
    assert "{{" not in code and "calls Ann 'deckhand'" in code
    assert "Ann: Where are we headed?\nCaptain Mara Voss: *taps the map*" in code  # example dialogue
    assert p.post_history == "Stay in character as Captain Mara Voss; answer in at most three sentences."
    assert p.first_messages[0].startswith("*Captain Mara Voss looks Ann up and down.*")
    assert len(p.first_messages) == 3 and p.greeting == p.first_messages[0]
    # the original card is kept byte for byte, the lorebook beside it
    assert (installed.folder / p.source_card).read_bytes() == json.dumps(REAL_WORLD_V2).encode()
    book = json.loads((installed.folder / p.lorebook).read_text())
    assert len(book["entries"]) == 5 and "Captain Mara Voss's old rival" in book["entries"][2]["content"]
    err = capsys.readouterr().err
    assert "a lorebook of 5 entries" in err and re.search(r"the card's text takes \d+ tokens of every prompt", err)


def test_example_dialogue_stays_within_its_budget(tmp_path, data_dir, capsys):
    assert import_file(tmp_path, "mara.json", json.dumps(REAL_WORLD_V2).encode(), "--example-tokens", "30") == 0
    code = find("captain-mara-voss", data_dir).persona.control_code
    assert "Where are we headed?" in code and "Can I steer?" not in code  # whole blocks, in order
    assert "example dialogue: kept 1 of 3 blocks" in capsys.readouterr().err


@pytest.mark.parametrize("container", ["v3-json", "png-chara", "png-ccv3", "charx"])
def test_every_container_gives_the_same_persona(tmp_path, data_dir, container):
    card3 = v3(nickname="Mara")
    files = {
        "v3-json": ("mara.json", json.dumps(card3).encode()),
        "png-chara": ("mara.png", card_png(REAL_WORLD_V2)),
        "png-ccv3": ("mara.png", png(text_chunk("chara", b64(REAL_WORLD_V2)), text_chunk("ccv3", b64(card3)))),
        "charx": ("mara.charx", charx(card3, {"assets/icon/images/main.png": png()})),
    }
    name, content = files[container]
    assert import_file(tmp_path, name, content, "--name", "mara") == 0
    persona = find("mara", data_dir).persona
    char = "Captain Mara Voss" if container == "png-chara" else "Mara"  # V3's nickname is {{char}}; ccv3 wins
    assert persona.first_messages[0].startswith(f"*{char} looks Ann up and down.*")
    assert persona.lorebook == "lorebook.json"
    assert (find("mara", data_dir).folder / persona.source_card).read_bytes() == content


def test_export_writes_a_v2_card_that_imports_again(tmp_path, data_dir, capsys):
    assert import_file(tmp_path, "mara.charx", charx(v3())) == 0
    out = tmp_path / "out.json"
    assert run_cli(["persona", "export", "captain-mara-voss", "--format", "card", "-o", str(out)]) == 0
    card = json.loads(out.read_text())
    assert card["spec"] == "chara_card_v2" and "assets" not in card["data"]
    assert card["data"]["character_book"]["entries"][0]["keys"] == ["Kestrel", "airship"]
    assert card["data"]["first_mes"] == REAL_WORLD_V2["data"]["first_mes"]  # the original, unsubstituted
    assert run_cli(["persona", "import", str(out), "--name", "again"]) == 0
    assert find("again", data_dir).persona.control_code == find("captain-mara-voss", data_dir).persona.control_code
    # a persona made here: its control code becomes the system prompt
    capsys.readouterr()
    assert run_cli(["persona", "export", "pirate"]) == 0
    shipped = json.loads(capsys.readouterr().out)
    assert shipped["data"]["system_prompt"] == find("pirate", data_dir).persona.control_code


def test_import_refuses_to_replace_without_force(tmp_path, data_dir, capsys):
    content = json.dumps(REAL_WORLD_V2).encode()
    assert import_file(tmp_path, "a.json", content) == 0
    assert import_file(tmp_path, "a.json", content) == 1
    assert "already exists" in capsys.readouterr().err
    assert import_file(tmp_path, "a.json", content, "--force") == 0


def test_a_new_conversation_opens_with_the_first_message(tmp_path, data_dir, isolated_settings, tiny_runtime):
    assert import_file(tmp_path, "mara.json", json.dumps(REAL_WORLD_V2).encode()) == 0
    installed = find("captain-mara-voss", data_dir)
    with Store.open(isolated_settings.database_url()) as store:
        session = ChatSession(tiny_runtime, isolated_settings, installed, store)
        reply = session.send("Where do I sleep?", SamplingParams(temperature=0, max_new_tokens=4))
        reply.run()
        prompt = reply.context.text
        branch = store.active_branch(session.conversation_id)
        assert [m.role for m in branch] == ["assistant", "user", "assistant"]
        assert branch[0].content == installed.persona.first_messages[0]
        assert [m.content for m in store.siblings(branch[0].id)] == list(installed.persona.first_messages)
        # the model saw the opening, then the post-history note right before the message
        opening = prompt.index("looks Ann up and down")
        note = prompt.index("Stay in character as Captain Mara Voss")
        assert opening < note < prompt.index("Where do I sleep?")
        # reopened from the store, the same history
        again = ChatSession(tiny_runtime, isolated_settings, installed, store, session.conversation_id)
        assert again.history[0].user == "" and again.history[0].reply == branch[0].content



def test_an_imported_card_distills_into_a_soft_prompt(tmp_path, data_dir, tiny_dir, capsys):  # noqa: F811
    card = tmp_path / "mara.json"
    card.write_text(json.dumps(REAL_WORLD_V2))
    model = ["--model", str(tiny_dir)]
    assert run_cli([*model, "persona", "import", str(card), "--name", "mara"]) == 0
    assert run_cli([*model, "persona", "distill", "mara", "--limit", "4", "--max-new-tokens", "6", "--steps", "2",
                    "--virtual-tokens", "4", "--batch-size", "2"]) == 0, capsys.readouterr().err
    soft = find("mara-soft", data_dir)
    teacher = find("mara", data_dir).persona
    assert soft.persona.first_messages == teacher.first_messages and soft.persona.post_history == ""
    assert (soft.folder / "lorebook.json").read_text() == (find("mara", data_dir).folder / "lorebook.json").read_text()
    record = json.loads((soft.folder / "soft_prompt" / "training.json").read_text())
    # the card's text (hundreds of tokens) against 4 virtual tokens
    assert record["prompt_tokens_saved"] > 150 and record["teacher_post_history"] == teacher.post_history
    capsys.readouterr()
    assert run_cli([*model, "persona", "show", "mara-soft", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training"]["prompt_tokens_saved"] == record["prompt_tokens_saved"]
    assert run_cli([*model, "persona", "eval", "mara-soft", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert None not in (result["nll_none"], result["nll_control_code"], result["nll_soft_prompt"])
    # the training card carries the same figures, attribution without the card itself
    ev = record["evaluation"]
    assert (ev["nll_none"], ev["nll_teacher_text"], ev["nll_soft_prompt"]) == pytest.approx(
        (result["nll_none"], result["nll_control_code"], result["nll_soft_prompt"]), abs=1e-3)
    assert ev["soft_vs_text"] == pytest.approx(ev["nll_soft_prompt"] / ev["nll_teacher_text"] - 1, abs=1e-3)
    assert ev["attribution_leaves_out"] == "mara" and "mara" not in ev["attribution_candidates"]
    assert "mara-soft" in ev["attribution_candidates"] and sum(ev["attributed_to"].values()) == ev["n_heldout_replies"]
    assert ev["teacher_prompt_tokens"] == record["prompt_tokens_saved"] + 4 and ev["fewer_prompt_tokens"] > 0.95
    # --resume after a finished run: the teacher's replies again, the training afresh
    data = (soft.folder / "data.jsonl").read_text()
    assert run_cli([*model, "persona", "distill", "mara", "--resume", "--limit", "4", "--steps", "1",
                    "--virtual-tokens", "4", "--batch-size", "2"]) == 0, capsys.readouterr().err
    again = json.loads((soft.folder / "soft_prompt" / "training.json").read_text())
    assert again["teacher_seconds"] is None and again["best_step"] <= 1 and (soft.folder / "data.jsonl").read_text() == data


def test_the_lorebook_reaches_a_turn_and_history_context(tmp_path, data_dir, isolated_settings, tiny_runtime, capsys):
    assert import_file(tmp_path, "mara.json", json.dumps(REAL_WORLD_V2).encode(), "--name", "mara") == 0
    installed = find("mara", data_dir)
    with Store.open(isolated_settings.database_url()) as store:
        session = ChatSession(tiny_runtime, isolated_settings, installed, store)
        reply = session.send("What is the Ashen Reach?", SamplingParams(temperature=0, max_new_tokens=4))
        reply.run()
        assert "World info:\n- The year is 1887" in reply.context.text
        assert [p.source for p in reply.context.recalled] == ["lorebook", "lorebook"]
        stored = store.recalled_of(reply.message_id)
        assert [item["source"] for item in stored] == ["lorebook", "lorebook"]
        conversation_id = session.conversation_id
    capsys.readouterr()
    assert run_cli(["history", "context", str(conversation_id), "-m", "And the Kestrel?"]) == 0
    out = capsys.readouterr().out
    assert "#   lorebook: The Kestrel is a three-masted airship" in out and "World info:" in out
    assert run_cli(["history", "context", str(conversation_id), "--reply", str(reply.message_id), "--json"]) == 0
    recalled = json.loads(capsys.readouterr().out)["recalled"]
    assert [p["text"] for p in recalled] == ["The year is 1887 and airships rule the sky.",
                                             "The Ashen Reach is a storm belt where ships vanish."]


def test_editor_quirks_import(tmp_path, data_dir):
    """Nulls for empty fields, keys as one comma-separated string, a numeric position."""
    card = copy.deepcopy(REAL_WORLD_V2)
    card["data"].update(creator_notes=None, alternate_greetings=None, system_prompt=None)
    entry = card["data"]["character_book"]["entries"][1]
    entry.update(keys="Ashen Reach, storm belt", secondary_keys=None, position=0, insertion_order=None)
    assert import_file(tmp_path, "q.json", json.dumps(card).encode(), "--name", "quirks") == 0
    persona = find("quirks", data_dir).persona
    assert len(persona.first_messages) == 1 and persona.control_code.startswith("Write Captain Mara Voss's next reply")
    book = json.loads((find("quirks", data_dir).folder / "lorebook.json").read_text())
    assert book["entries"][1]["keys"] == ["Ashen Reach", "storm belt"]
