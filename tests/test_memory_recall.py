"""Memory beyond the window (issue 14): recall of dropped turns into the memory block, its scopes,
forgetting, and prefix reuse with recall on. The real store (a SQLite file) and the real builder;
the tiny random model where a reply is needed (its text is never checked)."""

from __future__ import annotations

import json

import pytest

from chatbot.cli import main
from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.memory.passages import MemoryPassage
from chatbot.memory.recall import RecallSource, content_words, fts_expression, sources_for
from chatbot.personas.registry import find
from chatbot.personas.schema import Persona
from chatbot.session import ChatSession, turns_from_messages
from chatbot.store import Store
from chatbot.store import recall as store_recall

PLAIN = Persona(name="plain")
FILLER = [(f"Tell me something about topic {i}.", f"Here is something about topic {i}: " + "more words " * 12)
          for i in range(30)]
GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=4)


def run(args) -> int:
    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def stored(store: Store, turns, persona_version: int | None = None) -> int:
    conversation = store.new_conversation(None, "test")
    parent = None
    for user, reply in turns:
        _, parent = store.add_turn(conversation, user, parent, persona_version, {}, None, "test")
        store.finish_reply(parent, reply, "complete", {})
    return conversation


def build(tokenizer, store, conversation, message, scope="conversation", persona="plain", budget=384):
    history = turns_from_messages(store.active_branch(conversation)) if conversation else []
    return ContextBuilder(tokenizer, budget).build(
        PLAIN, history, message, memory=sources_for(store, scope, persona), conversation_id=conversation
    )


@pytest.fixture
def store(tmp_path):
    with Store.open(str(tmp_path / "chat.db")) as store:
        yield store


def test_query_words_leave_out_stop_words_and_are_never_fts_syntax():
    assert content_words("What is my NAME? Where do I live?") == ["name", "live"]
    assert fts_expression(["lives", 'a"b*', "4711"]) == '"liv"* OR "a""b*"* OR "4711"*'


def test_a_dropped_fact_is_recalled_into_the_block_and_the_kept_window_is_not(store, smol_tokenizer):
    conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER)
    context = build(smol_tokenizer, store, conversation, "What is my name?")
    fact = store.active_branch(conversation)[0]
    assert context.dropped_turns > 0
    assert [p.message_id for p in context.recalled] == [fact.id]
    assert 'Earlier in this conversation, I told you:\n"My name is Talvoren."\n\nWhat is my name?' in context.text
    assert context.tokens <= context.budget and 0 < context.memory_tokens <= context.budget // 4
    # a kept turn is in the prompt already: never recalled again
    kept = build(smol_tokenizer, store, conversation, "topic 29")
    assert all(p.message_id < store.active_branch(conversation)[2 * kept.dropped_turns].id for p in kept.recalled)
    off = build(smol_tokenizer, store, conversation, "What is my name?", scope="off")
    assert off.recalled == [] and "Talvoren" not in off.text


def test_a_passage_that_matched_only_a_word_most_messages_hold_is_left_out(store, smol_tokenizer):
    """The cut-off (recall.MIN_SCORE_RATIO): "something" is in every filler message, so beside the
    castle's message those match next to nothing; two facts that each match one rare word both stay."""
    conversation = stored(store, [("My name is Talvoren.", "Nice to meet you."),
                                  ("I live in Brisquella, by the castle.", "Lovely.")] + FILLER)
    name, _, place = [m.id for m in store.active_branch(conversation)[:3]]
    castle = build(smol_tokenizer, store, conversation, "Tell me something about the castle.")
    assert castle.dropped_turns > 2 and [p.message_id for p in castle.recalled] == [place]
    both = build(smol_tokenizer, store, conversation, "What is my name and where do I live?")
    assert [p.message_id for p in both.recalled] == [name, place]


def test_nothing_dropped_no_block_and_the_whole_budget_for_the_window(store, smol_tokenizer):
    conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")])
    context = build(smol_tokenizer, store, conversation, "What is my name?")
    assert context.recalled == [] and context.dropped_turns == 0 and context.budget == 384


def test_another_conversations_fact_never_leaks_without_a_long_term_scope(store, smol_tokenizer):
    pirate = store.persona_version("pirate", "control_code", {"name": "pirate"})
    robot = store.persona_version("robot", "control_code", {"name": "robot"})
    a = stored(store, [("My name is Talvoren.", "Arr.")] + FILLER[:3], pirate)
    b = stored(store, FILLER[:40], robot)
    for scope in ("off", "conversation"):
        context = build(smol_tokenizer, store, b, "What is my name?", scope=scope, persona="robot")
        assert "Talvoren" not in context.text and all(p.conversation_id == b for p in context.recalled)
    # persona scope: only conversations that had a reply from the same persona
    assert "Talvoren" not in build(smol_tokenizer, store, b, "What is my name?", scope="persona", persona="robot").text
    by_persona = build(smol_tokenizer, store, b, "What is my name?", scope="persona", persona="pirate")
    everything = build(smol_tokenizer, store, b, "What is my name?", scope="all", persona="robot")
    for context in (by_persona, everything):
        passage = next(p for p in context.recalled if "Talvoren" in p.text)
        assert passage.conversation_id == a
        assert f'In another conversation, #{a} ("My name is Talvoren."), I told you:' in context.text
    # a new conversation (not stored yet) with scope all recalls too, and names where from
    fresh = build(smol_tokenizer, store, None, "What is my name?", scope="all")
    assert f"In another conversation, #{a}" in fresh.text


def test_forgetting_or_deleting_removes_a_message_from_recall_and_search(store, smol_tokenizer, tmp_path, monkeypatch, capsys):
    a = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER)
    b = stored(store, [("I live in Brisquella.", "Lovely.")])
    fact = store.active_branch(a)[0]
    assert build(smol_tokenizer, store, a, "What is my name?").recalled
    assert store.search("Talvoren")
    monkeypatch.setenv("CHATBOT_DB", str(tmp_path / "chat.db"))
    assert main(["history", "forget", str(fact.id)]) == 0
    assert f"forgot message {fact.id} of conversation {a}" in capsys.readouterr().err
    assert build(smol_tokenizer, store, a, "What is my name?").recalled == []
    assert store.search("Talvoren") == [] and store.active_branch(a)[0].content == ""
    assert run(["history", "forget", "999999"]) == 1
    assert "no message with id 999999" in capsys.readouterr().err
    # a deleted conversation is out of every scope
    assert build(smol_tokenizer, store, None, "Where do I live?", scope="all").recalled
    store.delete_conversation(b)
    assert build(smol_tokenizer, store, None, "Where do I live?", scope="all").recalled == []


def test_the_like_fallback_ranks_by_words_held_and_keeps_the_scope(store):
    a = stored(store, [("My name is Talvoren and I live here.", "ok"), ("name only", "ok")])
    b = stored(store, [("My name is Other.", "ok")])
    with store._engine.connect() as connection:
        from sqlalchemy.orm import Session

        session = Session(connection)
        up_to = store.active_branch(a)[-1].id
        mine = store_recall._candidates_like(session, ["name", "liv"], store_recall.Scope(a, up_to), 8)
        both = store_recall._candidates_like(session, ["name"], store_recall.Scope(a, up_to, "all"), 8)
    assert [h.content for h in mine] == ["My name is Talvoren and I live here.", "name only"]
    assert {h.conversation_id for h in both} == {a, b}


def test_a_block_takes_passages_from_several_sources(smol_tokenizer):
    class Lorebook:
        def passages(self, request):
            return [MemoryPassage("lorebook", "The castle is called Brimstone.")] if "castle" in request.message else []

    history = turns_from_messages([])
    context = ContextBuilder(smol_tokenizer, 256).build(PLAIN, history, "Tell me of the castle.", memory=[Lorebook()])
    assert context.text.count("Remember:\n- The castle is called Brimstone.\n\nTell me of the castle.") == 1
    assert [p.stored() for p in context.recalled] == [
        {"source": "lorebook", "message_id": None, "conversation_id": None, "text": "The castle is called Brimstone."}
    ]


def test_prefix_reuse_keeps_the_stable_prefix_with_recall_on(isolated_settings, tiny_runtime, monkeypatch):
    """Only the last exchange (its message had the previous block), the block and the new message
    are prefilled: the persona and the rest of the kept window are reused from the engine's cache."""
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "256")
    settings = Settings()
    persona = find("assistant", settings.data_dir)
    with Store.open(settings.database_url()) as store:
        session = ChatSession(tiny_runtime, settings, persona, store)
        turns = []
        for i in range(16):
            reply = session.send(f"Remember the castle number {i} please, castle {i}.", GREEDY)
            reply.run()
            turns.append(reply)
        builder = ContextBuilder(tiny_runtime.tokenizer, reply.context.budget)
        checked = 0
        for before, after in zip(turns, turns[1:]):
            if not after.context.recalled or after.context.dropped_turns != before.context.dropped_turns:
                continue  # the window moved (a full prefill, as without memory) or nothing recalled
            first = after.context.dropped_turns
            history = session.history[: turns.index(after)]
            stable = builder._ids(persona.persona, history[first:-1])[1]
            assert after.context.prompt_ids[: len(stable)] == stable
            assert after.stats.reused_tokens >= len(stable)
            assert after.stats.reused_tokens == _common(before.context.prompt_ids, after.context.prompt_ids)
            checked += 1
        assert checked >= 3


def _common(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_each_reply_stores_what_was_recalled_and_history_context_replays_it(
    isolated_settings, tiny_runtime, monkeypatch, capsys
):
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "384")  # the session's and `history context`'s
    settings = Settings()
    persona = find("assistant", settings.data_dir)
    with Store.open(settings.database_url()) as store:
        conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER)
        session = ChatSession(tiny_runtime, settings, persona, store, conversation)
        reply = session.send("What is my name?", GREEDY)
        reply.run()
        fact = store.active_branch(conversation)[0]
        assert store.recalled_of(reply.message_id) == [
            {"source": "recall", "message_id": fact.id, "conversation_id": conversation}
        ]
        prompt = reply.context.text
    assert main(["history", "context", str(conversation), "--reply", str(reply.message_id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["prompt"] == prompt and shown["tokens"] == reply.stats.prompt_tokens
    assert [(r["message_id"], r["text"]) for r in shown["recalled"]] == [(fact.id, "My name is Talvoren.")]
    assert main(["history", "context", str(conversation), "--reply", str(reply.message_id)]) == 0
    text = capsys.readouterr().out
    assert f"# memory recalled 1 passage(s)" in text and f"#   message {fact.id}: My name is Talvoren." in text
    assert run(["history", "context", str(conversation), "--reply", str(fact.id)]) == 2  # a question, not a reply


def test_an_export_carries_no_other_conversations_text(isolated_settings, tiny_runtime):
    settings = Settings().model_copy(update={"memory": "all"})
    persona = find("assistant", settings.data_dir)
    with Store.open(settings.database_url()) as store:
        a = stored(store, [("My name is Talvoren.", "Nice to meet you.")])
        reply = ChatSession(tiny_runtime, settings, persona, store).send("What is my name?", GREEDY)
        reply.run()
        assert "Talvoren" in reply.context.text and reply.conversation_id != a  # recalled from a
        exported = store.export_conversation(reply.conversation_id).model_dump_json()
    assert "Talvoren" not in exported


def test_memory_never_cuts_the_latest_message(store, smol_tokenizer):
    conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER)
    long_question = "What is my name? " + "Please answer at length. " * 40  # ~80% of the budget
    context = build(smol_tokenizer, store, conversation, long_question, budget=256)
    assert context.message_cut_to is None and context.recalled == [] and context.message == long_question


def test_export_and_import_carry_what_each_reply_recalled_with_the_ids_remapped(store):
    from chatbot.store import exchange

    other = stored(store, [("My name is Talvoren.", "Nice to meet you.")])
    conversation = stored(store, [("I live in Brisquella.", "Lovely."), ("Where do I live?", "In Brisquella.")])
    other_id = store.active_branch(other)[0].id
    fact, _, _, reply = [m.id for m in store.active_branch(conversation)]
    store.record_recalled(reply, [
        {"source": "recall", "message_id": fact, "conversation_id": conversation},
        {"source": "recall", "message_id": other_id, "conversation_id": other},  # the "all" scope's
        {"source": "lorebook", "message_id": None, "conversation_id": None, "text": "Brisquella is by the sea."},
    ])
    text = exchange.to_json(store.export_conversation(conversation))
    assert "Talvoren" not in text and f'"message_id": {other_id}' not in text
    imported = store.import_conversation(exchange.parse_document(text, "x.json"))
    new_fact, _, _, new_reply = [m.id for m in store.active_branch(imported)]
    assert store.recalled_of(new_reply) == [
        {"source": "recall", "message_id": new_fact, "conversation_id": imported},
        {"source": "lorebook", "message_id": None, "conversation_id": None, "text": "Brisquella is by the sea."},
    ]
    assert store.recalled_of(new_fact) is None  # a question (memory never recorded anything for it)
    # a hand-made file whose ids point outside it: left out on import
    doc = json.loads(text)
    doc["conversation"]["messages"][3]["recalled"] = [{"source": "recall", "message_id": other_id, "conversation_id": other}]
    again = store.import_conversation(exchange.parse_document(json.dumps(doc), "y.json"))
    assert store.recalled_of(store.active_branch(again)[-1].id) == []


def test_the_memory_option_of_ask_and_chat_wins_over_the_setting(isolated_settings, tiny_runtime, monkeypatch, capsys):
    from cli_invoke import invoke_main, share_runtime

    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "384")
    share_runtime(monkeypatch, Settings(), lambda: tiny_runtime)
    with Store.open(Settings().database_url()) as store:
        conversation = stored(store, [("My name is Talvoren.", "Nice to meet you.")] + FILLER)
        fact = store.active_branch(conversation)[0].id
    monkeypatch.setenv("CHATBOT_MEMORY", "all")
    code, out, _ = invoke_main(capsys, "ask", "--continue", "--json", "--max-new-tokens", "2", "--memory", "off",
                               "What is my name?")
    asked = json.loads(out)
    assert code == 0 and asked["dropped_turns"] > 0 and asked["recalled"] == []
    monkeypatch.setenv("CHATBOT_MEMORY", "off")
    code, _, _ = invoke_main(capsys, "chat", "--plain", "--continue", "--max-new-tokens", "2", "--memory", "conversation",
                             stdin="What is my name?\n")
    with Store.open(Settings().database_url()) as store:
        replies = [m.id for m in store.active_branch(conversation) if m.role == "assistant"]
        assert code == 0 and store.recalled_of(asked["message_id"]) is None  # memory was off for it
        assert store.recalled_of(replies[-1]) == [{"source": "recall", "message_id": fact, "conversation_id": conversation}]
