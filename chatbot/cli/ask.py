"""`chatbot ask TEXT`: one turn, streamed to stdout and stored."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading

import typer

from chatbot.cli import options
from chatbot.cli.app import app
from chatbot.cli.memory_option import Memory, MemoryScope, use_memory
from chatbot.cli.state import state_of
from chatbot.errors import UsageError, UserError
from chatbot.text import check_text

INTERRUPTED_EXIT = 130  # 128 + SIGINT


@app.command()
def ask(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="Your message ('-' reads it from stdin)."),
    persona: str | None = typer.Option(None, "--persona", "-p", help="Persona to answer as."),
    continue_: bool = typer.Option(False, "--continue", "-c", help="Continue the latest conversation."),
    conversation: int | None = typer.Option(None, "--conversation", help="Continue conversation ID."),
    seed: int | None = options.Seed,
    temperature: float | None = options.Temperature,
    top_p: float | None = options.TopP,
    top_k: int | None = options.TopK,
    max_new_tokens: int | None = options.MaxNewTokens,
    repetition_penalty: float | None = options.RepetitionPenalty,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming."),
    as_jsonl: bool = typer.Option(
        False, "--jsonl", help="Stream JSON lines: one {\"type\": \"delta\"} event per delta, then a \"done\" event with the stats and ids."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a stats line after the reply."),
    no_save: bool = typer.Option(False, "--no-save", help="Do not store this turn."),
    memory: MemoryScope | None = Memory,
) -> None:
    """Ask one question; the reply streams to stdout."""
    from chatbot.conversation_settings import session_settings
    from chatbot.session import ChatSession

    state = state_of(ctx)
    use_memory(state, memory)
    if continue_ and conversation is not None:
        raise UsageError("--continue and --conversation exclude each other")
    if as_json and as_jsonl:
        raise UsageError("--json and --jsonl exclude each other")
    if text == "-":
        text = read_stdin()
    if not text.strip():
        raise UsageError("the message is empty: nothing to send")
    check_text(text)  # before the model loads
    installed = state.persona(persona)
    store = None if no_save else state.store()
    conversation_id = conversation
    if continue_:
        conversation_id = store.latest_conversation_id() if store else None
    own = {}  # the conversation's own settings (the TUI's settings panel)
    if conversation_id is not None and store is not None:
        store.conversation(conversation_id)  # unknown id: one line, exit 1, before loading the model
        own = store.conversation_settings(conversation_id)
    params = options.sampling_params(
        state.settings,
        installed,
        own,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty,
    )
    settings = session_settings(state.settings, own)  # its context budget and memory scope
    session = ChatSession(state.runtime(), settings, installed, store, conversation_id)
    cancel = threading.Event()
    reply = session.send(text, params, cancel)
    for warning in reply.warnings:
        print(f"chatbot: warning: {warning}", file=sys.stderr)
    with ctrl_c_sets(cancel):
        try:
            for delta in reply:
                if as_jsonl:
                    print_json_line({"type": "delta", "text": delta})
                elif not as_json:
                    sys.stdout.write(delta)
                    sys.stdout.flush()
        except KeyboardInterrupt:  # a second Ctrl+C: the row is marked interrupted at the next start
            print(file=sys.stdout)
            raise
    if as_json:
        print(json.dumps(reply_payload(reply, installed), ensure_ascii=False))
    elif as_jsonl:
        print_json_line({"type": "done", **reply_payload(reply, installed)})
    else:
        sys.stdout.write("\n")
        if verbose:
            print(format_stats(reply), file=sys.stderr)
    # 130 after Ctrl+C, as a shell gives a command ended by SIGINT: a script can tell a cut reply.
    interrupted = reply.status == "interrupted"
    code = INTERRUPTED_EXIT if interrupted else 1
    if reply.save_error:  # the reply is on stdout; say in one line that it was not stored
        sys.stdout.flush()
        raise UserError(reply.save_error, exit_code=code)
    if interrupted:
        sys.stdout.flush()
        kept = "not saved (--no-save)" if store is None else f"saved as message {reply.message_id}, marked interrupted"
        raise UserError(f"interrupted: the reply so far is {kept}", exit_code=code)


def reply_payload(reply, installed) -> dict:
    """The finished reply with its ids and stats: `--json`'s object, `--jsonl`'s last event."""
    payload = {
        "reply": reply.text,
        "persona": installed.persona.name,
        "conversation_id": reply.conversation_id,
        "message_id": reply.message_id,
        "status": reply.status,
        "dropped_turns": reply.context.dropped_turns,
        "recalled": [p.stored() for p in reply.context.recalled],
        "stats": reply.stats.as_dict(),
    }
    if reply.save_error:
        payload["save_error"] = reply.save_error
    return payload


def print_json_line(event: dict) -> None:
    """One event, one line, flushed at once (a reader acts on each as it comes)."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def ctrl_c_sets(cancel: threading.Event):
    """While the reply streams, Ctrl+C stops it through the engine's cancel (within one token), so
    the reply ends as `interrupted` and is stored whole; a second Ctrl+C interrupts at once."""

    def first_ctrl_c(signum, frame):
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def read_stdin() -> str:
    """All of stdin; bytes that are not UTF-8 become lone surrogates, which `check_text` refuses
    with one line (in any locale), rather than a decoding traceback."""
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    return sys.stdin.read()


def format_stats(reply) -> str:
    s = reply.stats
    return (
        f"[{reply.persona.persona.name}] prompt {s.prompt_tokens} tok (reused {s.reused_tokens}), "
        f"new {s.new_tokens} tok, ttft {s.ttft_ms:.0f} ms, {s.tokens_per_s:.1f} tok/s, "
        f"dropped turns {reply.context.dropped_turns}, conversation {reply.conversation_id}"
    )
