"""`chatbot history context ID` shows exactly what the model sees on the next turn."""

import json

from chatbot.cli import main
from chatbot.config import Settings
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.registry import find
from chatbot.store import Store


def test_context_matches_the_builder(isolated_settings, smol_tokenizer, bundled_fp32, capsys):
    store = Store.open(Settings().database_url())
    conversation = store.new_conversation(None, "test")
    parent = None
    for i in range(3):
        user = store.add_user_message(conversation, f"question {i} [bold]x[/]", parent)
        reply = store.start_reply(conversation, user, None, {}, None, "test")
        store.finish_reply(reply, f"answer {i}", "complete", {})
        parent = reply
    store.close()
    assert main(["history", "context", str(conversation), "--json", "--message", "next?"]) == 0
    shown = json.loads(capsys.readouterr().out)
    turns = [Turn(f"question {i} [bold]x[/]", f"answer {i}") for i in range(3)]
    assistant = find("assistant", Settings().data_dir).persona  # the default persona, as installed
    expected = ContextBuilder(smol_tokenizer).build(assistant, turns, "next?")
    assert shown["prompt"] == expected.text
    assert shown["tokens"] == expected.tokens and shown["dropped_turns"] == 0 and shown["total_turns"] == 4
    assert shown["persona"] == "assistant"
    assert main(["history", "context", "last", "--json", "--message", "next?"]) == 0  # the same one
    assert json.loads(capsys.readouterr().out)["prompt"] == expected.text
