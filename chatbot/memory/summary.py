"""The rolling summary: the dropped turns of a branch, summarised by the model itself.

Measured, it did not pay on the bundled 135M model (docs/design.md, Memory: its summaries lose
the planted values that recall quotes exactly), so it is off by default (setting
`memory_summary`, `CHATBOT_MEMORY_SUMMARY`); on a model whose summaries keep them it may.

When on, between turns (memory/warm.py's background work, never before a reply), once the window
has dropped turns that no summary covers yet, the model is asked to fold them into the previous
summary (a few turns at a time, greedy) and the result is stored in `memory_summaries`, through
the newest message it covers. The summary goes first in the memory block (source "summary"),
under its own heading; `history context` and the TUI's recalled view show it as any passage.
Forgetting a message of the conversation drops its summaries (store/recall.py), and the next
update writes them again from what is left.
"""

from __future__ import annotations

from chatbot.engine.sampling import SamplingParams
from chatbot.memory.passages import MemoryPassage, MemoryRequest
from chatbot.memory.render import Turn
from chatbot.personas.schema import Persona

HEADING = "A summary of earlier in this conversation:"
INSTRUCTION = ("Write a short summary of the conversation below in three sentences at most. Keep every "
               "name, number and place exactly as written.")
SUMMARY_TOKENS = 80
CHUNK_SHARE = 0.5  # of the budget: the previous summary and the turns it is asked to fold in
WRITER = Persona(name="summary-writer")


def message_ids(turns) -> list[int]:
    """The stored messages of `turns`, oldest first (those the model could see)."""
    ids: list[int] = []
    for turn in turns:
        if turn.user_id is not None and turn.user.strip():
            ids.append(turn.user_id)
        if turn.reply_id is not None and turn.answered:
            ids.append(turn.reply_id)
    return ids


class SummarySource:
    """A memory source (memory/passages.py): the newest summary through the branch's dropped turns."""

    def __init__(self, store):
        self.store = store

    def passages(self, request: MemoryRequest) -> list[MemoryPassage]:
        ids = message_ids(request.dropped)
        if request.conversation_id is None or not ids:
            return []
        found = self.store.memory_summary(request.conversation_id, ids)
        if found is None or not found[1].strip():
            return []
        return [MemoryPassage("summary", found[1], heading=HEADING)]


def _transcript(turns) -> str:
    lines = []
    for turn in turns:
        if turn.user.strip():
            lines.append(f"User: {' '.join(turn.user.split())}")
        if turn.answered:
            lines.append(f"Assistant: {' '.join(turn.reply.split())}")
    return "\n".join(lines)


def _chunks(builder, turns, room: int) -> list[list[Turn]]:
    """Consecutive runs of turns whose transcript fits `room` tokens (a longer turn alone)."""
    chunks: list[list[Turn]] = []
    for turn in turns:
        if chunks and len(builder.encode_content(_transcript([*chunks[-1], turn]))) <= room:
            chunks[-1].append(turn)
        else:
            chunks.append([turn])
    return chunks


def update_summary(session) -> bool:
    """Fold the branch's dropped turns that no summary covers yet into a new summary, as the next
    turn's window drops them (stand-in message: the last one sent). Returns whether one was written."""
    store, conversation_id = session.store, session.conversation_id
    if store is None or conversation_id is None or not session.history:
        return False
    stand_in = next((t.user for t in reversed(session.history) if t.user.strip()), "?")
    dropped = session.history[: session.context_for(stand_in).dropped_turns]
    ids = message_ids(dropped)
    if not ids:
        return False
    found = store.memory_summary(conversation_id, ids)
    summary, through = ("", None) if found is None else (found[1], found[0])
    start = 0 if through is None else next(i for i, t in enumerate(dropped) if through in message_ids([t])) + 1
    new = [t for t in dropped[start:] if message_ids([t])]
    if not new:
        return False
    budget = session.builder.budget
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=SUMMARY_TOKENS)
    for chunk in _chunks(session.builder, new, int(budget * CHUNK_SHARE)):
        previous = f"Summary so far: {summary}\n\n" if summary else ""
        prompt = f"{INSTRUCTION}\n\n{previous}Conversation:\n{_transcript(chunk)}"
        context = session.builder.build(WRITER, [], prompt, budget=budget)
        generation = session.runtime.engine.generate(
            context.prompt_ids, params.model_copy(update={"stop": context.stops})
        )
        text = " ".join(generation.run().split())
        if text:
            summary = text
        store.save_memory_summary(conversation_id, message_ids(chunk)[-1], summary, session.runtime.model_name)
    return True
