"""Snippets of a search hit: a short passage of the message around its best cluster of matches,
with the offsets of every match in it. Built here, in time linear in the message's length.

FTS5 finds and ranks the messages; its own `snippet()` and `highlight()` are quadratic in a
message's hits (a 1 MB paste of one repeated word took minutes), so the passage is cut in Python.
Words are told apart as the index's tokenizer (`unicode61 remove_diacritics 2`) does: runs of
letters and digits, compared without case or diacritics. Where the two disagree (some scripts'
combining marks), a hit still comes back, with its passage and fewer highlights.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, deque
from dataclasses import dataclass

SNIPPET_TOKENS = 12  # words in a passage, as FTS5's snippet() was asked for
LEAD_TOKENS = 3  # words of context before the first match
CLUSTER_CHARS = 80  # matches this close together count as one passage
LOOK_CHARS = 600  # how far around a match the passage's words are looked for (very long words are cut)
ELLIPSIS = "…"
TOKEN = re.compile(r"[^\W_]+")


class _Fold(dict):
    """str.translate table: a character without case or diacritics, always one character for one
    (so offsets in the folded text are offsets in the original)."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        base = unicodedata.normalize("NFD", ch)[0].lower()
        self[code] = folded = base if len(base) == 1 else ch
        return folded


_FOLD = _Fold()


def fold(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD)


def phrase_pattern(words: list[str]) -> re.Pattern[str] | None:
    """One regex for the query's words; each word is a phrase of its tokens (as FTS5 reads a
    quoted string), matched as whole tokens. Group i is word i."""
    alternatives = []
    for word in words:
        tokens = TOKEN.findall(fold(word))
        if tokens:
            alternatives.append(r"(?<![^\W_])(" + r"[\W_]+".join(map(re.escape, tokens)) + r")(?![^\W_])")
    return re.compile("|".join(alternatives)) if alternatives else None


@dataclass(frozen=True)
class Snippet:
    text: str
    highlights: list[tuple[int, int]]


def best_passage(folded: str, pattern: re.Pattern[str], phrases: int) -> tuple[int, int] | None:
    """Where the passage with the most distinct query words runs, from its first match's start to
    its last's end (the earliest of equals); None without a match. One lazy pass over the matches,
    each entering and leaving the sliding window once; a passage with every word ends the reading
    (for one word: at the first match), so most of a long message is never looked at."""
    window: deque[re.Match[str]] = deque()
    counts: Counter[int] = Counter()
    best, best_distinct = None, 0
    for match in pattern.finditer(folded):
        window.append(match)
        counts[match.lastindex or 0] += 1
        # drop matches too far back, and repeats of a word at the front: a later one does as well
        while match.start() - window[0].start() > CLUSTER_CHARS or counts[window[0].lastindex or 0] > 1:
            gone = window.popleft().lastindex or 0
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
        if len(counts) > best_distinct:
            best, best_distinct = (window[0].start(), match.end()), len(counts)
            if best_distinct == phrases:
                break
    return best


def make_snippet(content: str, words: list[str]) -> Snippet:
    """About SNIPPET_TOKENS words of `content` around its best passage for `words`, with '…' where
    it was cut, and the [start, end) offsets of the matches in it."""
    folded = fold(content)
    pattern = phrase_pattern(words)
    where = best_passage(folded, pattern, pattern.groups) if pattern is not None else None
    start, end = where if where is not None else (0, 0)
    cut_lo, cut_hi = _cut(content, start, end)
    head = ELLIPSIS if cut_lo > 0 else ""
    tail = ELLIPSIS if cut_hi < len(content) else ""
    highlights = []
    if where is not None:  # the matches inside the passage only: a bounded stretch of text
        for match in pattern.finditer(folded, cut_lo, cut_hi):
            highlights.append((match.start() - cut_lo + len(head), match.end() - cut_lo + len(head)))
    return Snippet(head + content[cut_lo:cut_hi] + tail, highlights)


def _cut(content: str, start: int, end: int) -> tuple[int, int]:
    """[lo, hi) of the passage: LEAD_TOKENS words before `start`, SNIPPET_TOKENS words in all (more
    before when the text ends first), and at least up to `end`."""
    lo = max(0, start - LOOK_CHARS)
    hi = min(len(content), max(end, start) + LOOK_CHARS)
    tokens = [(m.start(), m.end()) for m in TOKEN.finditer(content, lo, hi)]
    # a word cut by the looking window is not a whole word: leave it out (unless at the text's edge)
    if tokens and lo > 0 and tokens[0][0] == lo:
        tokens = tokens[1:]
    if tokens and hi < len(content) and tokens[-1][1] == hi:
        tokens = tokens[:-1]
    if not tokens:
        return max(0, start - 20), min(len(content), max(end, start + 20))
    at = next((i for i, (_, e) in enumerate(tokens) if e > start), len(tokens) - 1)
    begin = max(0, min(at - LEAD_TOKENS, len(tokens) - SNIPPET_TOKENS))
    stop = min(len(tokens), begin + SNIPPET_TOKENS)
    cut_lo, cut_hi = tokens[begin][0], tokens[stop - 1][1]
    if begin == 0 and lo == 0 and not TOKEN.search(content, 0, cut_lo):
        cut_lo = 0  # the text's start: keep what precedes its first word
    if stop == len(tokens) and hi == len(content) and not TOKEN.search(content, cut_hi):
        cut_hi = len(content)  # likewise at its end
    return cut_lo, max(cut_hi, min(end, len(content)))
