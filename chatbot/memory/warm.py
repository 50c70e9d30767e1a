"""Prefix warm-up between turns: keep prefix reuse with a memory block.

The memory block sits at the start of the latest message (memory/passages.py). On the next turn
that message is an earlier turn, rendered without its block (the block is the memory of one
reply, not part of the conversation), so the engine's cache diverges there: the last exchange
would be prefilled again together with the new block and message.

Keeping every turn's block in the window instead would cost the window the block's share of the
budget on every kept turn (at budget 512, ~100 tokens of block beside ~35 of exchange): the
window would move on almost every turn, each move a full prefill. So the window stays as it is,
and once a reply is finished the next turn's stable part (the persona, the kept window with the
last exchange, the template's opening of the next user turn) is prefilled in the background,
while the user reads and types. When the next message comes, only its block and the message
itself are prefilled. The work is moved into idle time, not removed: the benchmark
(benchmarks/memory.py) reports both.

The stable part is found by building the next turn's context for a stand-in message, the last one
sent (messages are of similar lengths, so the window moves where it will for the real one): the
same window rule, the same memory share, and the ids before the latest message's content piece.
"""

from __future__ import annotations

import threading
import time

PLACEHOLDER = "?"  # the stand-in before the first message


class PrefixWarmer:
    """The work between two turns, on a thread of its own: first the rolling summary's update
    where it is on (memory/summary.py), then the prefill of the next turn's stable prefix through
    the engine's `next_token_logits` (which keeps its KV cache). `wait()` joins it."""

    def __init__(self, session, warm, summarize: bool):
        self.ids: list[int] = []
        self.error: str | None = None
        self.seconds: float | None = None
        self.summarized = False
        self._thread = threading.Thread(target=self._run, args=(session, warm, summarize), name="between-turns")
        self._thread.start()

    def _run(self, session, warm, summarize: bool) -> None:
        from chatbot.errors import UserError

        started = time.perf_counter()
        try:  # an optimisation and a summary: a failure here costs the next turn only time
            if summarize:
                from chatbot.memory.summary import update_summary

                self.summarized = update_summary(session)
            if warm is not None:
                prefix = session.prefix()
                stand_in = next((t.user for t in reversed(session.history) if t.user.strip()), PLACEHOLDER)
                self.ids = session.builder.stable_prefix(session.context_for(stand_in, prefix))
                if self.ids:
                    warm(self.ids, prefix)
        except (UserError, ValueError, RuntimeError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = time.perf_counter() - started

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def warm_next_turn(session) -> PrefixWarmer | None:
    """Start the work between turns: the summary's update (setting `memory_summary`) and, for an
    interactive session, the prefill of the next prompt's stable part (where the engine keeps a
    cache of its own: not the openai and remote engines). None: nothing to do."""
    engine = session.runtime.engine
    warm = getattr(engine, "next_token_logits", None) if session.warm_between_turns else None
    if getattr(engine, "takes_messages", False):
        warm = None
    summarize = bool(session.settings.memory_summary and session.settings.memory != "off" and session.store)
    if warm is None and not summarize:
        return None
    return PrefixWarmer(session, warm, summarize)
