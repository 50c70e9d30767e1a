"""A validated card onto a persona, field by field (docs/personas.md has the table).

- `system_prompt` (or, when empty, a line saying whose reply to write), `description`,
  `personality` and `scenario` make the control code, in the system turn: a card is long, and
  there its tokens are a prefix the engine reuses from turn to turn.
- `mes_example` follows as example dialogue: whole `<START>` blocks, in order, while they fit
  the example budget (tokens); the rest are left out and counted.
- `post_history_instructions` goes in front of the latest user message (`post_history`).
- `first_mes` and then `alternate_greetings` open a new conversation (`first_messages`).
- `{{char}}` (V3: the nickname if any), `{{user}}` and the V1 `<BOT>` / `<USER>` are substituted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from chatbot.personas.cards.model import Card, Lorebook
from chatbot.personas.schema import Persona

DEFAULT_EXAMPLE_TOKENS = 300
_START = re.compile(r"^\s*<START>\s*$", re.IGNORECASE | re.MULTILINE)
_ORIGINAL = re.compile(r"\{\{original\}\}", re.IGNORECASE)


def substitute(text: str, char: str, user: str) -> str:
    """The card's placeholders, case-insensitively, with the names they stand for."""
    text = re.sub(r"\{\{char\}\}|<bot>|<char>", lambda _: char, text, flags=re.IGNORECASE)
    return re.sub(r"\{\{user\}\}|<user>", lambda _: user, text, flags=re.IGNORECASE)


def example_blocks(mes_example: str) -> list[str]:
    """`mes_example` split at its `<START>` lines, each block trimmed, empty ones dropped."""
    return [block.strip() for block in _START.split(mes_example) if block.strip()]


def lead_line(char: str, user: str) -> str:
    return f"Write {char}'s next reply in a fictional chat between {char} and {user}. Stay in character."


@dataclass
class Mapped:
    persona: Persona
    lorebook: Lorebook | None
    examples_kept: int = 0
    examples_total: int = 0
    notes: list[str] = field(default_factory=list)


def control_code(card: Card, user: str, examples: list[str]) -> str:
    data, char = card.data, card.data.char_name
    system = _ORIGINAL.sub(lead_line(char, user), data.system_prompt).strip() or lead_line(char, user)
    parts = [system, data.description.strip()]
    if data.personality.strip():
        parts.append(f"{char}'s personality: {data.personality.strip()}")
    if data.scenario.strip():
        parts.append(f"Scenario: {data.scenario.strip()}")
    if examples:
        parts.append(f"Examples of how {char} talks:\n\n" + "\n\n".join(examples))
    return substitute("\n\n".join(p for p in parts if p), char, user)


def to_persona(
    card: Card,
    name: str,
    user_name: str,
    count_tokens: Callable[[str], int],
    example_tokens: int = DEFAULT_EXAMPLE_TOKENS,
    source_card: str = "",
) -> Mapped:
    data, char = card.data, card.data.char_name
    blocks = [substitute(b, char, user_name) for b in example_blocks(data.mes_example)]
    kept: list[str] = []
    used = 0
    for block in blocks:  # whole dialogues, in the card's order, while they fit
        cost = count_tokens(block)
        if used + cost > example_tokens:
            break
        kept.append(block)
        used += cost
    greetings = [substitute(g, char, user_name) for g in (data.first_mes, *data.alternate_greetings) if g.strip()]
    book = data.character_book
    has_book = book is not None and any(e.enabled and e.content.strip() for e in book.entries)
    notes = []
    if len(kept) < len(blocks):
        notes.append(
            f"example dialogue: kept {len(kept)} of {len(blocks)} blocks ({used} tokens; the budget is {example_tokens})"
        )
    summary = (data.creator_notes or data.description).strip().splitlines()
    persona = Persona(
        name=name,
        display_name=data.name,
        description=(summary[0][:200] if summary else f"Imported character card: {data.name}"),
        kind="control_code",
        control_code=control_code(card, user_name, kept),
        placement="system",
        greeting=greetings[0] if greetings else "",
        post_history=substitute(data.post_history_instructions.strip(), char, user_name),
        first_messages=tuple(greetings),
        lorebook="lorebook.json" if has_book else "",
        source_card=source_card,
    )
    return Mapped(persona, book if has_book else None, len(kept), len(blocks), notes)
