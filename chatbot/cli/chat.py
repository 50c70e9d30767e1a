"""`chatbot chat --plain`: a line-by-line chat on stdin/stdout that works in a pipe."""

from __future__ import annotations

import sys

import typer

from chatbot.cli import options
from chatbot.cli.app import app
from chatbot.cli.memory_option import Memory, MemoryScope, use_memory
from chatbot.cli.state import AppState, state_of
from chatbot.errors import UsageError, UserError


@app.command()
def chat(
    ctx: typer.Context,
    plain: bool = typer.Option(False, "--plain", help="Line-by-line chat on stdin/stdout (no TUI)."),
    persona: str | None = typer.Option(None, "--persona", "-p", help="Persona to answer as."),
    continue_: bool = typer.Option(False, "--continue", "-c", help="Continue the latest conversation."),
    conversation: int | None = typer.Option(None, "--conversation", help="Continue conversation ID."),
    seed: int | None = options.Seed,
    temperature: float | None = options.Temperature,
    top_p: float | None = options.TopP,
    top_k: int | None = options.TopK,
    max_new_tokens: int | None = options.MaxNewTokens,
    repetition_penalty: float | None = options.RepetitionPenalty,
    no_save: bool = typer.Option(False, "--no-save", help="Do not store this chat."),
    memory: MemoryScope | None = Memory,
) -> None:
    """Chat: the TUI, or with --plain one message per input line and one reply per output line."""
    state = state_of(ctx)
    use_memory(state, memory)
    if continue_ and conversation is not None:
        raise UsageError("--continue and --conversation exclude each other")
    if not plain:
        open_default_chat(state, resume=str(conversation) if conversation else ("last" if continue_ else None), persona=persona)
        return
    store = None if no_save else state.store()
    conversation_id = conversation
    if continue_ and store is not None:
        conversation_id = store.latest_conversation_id()
    if conversation_id is not None and store is not None:
        store.conversation(conversation_id)
    run_plain_chat(
        state, persona, store, conversation_id, seed=seed, temperature=temperature, top_p=top_p, top_k=top_k,
        max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
    )


def run_plain_chat(state: AppState, persona: str | None, store, conversation_id, **overrides) -> None:
    from chatbot.conversation_settings import session_settings
    from chatbot.session import ChatSession
    from chatbot.store.repository import ConversationMovedOn

    installed = state.persona(persona)
    # A conversation continued here keeps its own settings (the TUI's settings panel); options win.
    own = store.conversation_settings(conversation_id) if store is not None and conversation_id is not None else {}
    params = options.sampling_params(state.settings, installed, own, **overrides)
    session = ChatSession(state.runtime(), session_settings(state.settings, own), installed, store, conversation_id)
    session.warm_between_turns = True  # the next turn's prefix is prefilled while the user types
    interactive = sys.stdin.isatty()
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:  # a line that is not UTF-8 is refused on its own (see chatbot.text)
        reconfigure(errors="surrogateescape")
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        message = line.rstrip("\n")
        if not message.strip():
            print("chatbot: empty message: nothing sent", file=sys.stderr)
            continue
        try:
            reply = session.send(message, params)
        except ConversationMovedOn as exc:  # another process took a turn: go on after it
            print(f"chatbot: error: {exc}", file=sys.stderr)
            session.load_branch()
            print("chatbot: the conversation is open again at its latest turn", file=sys.stderr)
            continue
        except UserError as exc:
            print(f"chatbot: error: {exc}", file=sys.stderr)
            continue
        for warning in reply.warnings:
            print(f"chatbot: warning: {warning}", file=sys.stderr)
        for delta in reply:
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if reply.save_error:
            print(f"chatbot: error: {reply.save_error}", file=sys.stderr)


def open_default_chat(state: AppState, resume: str | None = None, persona: str | None = None) -> None:
    """`chatbot` with no command: the TUI where it is available, else the plain chat."""
    try:
        from chatbot.tui.app import run_tui
    except ImportError:
        run_tui = None
    if run_tui is not None and sys.stdin.isatty() and sys.stdout.isatty():
        run_tui(lambda: state, resume=resume, persona=persona)  # the settings already read
        return
    store = state.store()
    conversation_id = None
    if resume:
        conversation_id = store.conversation_id_of(resume)  # 'last' with none yet: a new one
    run_plain_chat(state, persona, store, conversation_id)
