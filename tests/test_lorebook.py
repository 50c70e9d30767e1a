"""Lorebook selection (chatbot/personas/lorebook.py): keys, secondary keys, constant entries,
scan depth, recursion, the token budget and the order of insertion. Pure: words stand for tokens."""

from __future__ import annotations

from card_files import REAL_WORLD_V2

from chatbot.personas.cards.model import Lorebook
from chatbot.personas.lorebook import select


def words(text: str) -> int:
    return len(text.split())


def book(**changes) -> Lorebook:
    data = dict(REAL_WORLD_V2["data"]["character_book"])
    data.update(changes)
    return Lorebook.model_validate(data)


def ids(chosen) -> list:
    return [c.entry.id for c in chosen]


def test_keys_in_recent_messages_call_up_entries_in_insertion_order():
    chosen = select(book(), ["Tell me about the ASHEN reach", "and the airship?"], words)
    assert ids(chosen) == [4, 1, 2]  # the constant one (order 0), then Kestrel (10), Ashen Reach (20)
    assert [c.why for c in chosen] == ["constant", "airship", "Ashen Reach"]


def test_nothing_but_constants_without_a_key_and_never_a_disabled_entry():
    assert ids(select(book(), ["hello there", "a mutiny!"], words)) == [4]


def test_secondary_keys_must_match_too_when_selective():
    assert 3 not in ids(select(book(), ["We sail to Hallow"], words))
    assert 3 in ids(select(book(), ["We sail to Hallow to smuggle rum"], words))


def test_only_the_last_scan_depth_messages_are_scanned():
    history = ["the Kestrel", "one", "two", "three", "four"]
    assert 1 not in ids(select(book(), history, words))  # default 4: "the Kestrel" is five back
    assert 1 in ids(select(book(scan_depth=5), history, words))
    assert ids(select(book(scan_depth=0), history, words)) == [4]


def test_case_sensitive_keys():
    entry = {**REAL_WORLD_V2["data"]["character_book"]["entries"][0], "case_sensitive": True}
    sensitive = book(entries=[entry])
    assert ids(select(sensitive, ["the kestrel"], words)) == []
    assert ids(select(sensitive, ["the Kestrel"], words)) == [1]


def test_the_budget_keeps_the_most_important_and_skips_what_does_not_fit():
    # entry sizes in words: constant 9, Kestrel 10, Ashen Reach 10
    message = ["Kestrel in the Ashen Reach"]
    assert ids(select(book(token_budget=19), message, words)) == [4, 2]  # higher insertion_order kept first
    assert ids(select(book(token_budget=100), message, words, budget=10)) == [2]  # the caller's is smaller
    entries = [dict(e) for e in REAL_WORLD_V2["data"]["character_book"]["entries"]]
    entries[0]["priority"] = 5  # priority beats insertion order
    assert ids(select(book(entries=entries, token_budget=19), message, words)) == [4, 1]


def test_recursive_scanning_follows_entry_contents():
    entries = [
        {"keys": ["storm"], "content": "Storms drive ships into the Ashen Reach.", "insertion_order": 1, "id": "a"},
        {"keys": ["Ashen Reach"], "content": "Nobody returns from it.", "insertion_order": 2, "id": "b"},
    ]
    assert ids(select(book(entries=entries), ["a storm!"], words)) == ["a"]
    assert ids(select(book(entries=entries, recursive_scanning=True), ["a storm!"], words)) == ["a", "b"]


def test_regex_keys_and_hostile_patterns():
    entries = [
        {"keys": [r"\bdeck(hand)?s?\b"], "use_regex": True, "content": "Deckhands sleep below.", "id": "re"},
        {"keys": ["(unclosed"], "use_regex": True, "content": "never", "id": "bad"},
        {"keys": [r"(a+)+$"], "use_regex": True, "content": "never", "id": "slow"},
    ]
    # the backtracking pattern is cut off by the regex timeout (it would run for hours otherwise)
    assert ids(select(book(entries=entries), ["the deckhands", "a" * 40 + "!"], words)) == ["re"]


def test_a_card_lorebook_reaches_the_prompt_through_the_memory_block(tmp_path, monkeypatch, smol_tokenizer):
    import json

    from test_persona_support import run_cli

    from chatbot.memory.context import ContextBuilder
    from chatbot.memory.render import Turn
    from chatbot.personas.lorebook import lorebook_sources
    from chatbot.personas.registry import find

    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    card = tmp_path / "mara.json"
    card.write_text(json.dumps(REAL_WORLD_V2))
    assert run_cli(["persona", "import", str(card), "--name", "mara"]) == 0
    installed = find("mara", tmp_path / "data")
    sources = lorebook_sources(installed, smol_tokenizer)
    builder = ContextBuilder(smol_tokenizer, 1024)
    history = [Turn("Hello", "Stow your gear.")]
    built = builder.build(installed.persona, history, "Tell me about the Ashen Reach.", memory=sources)
    assert [p.source for p in built.recalled] == ["lorebook", "lorebook"]
    assert "World info:\n- The year is 1887" in built.text
    assert built.text.index("ships vanish.") < built.text.index("Tell me about the Ashen Reach.")
    assert built.text.index("Stow your gear.") < built.text.index("World info:")  # the window stays a prefix
    quiet = builder.build(installed.persona, history, "Good morning.", memory=sources)
    assert [p.text for p in quiet.recalled] == ["The year is 1887 and airships rule the sky."]  # constant only
    assert lorebook_sources(find("pirate", tmp_path / "data"), smol_tokenizer) == []
