"""`chatbot history context ID`: exactly what the model will see on the next turn of a conversation."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer

from chatbot.cli.history import ConversationId, conversation_id_of, history_app
from chatbot.cli.state import state_of
from chatbot.terminal_text import visible

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
    from chatbot.memory.tokens import special_ids, special_texts
    from chatbot.session import prompt_budget, resolve_sampling, turns_from_messages  # torch: only now

    state = state_of(ctx)
    store = state.store(create=False)
    conversation_id = conversation_id_of(store, conversation_ref)
    conversation = store.conversation(conversation_id)
    branch = store.active_branch(conversation_id)
    installed = state.persona(persona or current_persona_name(conversation, branch))
    tokenizer, context_length = _tokenizer(state)
    # The same budget as the next turn: the model's positions less the reply's, and a soft prompt's.
    params = resolve_sampling(state.settings, installed)
    budget, note = prompt_budget(state.settings.context_budget, context_length, params.max_new_tokens)
    builder = ContextBuilder(tokenizer, budget)
    built = builder.build(installed.persona, turns_from_messages(branch), message, reserved=_reserved(installed))
    specials, special = special_texts(tokenizer), special_ids(tokenizer)
    typed = sum(piece.text.count(s) for piece in built.pieces if piece.content for s in specials)
    if as_json:
        payload = {
            "conversation_id": conversation_id,
            "persona": installed.persona.name,
            "tokens": built.tokens,
            "budget": built.budget,
            "total_turns": built.total_turns,
            "dropped_turns": built.dropped_turns,
            "prompt": built.text,
            # the prompt as template text (its markers are special tokens) and content (never)
            "pieces": [{"text": p.text, "content": p.content} for p in built.pieces],
            "special_tokens": sum(1 for i in built.prompt_ids if i in special),
            "typed_markers": typed,
            "warnings": ([note] if note else []) + built.warnings,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return
    sys.stdout.write(
        f"# conversation {conversation_id}, persona {installed.persona.name} ({installed.persona.kind})\n"
        f"# {built.tokens} of {built.budget} tokens; {built.total_turns} turns, "
        f"{built.dropped_turns} oldest dropped for the budget\n"
    )
    for warning in ([note] if note else []) + built.warnings:
        sys.stdout.write(f"# note: {warning}\n")
    if typed:
        sys.stdout.write(
            f"# {typed} special-token look-alike(s) in messages or persona text, shown {MARK.format('so')}: "
            "the model reads them as plain text\n"
        )
    # Content is shown as a terminal should show stored text (escapes drawn, never obeyed).
    shown = (visible(_marked(p.text, specials)) if p.content else p.text for p in built.pieces)
    sys.stdout.write("".join(shown) + "\n")


MARK = "\u2039{}\u203a"  # ‹…›


def _marked(text: str, specials: list[str]) -> str:
    """Content with each special-token look-alike marked, so it cannot pass for a real marker."""
    if not specials:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in specials))
    return pattern.sub(lambda m: MARK.format(m.group(0)), text)


def _reserved(installed) -> int:
    if installed.persona.kind != "soft_prompt":
        return 0
    from chatbot.personas.soft_prompt import persona_soft_prompt

    return persona_soft_prompt(installed).num_virtual_tokens


def _tokenizer(state):
    """The tokenizer and the model's context length. Only those are needed: load them alone
    (fast), as the fast path does, rather than the whole model."""
    from chatbot.engine.loading import cache_is_complete, converted_dir, open_tokenizer_and_config, resolve_source

    source = resolve_source(state.settings.model)
    if source.kind == "gguf":
        folder = converted_dir(Path(source.location), state.settings.cache_dir)
        if cache_is_complete(folder):
            tokenizer, config, _ = open_tokenizer_and_config(folder)
            positions = getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048
            return tokenizer, int(positions)
    loaded = state.runtime().loaded  # not converted yet (the full load converts it), or not a GGUF
    return loaded.tokenizer, loaded.info.context_length
