"""A character card's lorebook (world info): which entries the recent messages call up.

Rules (docs/personas.md, "Lorebook"):
- an entry is a candidate when it is enabled, has content, and either is `constant` or one of its
  `keys` occurs in the last `scan_depth` messages (the latest message included; default 4);
  case-insensitive unless `case_sensitive`; with `use_regex`, the keys are regular expressions
  (an invalid one, or one that runs too long, does not match; `constant` is then ignored);
- `selective` with `secondary_keys`: one of those must occur too;
- `recursive_scanning`: a chosen entry's content is scanned as well (a few rounds at most);
- the book's `token_budget` (or the caller's, whichever is smaller) is filled by importance:
  higher `priority` first, then higher `insertion_order` (the spec drops the lowest first), then
  the earlier entry; one that does not fit is skipped for smaller ones;
- the chosen entries are placed by `insertion_order`, lowest first.

Pure: no model, no store; `count` measures a text in tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import regex
from pydantic import ValidationError

from chatbot.errors import UserError
from chatbot.personas.cards.model import Lorebook, LoreEntry

DEFAULT_SCAN_DEPTH = 4
DEFAULT_TOKEN_BUDGET = 256
RECURSION_ROUNDS = 3
REGEX_TIMEOUT_S = 0.05  # a card's pattern is untrusted: catastrophic backtracking must not hang a turn


@dataclass(frozen=True)
class Chosen:
    index: int  # the entry's position in the book
    entry: LoreEntry
    tokens: int
    why: str  # "constant", or the key that matched


def _matches(key: str, text: str, entry: LoreEntry) -> bool:
    if not key:
        return False
    if entry.use_regex:
        try:
            return regex.search(key, text, timeout=REGEX_TIMEOUT_S) is not None
        except (regex.error, TimeoutError, RecursionError, ValueError):
            return False
    if entry.case_sensitive:
        return key in text
    return key.casefold() in text.casefold()


def _key_hit(keys: Sequence[str], text: str, entry: LoreEntry) -> str | None:
    return next((key for key in keys if _matches(key, text, entry)), None)


def _why(entry: LoreEntry, text: str) -> str | None:
    """Why the entry is called up by `text`, or None."""
    if not entry.enabled or not entry.content.strip():
        return None
    if entry.constant and not entry.use_regex:
        return "constant"
    hit = _key_hit(entry.keys, text, entry)
    if hit is None:
        return None
    if entry.selective and entry.secondary_keys and not entry.use_regex:
        if _key_hit(entry.secondary_keys, text, entry) is None:
            return None
    return hit


def select(
    book: Lorebook, recent: Sequence[str], count: Callable[[str], int], budget: int | None = None
) -> list[Chosen]:
    """The entries `recent` (messages, oldest first, the latest last) call up, within the budget,
    in insertion order."""
    depth = DEFAULT_SCAN_DEPTH if book.scan_depth is None else book.scan_depth
    text = "\n".join(recent[-depth:]) if depth else ""
    limit = min(b for b in (book.token_budget or DEFAULT_TOKEN_BUDGET, budget) if b is not None)
    found: dict[int, str] = {}
    scanned = text
    for _ in range(RECURSION_ROUNDS if book.recursive_scanning else 1):
        new = {i: why for i, e in enumerate(book.entries) if i not in found and (why := _why(e, scanned))}
        if not new:
            break
        found.update(new)
        scanned = text + "\n" + "\n".join(book.entries[i].content for i in found)
    ranked = sorted(found, key=lambda i: (-(book.entries[i].priority or 0), -book.entries[i].insertion_order, i))
    chosen: list[Chosen] = []
    used = 0
    for i in ranked:
        tokens = count(book.entries[i].content)
        if used + tokens <= limit:
            chosen.append(Chosen(i, book.entries[i], tokens, found[i]))
            used += tokens
    return sorted(chosen, key=lambda c: (c.entry.insertion_order, c.index))


def load(path: Path) -> Lorebook:
    """A persona's lorebook file (as `persona import` writes it); a problem is one line."""
    try:
        return Lorebook.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the lorebook: {exc}") from exc
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{path}: lorebook field '{where}': {first['msg']}") from None
        raise UserError(f"{path}: not a lorebook ({type(exc).__name__})") from None


# -- as a memory source (memory/passages.py) ------------------------------------------------------

HEADING = "World info:"


class LorebookSource:
    """A persona's lorebook as a source of the memory block: the entries that the kept window
    and the latest message call up, within the book's budget, as passages under one heading."""

    def __init__(self, book: Lorebook, count: Callable[[str], int]):
        self.book = book
        self.count = count

    def passages(self, request) -> list:
        from chatbot.memory.passages import MemoryPassage

        recent = [text for turn in request.kept for text in (turn.user, turn.reply or "") if text]
        chosen = select(self.book, [*recent, request.message], self.count)
        return [MemoryPassage("lorebook", c.entry.content, heading=HEADING) for c in chosen]


def lorebook_sources(installed, tokenizer) -> list[LorebookSource]:
    """[the persona's lorebook as a memory source], or [] when it has none."""
    name = installed.persona.lorebook
    if not name or installed.folder is None:
        return []
    from chatbot.memory.tokens import content_encoder

    encode = content_encoder(tokenizer)
    return [LorebookSource(load(installed.folder / name), lambda text: len(encode(text)))]
