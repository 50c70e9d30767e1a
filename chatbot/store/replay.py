"""Replay without a model: the turn-by-turn timeline of a branch, and the timing of each reply.

`timeline` lays out a branch as user turns, replies and persona switches (an explicit switch
record, or a reply whose persona differs from the one before). `plan_reply` cuts a stored reply
into word chunks with delays so that, played back, it takes what generating it took (time to
first token + new tokens / tokens per second), divided by the speed factor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chatbot.store.records import ConversationRecord, MessageRecord, PersonaRef

DEFAULT_TOKENS_PER_S = 20.0  # for replies stored without a rate (imported, failed early)


@dataclass(frozen=True)
class Switch:
    """The persona changes here (before: None at the start of a conversation)."""

    before: PersonaRef | None
    after: PersonaRef


@dataclass(frozen=True)
class Chunk:
    delay_s: float
    text: str


TimelineItem = MessageRecord | Switch


def timeline(conversation: ConversationRecord, branch: list[MessageRecord]) -> list[TimelineItem]:
    on_branch = {m.id for m in branch}
    switches_after: dict[int | None, list[PersonaRef]] = {}
    for s in conversation.persona_switches:
        if s.after_message_id is None or s.after_message_id in on_branch:
            switches_after.setdefault(s.after_message_id, []).append(s.persona)
    items: list[TimelineItem] = []
    current: PersonaRef | None = None

    def switch_to(persona: PersonaRef) -> None:
        nonlocal current
        if persona != current:
            items.append(Switch(current, persona))
            current = persona

    for persona in switches_after.get(None, []):
        switch_to(persona)
    for message in branch:
        if message.role == "assistant" and message.persona is not None:
            if current is None:
                current = message.persona  # the first persona is shown on the reply, not as a switch
            else:
                switch_to(message.persona)
        items.append(message)
        for persona in switches_after.get(message.id, []):
            switch_to(persona)
    return items


def split_words(text: str) -> list[str]:
    """Word-sized chunks (each with the whitespace before it) that join back to `text` exactly."""
    return re.findall(r"\s*\S+|\s+$", text, flags=re.DOTALL) or ([text] if text else [])


def plan_reply(message: MessageRecord, speed: float | None) -> list[Chunk]:
    """Chunks and delays for one reply; `speed` None means instant (no delays)."""
    words = split_words(message.content)
    if not words:
        return []
    if speed is None:
        return [Chunk(0.0, "".join(words))]
    if speed <= 0:
        raise ValueError("speed must be positive")
    stats = message.stats
    rate = stats.get("tokens_per_s") or DEFAULT_TOKENS_PER_S
    tokens = stats.get("new_tokens") or len(words)
    generating_s = tokens / rate / speed
    first_s = (stats.get("ttft_ms") or 0.0) / 1000.0 / speed
    step = generating_s / len(words)
    return [Chunk(first_s + step if i == 0 else step, w) for i, w in enumerate(words)]


def play(chunks: Iterable[Chunk], write: Callable[[str], object], flush: Callable[[], object],
         sleep: Callable[[float], object]) -> None:
    for chunk in chunks:
        if chunk.delay_s > 0:
            sleep(chunk.delay_s)
        write(chunk.text)
        flush()
