"""Fitting a conversation into the token budget.

The persona always stays; the oldest whole turns go first. Once turns have to be dropped, the
builder drops down to a low-water mark rather than one turn at a time, and keeps that window while
it fits: every change of the first kept turn changes the prompt's prefix and costs the engine a full
re-prefill, so the window should move rarely.

The window belongs to the conversation's branch, not to the builder: each reply records where its
prompt's window started (`Turn.window_start`, stored with the reply), and the next turn starts
from there. Any process that loads the branch (the UI, `ask --continue`, `history context`)
therefore builds the same prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from chatbot.errors import UserError
from chatbot.memory.passages import MemoryBlock, MemoryPassage, MemoryRequest, MemorySource, fit_block
from chatbot.memory.render import Piece, Turn, renderer_for, text_of
from chatbot.memory.tokens import content_encoder, template_encoder
from chatbot.personas.schema import Persona

# An over-long latest message is cut, but never below this share of the budget: a persona that
# leaves less is refused rather than silently eating the message.
MESSAGE_FLOOR = 0.25
# The memory block's share of the budget, unless the caller says otherwise (setting memory_share).
MEMORY_SHARE = 0.25
BLOCK_SLACK = 4


def too_little_room(persona: Persona, taken: str, budget: int) -> UserError:
    return UserError(
        f"persona {persona.name!r} takes {taken} of the context budget of {budget} tokens, "
        "too little is left for your message: shorten its control code or raise CHATBOT_CONTEXT_BUDGET"
    )


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
    pieces: list[Piece] = field(default_factory=list)  # the template's text and content, in order
    # The memory block placed before the latest message (memory/passages.py), and its tokens
    # (the block's share of the budget is kept for it whenever memory has anything to say).
    recalled: list[MemoryPassage] = field(default_factory=list)
    memory_tokens: int = 0

    @property
    def tokens(self) -> int:
        return len(self.prompt_ids)


class ContextBuilder:
    def __init__(self, tokenizer, budget: int = 2048, low_water: float = 0.75):
        self.tokenizer = tokenizer
        self.renderer = renderer_for(tokenizer)
        self.budget = budget
        self.low_water = low_water
        encoders = {False: template_encoder(tokenizer), True: content_encoder(tokenizer)}
        self._longest: int | None = None  # bytes of the vocabulary's longest token
        # Earlier turns render to the same pieces on every turn: encode each once.
        self._piece_ids = lru_cache(maxsize=4096)(lambda text, content: tuple(encoders[content](text)))

    def encode_content(self, text: str) -> list[int]:
        return list(self._piece_ids(text, True))

    def _ids(self, persona: Persona, turns: list[Turn]) -> tuple[list[Piece], list[int]]:
        pieces = self.renderer.pieces(persona, turns)
        ids: list[int] = []
        for piece in pieces:
            ids += self._piece_ids(piece.text, piece.content)
        return pieces, ids

    def build(
        self,
        persona: Persona,
        history: list[Turn],
        message: str,
        reserved: int = 0,
        budget: int | None = None,
        memory: list[MemorySource] | tuple[MemorySource, ...] = (),
        memory_share: float = MEMORY_SHARE,
        conversation_id: int | None = None,
    ) -> Context:
        """Context for answering `message` after `history` (complete turns, oldest first).
        `reserved` tokens of the budget (default: the builder's) are taken by something else (a
        soft prompt). `memory`: sources of passages for the memory block (memory/passages.py).

        With memory, the window is first fitted to the whole budget; if that drops turns (or a
        source has something to say anyway), it is fitted to the budget less the block's share
        and the block gets that share. So the block's share is kept the same from turn to turn
        and the window moves as rarely as without memory."""
        whole = self._build(persona, history, message, reserved, budget)
        if not memory:
            return whole
        if not whole.dropped_turns and not self._passages(memory, history, message, 0, conversation_id):
            return whole
        total = self.budget if budget is None else budget
        room = int((total - reserved) * memory_share)
        try:
            context = self._build(persona, history, message, reserved + room, budget)
        except UserError:
            return whole  # no room for a block beside this persona and message: the window alone
        if context.message_cut_to is not None and whole.message_cut_to is None:
            return whole  # memory never costs the latest message any of its text
        passages = self._passages(memory, history, message, context.dropped_turns, conversation_id)
        # A few tokens of slack: the block and the message are encoded as one piece, which may
        # merge a token across their seam.
        block = fit_block(passages, room - BLOCK_SLACK, self._count, self._cut, conversation_id)
        context.budget = total - reserved
        if not block.text:
            return context  # the window keeps its memory-sized budget: it moves no more than it must
        return self._with_block(persona, history, context, block)

    def stable_prefix(self, context: Context) -> list[int]:
        """The ids before the latest message's content: the persona, the kept window and the
        template's opening of the latest turn, which the next prompt shares whatever the message
        and its memory block (memory/warm.py). Pieces are encoded one by one, so these ids are
        a prefix of `context.prompt_ids`."""
        latest = max((i for i, piece in enumerate(context.pieces) if piece.content), default=None)
        if latest is None:
            return []
        count = sum(len(self._piece_ids(piece.text, piece.content)) for piece in context.pieces[:latest])
        return context.prompt_ids[:count]

    def _passages(self, memory, history, message, dropped: int, conversation_id) -> list[MemoryPassage]:
        request = MemoryRequest(message, history[:dropped], history[dropped:], conversation_id)
        return [p for source in memory for p in source.passages(request)]

    def _count(self, text: str) -> int:
        return len(self._piece_ids(text, True)) if text else 0

    def _cut(self, text: str, tokens: int) -> str:
        return self.tokenizer.decode(self.encode_content(text)[:tokens], skip_special_tokens=False)

    def _with_block(self, persona: Persona, history: list[Turn], context: Context, block: MemoryBlock) -> Context:
        """The context with the block at the start of the latest message (as content, so nothing
        in a passage is ever a special token)."""
        first = context.dropped_turns
        seen = f"{block.text}{context.message}"
        pieces, ids = self._ids(persona, [*history[first:], Turn(seen)])
        context.prompt_ids, context.pieces, context.text = ids, pieces, text_of(pieces)
        context.message, context.recalled = seen, block.passages
        context.memory_tokens = self._count(block.text)
        return context

    def _build(self, persona: Persona, history: list[Turn], message: str, reserved: int, budget: int | None) -> Context:
        total = self.budget if budget is None else budget
        budget = total - reserved
        if budget < 1:
            raise UserError(
                f"persona {persona.name!r} takes {reserved} tokens, the whole context budget of {total}: "
                "raise CHATBOT_CONTEXT_BUDGET or choose another persona"
            )
        self._refuse_hopeless_control_code(persona, budget)
        turns = [*history, Turn(message)]
        warnings: list[str] = []
        first = self._window_start(persona, turns, budget)
        pieces, ids = self._ids(persona, turns[first:])
        if len(ids) > budget:
            first = self._smallest_start(persona, turns, int(budget * self.low_water), lower=first)
            pieces, ids = self._ids(persona, turns[first:])
        cut_to = None
        if len(ids) > budget:  # the latest message alone is too long: keep its beginning
            message, cut_to = self._cut_message(persona, message, budget)
            turns[-1] = Turn(message)
            first = len(history)
            pieces, ids = self._ids(persona, turns[first:])
            warnings.append(f"your message was cut to {cut_to} tokens to fit the context budget of {budget}")
        return Context(
            prompt_ids=ids,
            text=text_of(pieces),
            dropped_turns=first,
            total_turns=len(turns),
            stops=self.renderer.stops,
            budget=budget,
            message=message,
            message_cut_to=cut_to,
            warnings=warnings,
            pieces=pieces,
        )

    def _refuse_hopeless_control_code(self, persona: Persona, budget: int) -> None:
        """A control code many times the budget is refused before it is encoded (10 MB take
        ~20 s): no token covers more bytes than the vocabulary's longest entry, so its length in
        bytes over that bounds its tokens from below."""
        size = len((persona.control_code or "").encode("utf-8", "surrogatepass"))
        if size > 4 * budget and size > 4 * budget * self._longest_token_bytes():  # the vocabulary only then
            raise too_little_room(persona, f"over {4 * budget}", budget)

    def _longest_token_bytes(self) -> int:
        if self._longest is None:
            vocab = getattr(self.tokenizer, "get_vocab", lambda: {})()
            self._longest = max((len(token.encode("utf-8", "surrogatepass")) for token in vocab), default=0) or 1 << 30
        return self._longest

    def _window_start(self, persona: Persona, turns: list[Turn], budget: int) -> int:
        """Where the branch's last reply had its window start, if this rule could have put it
        there: a window is only ever moved to where one turn more would not fit the low-water
        mark. A start that fails this (a larger budget now, a shorter persona, an imported
        value) is forgotten and the window is fitted afresh."""
        history = turns[:-1]
        first = next((t.window_start for t in reversed(history) if t.window_start is not None), 0)
        first = min(max(first, 0), len(history))
        if first and len(self._ids(persona, turns[first - 1 :])[1]) <= int(budget * self.low_water):
            return 0
        return first

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
        ids = self.encode_content(message)
        overhead = len(self._ids(persona, [Turn("")])[1])
        floor = min(len(ids), max(int(budget * MESSAGE_FLOOR), 1))
        if budget - overhead < floor:
            raise too_little_room(persona, str(overhead), budget)
        keep = budget - overhead
        while keep > 0:
            cut = self.tokenizer.decode(ids[:keep], skip_special_tokens=False)
            if len(self._ids(persona, [Turn(cut)])[1]) <= budget:
                return cut, keep
            keep -= max(1, keep // 20)
        return "", 0  # not reached: the floor leaves room for at least one token
