"""Fitting a conversation into the token budget.

The persona always stays; the oldest whole turns go first. Once turns have to be dropped, the
builder drops down to a low-water mark rather than one turn at a time, and keeps that window while
it fits: every change of the first kept turn changes the prompt's prefix and costs the engine a full
re-prefill, so the window should move rarely.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatbot.memory.render import Turn, renderer_for
from chatbot.personas.schema import Persona


@dataclass
class Context:
    prompt_ids: list[int]
    text: str
    dropped_turns: int
    total_turns: int
    stops: tuple[str, ...]
    budget: int
    message: str = ""  # the latest message as the model sees it (cut if it was too long)
    message_cut_to: int | None = None  # tokens kept of an over-long latest message
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids)


class ContextBuilder:
    def __init__(self, tokenizer, budget: int = 2048, low_water: float = 0.75):
        self.tokenizer = tokenizer
        self.renderer = renderer_for(tokenizer)
        self.budget = budget
        self.low_water = low_water
        self._first_kept = 0  # the window's start, remembered between turns

    def _encode(self, text: str) -> list[int]:
        # The rendered text already carries any special tokens (BOS, chat markers).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _ids(self, persona: Persona, turns: list[Turn]) -> tuple[str, list[int]]:
        text = self.renderer.render(persona, turns)
        return text, self._encode(text)

    def build(self, persona: Persona, history: list[Turn], message: str, reserved: int = 0) -> Context:
        """Context for answering `message` after `history` (complete turns, oldest first).
        `reserved` tokens of the budget are taken by something else (a soft prompt)."""
        budget = max(self.budget - reserved, 1)
        turns = [*history, Turn(message)]
        warnings: list[str] = []
        first = min(self._first_kept, len(history))
        text, ids = self._ids(persona, turns[first:])
        if len(ids) > budget:
            first = self._smallest_start(persona, turns, int(budget * self.low_water), lower=first)
            text, ids = self._ids(persona, turns[first:])
        cut_to = None
        if len(ids) > budget:  # the latest message alone is too long: keep its beginning
            message, cut_to = self._cut_message(persona, message, budget)
            turns[-1] = Turn(message)
            first = len(history)
            text, ids = self._ids(persona, turns[first:])
            warnings.append(f"your message was cut to {cut_to} tokens to fit the context budget of {budget}")
        self._first_kept = first
        return Context(
            prompt_ids=ids,
            text=text,
            dropped_turns=first,
            total_turns=len(turns),
            stops=self.renderer.stops,
            budget=budget,
            message=message,
            message_cut_to=cut_to,
            warnings=warnings,
        )

    def _smallest_start(self, persona: Persona, turns: list[Turn], target: int, lower: int) -> int:
        """The fewest oldest turns to drop so the rest fits `target` tokens (binary search: the
        length only shrinks as turns are dropped). Never drops the latest message."""
        lo, hi = lower, len(turns) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self._ids(persona, turns[mid:])[1]) <= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _cut_message(self, persona: Persona, message: str, budget: int) -> tuple[str, int]:
        overhead = len(self._ids(persona, [Turn("")])[1])
        room = max(budget - overhead, 1)
        ids = self._encode(message)
        keep = room
        while keep > 0:
            cut = self.tokenizer.decode(ids[:keep], skip_special_tokens=True)
            if len(self._ids(persona, [Turn(cut)])[1]) <= budget:
                return cut, keep
            keep -= max(1, keep // 20)
        return "", 0
