"""Recall: stored messages that left the window (or, opted in, other conversations) as memory passages.

The query is the latest message's content words (stop words left out, each word a prefix of its
light stem, any of them may match), ranked by the store (FTS5 bm25 on SQLite). A message with no
content word ("and then?") asks with the last kept exchange instead. Candidates of the open
conversation are kept only if they are among the dropped turns of the open branch: the kept
window is in the prompt already, and other branches are not this conversation's story. A
candidate scoring below `MIN_SCORE_RATIO` of the best one left is cut: it matched only words that
most of the history holds.

Scopes (`--memory`, setting `memory`): off; conversation (default: the open conversation only);
persona (also every other conversation that had a reply from the same persona); all (every
conversation). A passage from another conversation names it in the block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatbot.memory.passages import MemoryPassage, MemoryRequest
from chatbot.memory.render import Turn
from chatbot.store.recall import Scope

SCOPES = ("off", "conversation", "persona", "all")
PASSAGES = 8  # best candidates handed to the block (it keeps what fits)
# A candidate scoring below this share of the best recallable one is left out: it matched only
# words that most of the history holds ("something" in every "Tell me something about ...").
MIN_SCORE_RATIO = 0.25
WORD = re.compile(r"[^\W_]+")
SUFFIXES = ("ing", "ed", "es", "s", "e")
STOP_WORDS = frozenset(
    """a about after again all also am an and any are as at be been before being but by can could
    did do does doing don for from had has have having he her here hers him his how i i'm if in into is
    it its it's just know let me mine more most my myself no nor not now of off on once only or other
    our ours out over please remember said say so some such tell than that the their them then there
    these they this those to too under up us very was we were what when where which while who whom
    why will with would you your yours yourself""".split()
)


def content_words(text: str) -> list[str]:
    """The words worth looking for, lowercased, first-seen order."""
    words: list[str] = []
    for word in WORD.findall(text.lower()):
        if word not in STOP_WORDS and (len(word) > 1 or word.isdigit()) and word not in words:
            words.append(word)
    return words


def stem(word: str) -> str:
    """A light stem, matched as a prefix: "lives", "lived", "living" all find "live"."""
    if word.isdigit() or len(word) <= 3:
        return word
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def fts_expression(words: list[str]) -> str:
    """Any of the words, each a quoted prefix (never FTS5 syntax)."""
    return " OR ".join('"' + stem(w).replace('"', '""') + '"*' for w in words)


class RecallSource:
    """A memory source (memory/passages.py) over the store."""

    def __init__(self, store, scope: str, persona: str | None, limit: int = PASSAGES):
        if scope not in SCOPES:
            raise ValueError(f"unknown memory scope {scope!r}")
        self.store, self.scope, self.persona, self.limit = store, scope, persona, limit

    def passages(self, request: MemoryRequest) -> list[MemoryPassage]:
        if self.scope == "off":
            return []
        allowed = _ids(request.dropped)
        if not allowed and self.scope == "conversation":
            return []
        words = content_words(request.message) or _last_exchange_words(request.kept)
        if not words:
            return []
        scope = Scope(
            conversation_id=request.conversation_id,
            up_to_id=max(allowed) if allowed else None,
            others={"conversation": "none"}.get(self.scope, self.scope),
            persona=self.persona,
        )
        hits = self.store.recall_candidates(fts_expression(words), [stem(w) for w in words], scope)
        passages, best = [], None
        for hit in hits:
            if hit.conversation_id == request.conversation_id and hit.message_id not in allowed:
                continue  # in the kept window already, or on another branch
            best = hit.score if best is None else best
            if hit.score < MIN_SCORE_RATIO * best:
                break  # best first: the rest score lower still
            passages.append(
                MemoryPassage("recall", hit.content, hit.message_id, hit.conversation_id, hit.role,
                              hit.conversation_title)
            )
            if len(passages) == self.limit:
                break
        return passages


class StoredPassages:
    """The passages a stored reply recalled (`messages.recalled`), as they read now: replays
    what the model saw (a message forgotten since is left out)."""

    def __init__(self, store, items: list[dict]):
        self.store, self.items = store, items

    def passages(self, request: MemoryRequest) -> list[MemoryPassage]:
        found = self.store.recall_messages([i["message_id"] for i in self.items if i.get("message_id") is not None])
        passages = []
        for item in self.items:
            hit = found.get(item.get("message_id"))
            if item.get("message_id") is None:
                passages.append(MemoryPassage(item.get("source", "memory"), item.get("text", ""), heading=item.get("heading")))
            elif hit is not None:
                passages.append(MemoryPassage(item.get("source", "recall"), hit.content, hit.message_id,
                                              hit.conversation_id, hit.role, hit.conversation_title))
        return passages


def sources_for(store, scope: str, persona: str | None, summary: bool = False) -> list:
    """The memory sources of a turn: the rolling summary where it is on (memory/summary.py), then
    recall in `scope` (none without a store or with scope off)."""
    if store is None or scope == "off":
        return []
    from chatbot.memory.summary import SummarySource

    return ([SummarySource(store)] if summary else []) + [RecallSource(store, scope, persona)]


def _ids(turns: Sequence[Turn]) -> set[int]:
    """The stored messages of turns the model could see (an empty reply it never does)."""
    from chatbot.memory.summary import message_ids

    return set(message_ids(turns))


def _last_exchange_words(kept: Sequence[Turn]) -> list[str]:
    if not kept:
        return []
    last = kept[-1]
    return content_words(f"{last.user} {last.reply or ''}")
