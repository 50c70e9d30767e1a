"""`persona train --from-history`: the replies a user liked, in the contexts they were answered in.

Each liked reply (rating "good", complete, by one of the given personas) is one example: the
stored branch before it is its history, windowed as at inference (each reply's stored window
start), its question the message, and what memory recalled for it (`messages.recalled`) its
memory block. Only liked replies are targets: every other reply around
them (disliked, unrated, another liked one) is history, never a target. The examples are also
written as JSONL (those replies `"target": false`), one line per liked reply, so the held-out
split and `persona eval` can refer to them by line.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.errors import UserError
from chatbot.personas.data import Example
from chatbot.store.records import MessageRecord


@dataclass(frozen=True)
class LikedReply:
    example: Example
    message_id: int
    conversation_id: int
    line: dict  # the JSONL record


def liked_replies(store, persona_names: set[str], conversation_ids: list[int] | None = None) -> list[LikedReply]:
    from chatbot.session import turns_from_messages  # torch: only when training

    out: list[LikedReply] = []
    for reply in store.rated_replies("good", conversation_ids):
        if reply.persona is None or reply.persona.name not in persona_names:
            continue
        if reply.status != "complete" or not reply.content.strip():
            continue
        branch = store.active_branch(reply.conversation_id, reply.id)
        question = branch[-2] if len(branch) >= 2 else None
        if question is None or question.role != "user" or not question.content.strip():
            continue  # an opening message answers no question
        turns = turns_from_messages(branch[:-2])
        number = len(out) + 1
        example = Example(tuple(turns), question.content, reply.content, number, recalled_for(store, reply.id))
        out.append(LikedReply(example, reply.id, reply.conversation_id, _jsonl_record(branch, reply)))
    return out


def recalled_for(store, message_id: int) -> tuple:
    """The passages memory put into the reply's prompt, as they read now (none when memory was off)."""
    from chatbot.memory.recall import StoredPassages

    items = store.recalled_of(message_id)
    return tuple(StoredPassages(store, items).passages(None)) if items else ()


def _jsonl_record(branch: list[MessageRecord], reply: MessageRecord) -> dict:
    """The liked reply the one target, everything before it history."""
    messages = _as_jsonl(branch, lambda message, first: message.id == reply.id)
    return {"messages": messages, "meta": {"message_id": reply.id, "conversation_id": reply.conversation_id}}


def _as_jsonl(branch: list[MessageRecord], is_target) -> list[dict]:
    """A branch as training-data messages; `is_target(reply, opening)` picks the targets (the
    others say "target": false). A question whose reply never came gets an empty one."""
    messages: list[dict] = []
    for message in branch:
        if message.role == "user":
            if messages and messages[-1]["role"] == "user":
                messages.append({"role": "assistant", "content": "", "target": False})
            messages.append({"role": "user", "content": message.content})
        elif message.role == "assistant":
            target = is_target(message, not messages) and bool(message.content.strip())
            messages.append({"role": "assistant", "content": message.content, **({} if target else {"target": False})})
    return messages


def require_enough(liked: list[LikedReply], names: set[str]) -> None:
    if len(liked) < 2:
        who = ", ".join(sorted(names))
        raise UserError(
            f"{len(liked)} liked repl{'y' if len(liked) == 1 else 'ies'} of {who} in the history: at least 2 are "
            "needed (one to train on, one held out); rate replies with `chatbot history rate ID good` "
            "(or in the TUI, alt+g), or train on another persona's with --replies-of PERSONA"
        )


def branch_record(branch: list[MessageRecord]) -> dict | None:
    """A stored branch as one JSONL conversation whose every answered reply is a target (an
    opening message, or a reply that never got text, is history only); None if it has no reply."""
    messages = _as_jsonl(branch, lambda message, opening: not opening)
    if messages and messages[-1]["role"] == "user":
        messages.pop()  # an unanswered last question is not part of what is scored
    if not any(m["role"] == "assistant" and m.get("target", True) for m in messages):
        return None
    return {"messages": messages}
