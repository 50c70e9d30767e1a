"""The memory block: passages from outside the kept window, placed in front of the latest message.

Any number of sources feed one block. A source is anything with
`passages(request: MemoryRequest) -> list[MemoryPassage]` (best first): recall over the stored
history (`memory/recall.py`) is one; a persona's lorebook can be another. The builder
(`ContextBuilder.build(..., memory=[source, ...])`) asks every source in order, fits their
passages into the block's share of the budget (a source's best first, sources in the order
given), and renders what fits as one content piece at the start of the latest user message:

    Earlier in this conversation, I told you:
    "My name is Talvoren."

    Earlier in this conversation, you told me:
    "Nice to meet you, Talvoren."

    What is my name?

Only the block and the latest message change from turn to turn: the persona and the kept window
before them stay a prefix of the previous prompt, so the engine reuses their KV cache.

`MemoryPassage` fields:
- `source`: where it came from ("recall", "lorebook", ...); stored with the reply.
- `text`: what the model reads (for a recalled message, the message's text).
- `message_id`, `conversation_id`: the stored message it came from (None for other sources).
- `role`: "user" or "assistant" for a recalled message ("I told you" / "you told me").
- `conversation_title`: for a passage from another conversation, named in its heading.
- `heading`: the line the passage is shown under; None: by source and conversation (see `heading_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatbot.memory.render import Turn

ELLIPSIS = "…"


@dataclass(frozen=True)
class MemoryPassage:
    source: str
    text: str
    message_id: int | None = None
    conversation_id: int | None = None
    role: str | None = None
    conversation_title: str | None = None
    heading: str | None = None

    def stored(self) -> dict[str, Any]:
        """What a reply keeps of it (`messages.recalled`): a stored message by its ids, any
        other passage with its text (nothing else would bring it back)."""
        item: dict[str, Any] = {"source": self.source, "message_id": self.message_id,
                                "conversation_id": self.conversation_id}
        if self.message_id is None:
            item["text"] = self.text
            if self.heading is not None:
                item["heading"] = self.heading
        return item


@dataclass(frozen=True)
class MemoryRequest:
    """What a source is asked with: the latest message, the turns left out of the window
    (oldest first) and the turns kept in it."""

    message: str
    dropped: Sequence[Turn]
    kept: Sequence[Turn]
    conversation_id: int | None = None


class MemorySource(Protocol):
    def passages(self, request: MemoryRequest) -> list[MemoryPassage]: ...


@dataclass
class MemoryBlock:
    passages: list[MemoryPassage] = field(default_factory=list)
    text: str = ""  # as it is placed before the latest message ("" when empty)


def heading_of(passage: MemoryPassage, conversation_id: int | None) -> str:
    """The line a passage is shown under: where it was said and who said it. (Phrased as the
    user speaking: the block is part of the user's message. "Earlier in this conversation, I told
    you:" and a quoted line answered 14 of 15 planted facts on the 135M model, "- I said: ..."
    lines 10 of 15.)"""
    if passage.heading is not None:
        return passage.heading
    if passage.message_id is None:
        return "Remember:"
    if passage.conversation_id is not None and passage.conversation_id != conversation_id:
        title = f' ("{passage.conversation_title}")' if passage.conversation_title else ""
        where = f"In another conversation, #{passage.conversation_id}{title}"
    else:
        where = "Earlier in this conversation"
    return f"{where}, {'you told me' if passage.role == 'assistant' else 'I told you'}:"


def line_of(passage: MemoryPassage) -> str:
    text = " ".join(passage.text.split())  # one line each: the block's shape stays readable
    return f'"{text}"' if passage.message_id is not None else f"- {text}"


def render_block(passages: Sequence[MemoryPassage], conversation_id: int | None) -> str:
    """The block's text: passages grouped under their headings (first-seen order), then a blank line."""
    groups: dict[str, list[str]] = {}
    for passage in passages:
        groups.setdefault(heading_of(passage, conversation_id), []).append(line_of(passage))
    if not groups:
        return ""
    return "\n\n".join(heading + "\n" + "\n".join(lines) for heading, lines in groups.items()) + "\n\n"


def fit_block(
    passages: Sequence[MemoryPassage],
    room: int,
    count: Callable[[str], int],
    cut: Callable[[str, int], str],
    conversation_id: int | None,
) -> MemoryBlock:
    """As many passages as fit `room` tokens (`count` measures a text), best first; the first
    one that does not fit whole is cut to what is left (`cut(text, tokens)`) and ends the block.
    Recalled messages are then shown oldest first, as they were said."""
    chosen: list[MemoryPassage] = []
    seen: set[tuple] = set()
    for passage in passages:
        key = (passage.message_id, passage.conversation_id) if passage.message_id is not None else (passage.text,)
        if key in seen or not passage.text.strip():
            continue
        trial = _ordered([*chosen, passage])
        if count(render_block(trial, conversation_id)) <= room:
            chosen, seen = trial, seen | {key}
            continue
        left = room - (count(render_block(chosen, conversation_id)) if chosen else 0)
        shortened = _shortened(passage, chosen, room, left, count, cut, conversation_id)
        if shortened is not None:
            chosen = _ordered([*chosen, shortened])
        break
    return MemoryBlock(chosen, render_block(chosen, conversation_id))


def _shortened(passage, chosen, room, left, count, cut, conversation_id) -> MemoryPassage | None:
    tokens = left
    while tokens > 8:  # a few words at least, or nothing
        text = cut(passage.text, tokens).rstrip() + ELLIPSIS
        candidate = MemoryPassage(**{**passage.__dict__, "text": text})
        if count(render_block(_ordered([*chosen, candidate]), conversation_id)) <= room:
            return candidate
        tokens -= max(1, tokens // 8)
    return None


def _ordered(passages: list[MemoryPassage]) -> list[MemoryPassage]:
    """Recalled messages by conversation and id (as they were said); other passages first, as given."""
    others = [p for p in passages if p.message_id is None]
    messages = sorted((p for p in passages if p.message_id is not None),
                      key=lambda p: (p.conversation_id or 0, p.message_id))
    return others + messages
