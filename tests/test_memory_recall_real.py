"""Recall on the real bundled model, end to end through the CLI (issue 14): a fact stated at the
start of a conversation and then pushed far out of a small context budget is still answered by
`ask --continue`, from the memory block; with `--memory off` the model never sees it."""

from __future__ import annotations

import json

from chatbot.cli import main
from chatbot.config import Settings
from chatbot.store import Store

FILLER = [(f"Tell me something about topic {i}.", f"Here is something about topic {i}: " + "more words " * 12)
          for i in range(24)]


def test_ask_continue_recalls_a_fact_that_left_the_window(isolated_settings, monkeypatch, capsys, bundled_cli):
    # bundled_cli: `ask` opens the session's bundled model instead of loading it again
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "384")
    with Store.open(Settings().database_url()) as store:
        conversation = store.new_conversation(None, "test")
        parent = None
        for user, reply in [("My name is Talvoren.", "Nice to meet you.")] + FILLER:
            _, parent = store.add_turn(conversation, user, parent, None, {}, None, "test")
            store.finish_reply(parent, reply, "complete", {})
        fact = store.active_branch(conversation)[0].id
    assert main(["history", "context", "last", "--memory", "off", "--json", "--message", "What is my name?"]) == 0
    off = json.loads(capsys.readouterr().out)
    assert off["dropped_turns"] > 0 and "Talvoren" not in off["prompt"] and off["recalled"] == []

    assert main(["ask", "--continue", "--json", "--temperature", "0", "--max-new-tokens", "16", "What is my name?"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["conversation_id"] == conversation and payload["dropped_turns"] > 0
    assert payload["recalled"] == [{"source": "recall", "message_id": fact, "conversation_id": conversation}]
    assert "Talvoren" in payload["reply"]
    # what the model saw, replayed from the stored ids
    assert main(["history", "context", "last", "--reply", str(payload["message_id"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tokens"] == payload["stats"]["prompt_tokens"]
    assert [r["message_id"] for r in shown["recalled"]] == [fact]
