"""`chatbot history context ID`: exactly what the model will see on the next turn of a conversation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from chatbot.cli.history import ConversationId, conversation_id_of, history_app
from chatbot.cli.state import state_of

NEXT_MESSAGE = "<your next message>"


def current_persona_name(conversation, branch) -> str | None:
    """The persona the next reply would use: the latest explicit switch or reply on the branch."""
    events = [(m.created_at, m.persona.name) for m in branch if m.role == "assistant" and m.persona]
    events += [(s.created_at, s.persona.name) for s in conversation.persona_switches]
    return max(events)[1] if events else None


@history_app.command("context")
def context(
    ctx: typer.Context,
    conversation_ref: str = ConversationId,
    message: str = typer.Option(NEXT_MESSAGE, "--message", "-m", help="The next message to render."),
    persona: str | None = typer.Option(None, "--persona", "-p", help="Render under this persona instead."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the rendered prompt of the next turn: persona, kept and dropped turns, token counts."""
    from chatbot.memory.context import ContextBuilder
    from chatbot.session import turns_from_messages  # torch: only when this command runs

    state = state_of(ctx)
    store = state.store()
    conversation_id = conversation_id_of(store, conversation_ref)
    conversation = store.conversation(conversation_id)
    branch = store.active_branch(conversation_id)
    installed = state.persona(persona or current_persona_name(conversation, branch))
    tokenizer = _tokenizer(state)
    builder = ContextBuilder(tokenizer, state.settings.context_budget)
    built = builder.build(installed.persona, turns_from_messages(branch), message)
    if as_json:
        payload = {
            "conversation_id": conversation_id,
            "persona": installed.persona.name,
            "tokens": built.tokens,
            "budget": built.budget,
            "total_turns": built.total_turns,
            "dropped_turns": built.dropped_turns,
            "prompt": built.text,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return
    sys.stdout.write(
        f"# conversation {conversation_id}, persona {installed.persona.name} ({installed.persona.kind})\n"
        f"# {built.tokens} of {built.budget} tokens; {built.total_turns} turns, "
        f"{built.dropped_turns} oldest dropped for the budget\n"
    )
    sys.stdout.write(built.text + "\n")


def _tokenizer(state):
    """Only the tokenizer is needed: load it alone (fast) rather than the whole model."""
    from transformers import AutoTokenizer

    from chatbot.engine.loading import converted_dir, resolve_source

    source = resolve_source(state.settings.model)
    if source.kind == "gguf":
        folder = converted_dir(Path(source.location), state.settings.cache_dir)
        if not (folder / "tokenizer.json").exists():
            return state.runtime().tokenizer  # not converted yet: the full load converts it
        return AutoTokenizer.from_pretrained(str(folder))
    return state.runtime().tokenizer
