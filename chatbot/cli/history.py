"""`chatbot history ...`: list, show, search, rename, delete, export, import and replay conversations.

Text is printed as stored (plain `write`, no Rich markup), except that a character that would steer
the terminal (an escape sequence, a lone CR, a bidi override) is shown as a visible stand-in, as the
TUI shows it (`chatbot.terminal_text`). Exact text: `--json` (the store's record vocabulary, those
characters as JSON escapes) and `export` to a file or a pipe.
(`history context` needs the model and lives with the chat commands.)
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from chatbot.cli.app import app
from chatbot.cli.state import state_of
from chatbot.errors import NotFoundError, UsageError, UserError
from chatbot.store import ConversationRecord, MessageRecord, Store, exchange
from chatbot.store.exchange import persona_label
from chatbot.store.replay import Switch, play, plan_reply, timeline
from chatbot.terminal_text import safe_json, visible

history_app = typer.Typer(
    name="history",
    help="Saved conversations: list, show, search, rename, rate, delete, export, import, replay.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(history_app, name="history")

ConversationId = typer.Argument(
    ..., metavar="ID", show_default=False, help="Conversation id (see `chatbot history list`), or 'last'."
)
Json = typer.Option(False, "--json", help="Print JSON (the same vocabulary as `export`).")
Leaf = typer.Option(None, "--leaf", help="Show the branch ending at this message (default: the latest).")


class Format(str, Enum):
    md = "md"
    json = "json"


def conversation_id_of(store: Store, ref: str) -> int:
    """An id as typed, or 'last' (an error when there are no conversations yet)."""
    conversation_id = store.conversation_id_of(ref)
    if conversation_id is None:
        raise NotFoundError("there are no conversations yet")
    return conversation_id


def _store(ctx: typer.Context) -> Store:
    """The store for a command on stored history: it never creates a database."""
    return state_of(ctx).store(create=False)


def out(text: str) -> None:
    sys.stdout.write(text)


def show_text(text: str) -> None:
    """Stored text for a person to read: what would steer the terminal is made visible."""
    out(visible(text))


def emit_json(data: Any) -> None:
    out(safe_json(json.dumps(data, ensure_ascii=False, indent=2)) + "\n")


def when(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def title_of(title: str | None) -> str:
    return "(untitled)" if title is None else title


# --- list, show, search ------------------------------------------------------------------------


@history_app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="At most this many, most recent first."),
    as_json: bool = Json,
) -> None:
    """List conversations, most recently active first."""
    rows = _store(ctx).list_conversations(limit)
    if as_json:
        emit_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        print("no conversations yet", file=sys.stderr)
    for r in rows:
        show_text(f"{r.id:>5}  {when(r.updated_at)}  {r.message_count:>4} msgs  {title_of(r.title)}\n")


def _stats_line(m: MessageRecord, conversation_model: str) -> str:
    parts = [persona_label(m.persona), m.status]
    if m.model and m.model != conversation_model:  # written after a model switch
        parts.append(f"by {m.model}")
    s = m.stats
    if "new_tokens" in s:
        parts.append(f"{s['new_tokens']} tokens")
    if s.get("tokens_per_s"):
        parts.append(f"{s['tokens_per_s']:.1f} tok/s")
    if s.get("ttft_ms") is not None:
        parts.append(f"first token {s['ttft_ms']:.0f} ms")
    if m.seed is not None:
        parts.append(f"seed {m.seed}")
    if m.rating:
        parts.append(f"rated {m.rating}")
    return " · ".join(parts)


def _branch_marker(c: ConversationRecord, m: MessageRecord) -> str | None:
    siblings = [x.id for x in c.messages if x.parent_id == m.parent_id]
    if len(siblings) < 2:
        return None
    others = ", ".join(f"#{i}" for i in siblings if i != m.id)
    return f"  ↳ branch {siblings.index(m.id) + 1} of {len(siblings)} (others: {others}; see --leaf)\n"


def _switch_line(item: Switch) -> str:
    before = item.before.name if item.before else "none"
    return f"-- persona switched: {before} → {persona_label(item.after)} --\n"


@history_app.command()
def show(ctx: typer.Context, conversation: str = ConversationId, leaf: int | None = Leaf, as_json: bool = Json) -> None:
    """Show a conversation's active branch, with the persona of each reply and branch markers."""
    store = _store(ctx)
    conversation_id = conversation_id_of(store, conversation)
    c = store.conversation(conversation_id)
    if as_json:
        emit_json(c.model_dump(mode="json"))
        return
    branch = store.active_branch(conversation_id, leaf)
    show_text(f"conversation {c.id}: {title_of(c.title)}\n")
    show_text(f"model {c.model} · created {when(c.created_at)} · updated {when(c.updated_at)} · {len(c.messages)} messages\n")
    for item in timeline(c, branch):
        out("\n")
        if isinstance(item, Switch):
            show_text(_switch_line(item))
            continue
        head = f"[#{item.id}] {item.role} · {when(item.created_at)}"
        if item.role == "assistant":
            head += f" · {_stats_line(item, c.model)}"
        show_text(head + "\n" + item.content + "\n")
        out(_branch_marker(c, item) or "")


@history_app.command()
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="Words to find (all of them; punctuation is taken literally)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1),
    as_json: bool = Json,
) -> None:
    """Search message text (best matches first, with snippets)."""
    hits = _store(ctx).search(query, limit)
    if as_json:
        emit_json([h.model_dump(mode="json") for h in hits])
        return
    if not hits:
        print("no matches", file=sys.stderr)
    bold = sys.stdout.isatty()
    for h in hits:
        snippet = _highlighted(h.snippet, h.highlights if bold else [])
        show_text(f"{h.conversation_id:>5}  #{h.message_id} {h.role}  {title_of(h.conversation_title)}\n")
        out(f"       {snippet}\n")


def _highlighted(snippet: str, highlights: list[tuple[int, int]]) -> str:
    """The snippet made visible, with each highlight in bold (our own escapes, added after)."""
    parts, at = [], 0
    for start, end in highlights:
        parts += [visible(snippet[at:start]), "\x1b[1m", visible(snippet[start:end]), "\x1b[0m"]
        at = end
    return "".join(parts) + visible(snippet[at:])


# --- rename, delete ----------------------------------------------------------------------------


@history_app.command()
def rename(ctx: typer.Context, conversation: str = ConversationId, title: str = typer.Argument(...)) -> None:
    """Give a conversation a new title (stored exactly as given)."""
    if not title.strip():
        raise UsageError("the title is empty")
    store = _store(ctx)
    conversation_id = conversation_id_of(store, conversation)
    store.rename_conversation(conversation_id, title)
    print(f"renamed conversation {conversation_id}", file=sys.stderr)


@history_app.command()
def delete(
    ctx: typer.Context,
    conversation: str = ConversationId,
    yes: bool = typer.Option(False, "--yes", "-y", help="Really delete (there is no undo)."),
) -> None:
    """Delete a conversation and all its messages."""
    store = _store(ctx)
    conversation_id = conversation_id_of(store, conversation)
    c = store.conversation(conversation_id)
    if not yes:
        raise UserError(f"refusing to delete conversation {c.id} ({len(c.messages)} messages) without --yes")
    store.delete_conversation(conversation_id)
    print(f"deleted conversation {conversation_id}", file=sys.stderr)


@history_app.command()
def rate(
    ctx: typer.Context,
    message_id: int = typer.Argument(..., metavar="MESSAGE_ID", help="A reply's id (the [#N] of `history show`)."),
    rating: str = typer.Argument(..., metavar="good|bad|none", help="good, bad, or none to clear the rating."),
) -> None:
    """Rate a reply: liked replies train the persona (`persona train --from-history`), disliked never."""
    value = rating.strip().lower()
    if value not in ("good", "bad", "none"):
        raise UsageError(f"a rating is good, bad or none, not {rating!r}")
    if not 0 < message_id < 2**63:
        raise NotFoundError(f"no message with id {message_id}")
    _store(ctx).rate(message_id, None if value == "none" else value)
    print(f"message {message_id}: {'rating cleared' if value == 'none' else f'rated {value}'}", file=sys.stderr)


# --- export, import ----------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write a file (owner-only when new) through a temporary file, so a failure leaves no half file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {exc.strerror}") from exc


@history_app.command()
def export(
    ctx: typer.Context,
    conversation: str = ConversationId,
    fmt: Format = typer.Option(Format.md, "--format", "-f", help="json: lossless (whole tree); md: for reading."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    leaf: int | None = Leaf,
) -> None:
    """Export a conversation as JSON (lossless, importable) or Markdown."""
    store = _store(ctx)
    conversation_id = conversation_id_of(store, conversation)
    doc = store.export_conversation(conversation_id)
    if fmt is Format.json:
        text = exchange.to_json(doc)
    else:
        text = exchange.render_markdown(doc, store.active_branch(conversation_id, leaf))
    if output is None:
        # Exact into a pipe or a file; on a terminal, shown as `show` shows it.
        out(text if not sys.stdout.isatty() else safe_json(text) if fmt is Format.json else visible(text))
    else:
        write_private(output, text)
        print(f"exported conversation {conversation_id} to {output}", file=sys.stderr)


@history_app.command("import")
def import_(ctx: typer.Context, file: Path = typer.Argument(..., help="A JSON export ('-' reads stdin).")) -> None:
    """Import a JSON export as a new conversation (nothing is written if the file has a problem)."""
    if str(file) == "-":
        doc = exchange.parse_document(sys.stdin.buffer.read(), "<stdin>")
    else:
        doc = exchange.read_document(file)
    new_id = state_of(ctx).store().import_conversation(doc)  # the one command here that may create it
    out(f"{new_id}\n")
    print(f"imported as conversation {new_id}", file=sys.stderr)


# --- replay ------------------------------------------------------------------------------------


@history_app.command()
def replay(
    ctx: typer.Context,
    conversation: str = ConversationId,
    speed: float | None = typer.Option(None, "--speed", help="Play replies this many times faster (default 1)."),
    instant: bool = typer.Option(False, "--instant", help="No delays: print each reply at once."),
    leaf: int | None = Leaf,
) -> None:
    """Play a conversation back turn by turn, each reply at its recorded speed."""
    if instant and speed is not None:
        raise UsageError("--speed and --instant exclude each other")
    if speed is not None and not speed > 0:
        raise UsageError(f"--speed must be a positive number, not {speed}")
    factor = None if instant else (speed or 1.0)
    store = _store(ctx)
    conversation_id = conversation_id_of(store, conversation)
    c = store.conversation(conversation_id)
    branch = store.active_branch(conversation_id, leaf)
    show_text(f"conversation {c.id}: {title_of(c.title)}\n")
    for item in timeline(c, branch):
        if isinstance(item, Switch):
            show_text(_switch_line(item))
        elif item.role == "assistant":
            name = item.persona.name if item.persona else "assistant"
            show_text(f"{name}> ")
            sys.stdout.flush()
            shown = item.model_copy(update={"content": visible(item.content)})  # same timing, visible text
            play(plan_reply(shown, factor), out, sys.stdout.flush, time.sleep)
            out("\n" if item.status == "complete" else f"\n[{item.status}]\n")
        else:
            show_text(f"{item.role}> {item.content}\n")
        sys.stdout.flush()
