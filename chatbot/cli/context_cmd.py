"""`chatbot history context ID`: exactly what the model will see on the next turn of a conversation
(or saw for a stored reply, `--reply`); `chatbot history forget MESSAGE_ID`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import typer

from chatbot.cli.history import ConversationId, conversation_id_of, history_app
from chatbot.cli.memory_option import Memory, MemoryScope, use_memory
from chatbot.cli.state import state_of
from chatbot.errors import NotFoundError, UsageError
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
    reply: int | None = typer.Option(
        None, "--reply", "-r", help="Render the prompt of this stored reply instead, with what was recalled for it."
    ),
    memory: MemoryScope | None = Memory,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the rendered prompt of the next turn (or of a stored reply): persona, kept and dropped
    turns, the passages memory recalled (with their message ids), token counts."""
    from chatbot.memory.context import ContextBuilder
    from chatbot.memory.recall import StoredPassages, sources_for
    from chatbot.memory.tokens import special_ids, special_texts
    from chatbot.session import prompt_budget, resolve_sampling, turns_from_messages  # torch: only now

    state = state_of(ctx)
    use_memory(state, memory)
    store = state.store(create=False)
    conversation_id = conversation_id_of(store, conversation_ref)
    conversation = store.conversation(conversation_id)
    if reply is None:
        branch = store.active_branch(conversation_id)
        history, name = turns_from_messages(branch), current_persona_name(conversation, branch)
    else:
        branch, message = _reply_branch(store, conversation_id, reply)
        history, name = turns_from_messages(branch[:-2]), branch[-1].persona.name if branch[-1].persona else None
    installed = state.persona(persona or name)
    tokenizer, context_length = _tokenizer(state)
    # The same budget as the next turn: the model's positions less the reply's, and a soft prompt's.
    params = resolve_sampling(state.settings, installed)
    budget, note = prompt_budget(state.settings.context_budget, context_length, params.max_new_tokens)
    if reply is None:
        from chatbot.personas.lorebook import lorebook_sources

        sources = lorebook_sources(installed, tokenizer) + sources_for(
            store, state.settings.memory, installed.persona.name, summary=state.settings.memory_summary
        )
    else:  # what was recalled for it, as stored (the scope then decided it; None: memory was off)
        items = store.recalled_of(reply)
        sources = [] if items is None else [StoredPassages(store, items)]
    builder = ContextBuilder(tokenizer, budget)
    built = builder.build(
        installed.persona, history, message, reserved=_reserved(installed), memory=sources,
        memory_share=state.settings.memory_share, conversation_id=conversation_id,
    )
    specials, special = special_texts(tokenizer), special_ids(tokenizer)
    typed = sum(piece.text.count(s) for piece in built.pieces if piece.content for s in specials)
    recalled = [
        {"source": p.source, "message_id": p.message_id, "conversation_id": p.conversation_id, "role": p.role,
         "text": p.text}
        for p in built.recalled
    ]
    if as_json:
        payload = {
            "conversation_id": conversation_id,
            "reply_id": reply,
            "persona": installed.persona.name,
            "tokens": built.tokens,
            "budget": built.budget,
            "total_turns": built.total_turns,
            "dropped_turns": built.dropped_turns,
            "memory": state.settings.memory if reply is None else "stored",
            "memory_tokens": built.memory_tokens,
            "recalled": recalled,
            "prompt": built.text,
            # the prompt as template text (its markers are special tokens) and content (never)
            "pieces": [{"text": p.text, "content": p.content} for p in built.pieces],
            "special_tokens": sum(1 for i in built.prompt_ids if i in special),
            "typed_markers": typed,
            "warnings": ([note] if note else []) + built.warnings,
        }
        print(json.dumps(payload, ensure_ascii=False))
        return
    what = f"reply {reply}" if reply is not None else "the next turn"
    sys.stdout.write(
        f"# conversation {conversation_id}, {what}, persona {installed.persona.name} ({installed.persona.kind})\n"
        f"# {built.tokens} of {built.budget} tokens; {built.total_turns} turns, "
        f"{built.dropped_turns} oldest dropped for the budget\n"
    )
    if built.recalled:
        sys.stdout.write(f"# memory recalled {len(built.recalled)} passage(s), {built.memory_tokens} tokens:\n")
        for p in built.recalled:
            origin = f"message {p.message_id}" if p.message_id is not None else p.source
            if p.conversation_id is not None and p.conversation_id != conversation_id:
                origin += f" of conversation {p.conversation_id}"
            sys.stdout.write(f"#   {origin}: {visible(_one_line(p.text))}\n")
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


def _one_line(text: str, limit: int = 100) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _reply_branch(store, conversation_id: int, reply_id: int):
    """The branch up to a stored reply, and the message it answered."""
    if not 0 < reply_id < 2**63:
        raise NotFoundError(f"no message with id {reply_id}")
    branch = store.active_branch(conversation_id, reply_id)
    if branch[-1].role != "assistant" or len(branch) < 2 or branch[-2].role != "user":
        raise UsageError(f"message {reply_id} is not a reply to a question: --reply takes a reply's id")
    return branch, branch[-2].content


@history_app.command("forget")
def forget(
    ctx: typer.Context,
    message_id: int = typer.Argument(..., metavar="MESSAGE_ID", help="A message's id (the [#N] of `history show`)."),
) -> None:
    """Forget a message: its text is erased, so memory never recalls it, search never finds it and
    no view shows it again; its place in the conversation stays (there is no undo)."""
    if not 0 < message_id < 2**63:
        raise NotFoundError(f"no message with id {message_id}")
    store = state_of(ctx).store(create=False)
    conversation_id = store.forget_message(message_id)
    print(f"forgot message {message_id} of conversation {conversation_id}", file=sys.stderr)


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
