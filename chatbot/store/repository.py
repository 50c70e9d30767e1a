"""Queries and changes, each a function of an open Session (the Store decides the transaction)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, aliased

from chatbot.errors import NotFoundError, UsageError, UserError
from chatbot.store.models import (
    FINAL_STATUSES,
    RATINGS,
    ROLES,
    STAT_COLUMNS,
    Conversation,
    Message,
    PersonaSwitch,
    PersonaVersion,
    utcnow,
)
from chatbot.store.recall import recalled_records
from chatbot.store.records import (
    ConversationRecord,
    ConversationSummary,
    MessageRecord,
    PersonaRef,
    PersonaSwitchRecord,
    PersonaVersionRecord,
)

TITLE_LENGTH = 60


# --- Personas ---------------------------------------------------------------------------------


def persona_hash(definition: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a persona definition (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def persona_version(session: Session, name: str, kind: str, definition: dict[str, Any]) -> int:
    """Get or create the row for this exact definition; call under the write lock."""
    digest = persona_hash(definition)
    found = session.scalar(
        select(PersonaVersion.id).where(
            PersonaVersion.name == name, PersonaVersion.kind == kind, PersonaVersion.hash == digest
        )
    )
    if found is not None:
        return found
    row = PersonaVersion(name=name, kind=kind, hash=digest, definition=definition)
    session.add(row)
    session.flush()
    return row.id


def persona_definitions(session: Session, ids: Iterable[int]) -> list[PersonaVersionRecord]:
    rows = session.scalars(select(PersonaVersion).where(PersonaVersion.id.in_(set(ids))).order_by(PersonaVersion.id))
    return [PersonaVersionRecord(name=r.name, kind=r.kind, hash=r.hash, definition=r.definition) for r in rows]


def _ref(row: PersonaVersion | None) -> PersonaRef | None:
    return None if row is None else PersonaRef(name=row.name, kind=row.kind, hash=row.hash)


# --- Conversations ----------------------------------------------------------------------------


def derive_title(content: str) -> str:
    """The first non-blank line of a message, whitespace runs collapsed, cut to ~60 characters."""
    line = next((ln for ln in content.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line).strip()
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[:TITLE_LENGTH]
    if " " in cut[TITLE_LENGTH // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def get_conversation(session: Session, conversation_id: int) -> Conversation:
    row = session.get(Conversation, conversation_id)
    if row is None:
        raise NotFoundError(f"no conversation with id {conversation_id}")
    return row


def new_conversation(session: Session, title: str | None, model: str) -> int:
    row = Conversation(title=title, model=model)
    session.add(row)
    session.flush()
    return row.id


def latest_conversation_id(session: Session) -> int | None:
    return session.scalar(
        select(Conversation.id)
        .where(Conversation.archived.is_(False))
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(1)
    )


def _conversation_fields(c: Conversation) -> dict[str, Any]:
    return {k: getattr(c, k) for k in ("id", "title", "created_at", "updated_at", "model", "archived")}


def list_conversations(session: Session, limit: int | None = None) -> list[ConversationSummary]:
    counts = (
        select(Message.conversation_id, func.count().label("n")).group_by(Message.conversation_id).subquery()
    )
    query = (
        select(Conversation, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.conversation_id == Conversation.id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    return [
        ConversationSummary(**_conversation_fields(c), message_count=n) for c, n in session.execute(query)
    ]


def load_conversation(session: Session, conversation_id: int) -> ConversationRecord:
    c = get_conversation(session, conversation_id)
    messages = session.scalars(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at, Message.id)
    ).all()
    switches = session.scalars(
        select(PersonaSwitch)
        .where(PersonaSwitch.conversation_id == conversation_id)
        .order_by(PersonaSwitch.created_at, PersonaSwitch.id)
    ).all()
    return ConversationRecord(
        **_conversation_fields(c),
        settings=dict(c.settings or {}),
        messages=[to_record(m) for m in messages],
        persona_switches=[
            PersonaSwitchRecord(
                id=s.id, persona=_ref(s.persona_version), after_message_id=s.after_message_id, created_at=s.created_at
            )
            for s in switches
        ],
    )


def rename(session: Session, conversation_id: int, title: str) -> None:
    row = get_conversation(session, conversation_id)
    row.title = title
    row.updated_at = utcnow()


def delete(session: Session, conversation_id: int) -> None:
    session.delete(get_conversation(session, conversation_id))


def touch(session: Session, conversation_id: int, when: datetime | None = None) -> None:
    session.execute(
        update(Conversation).where(Conversation.id == conversation_id).values(updated_at=when or utcnow())
    )


# --- Messages ---------------------------------------------------------------------------------


def to_record(m: Message) -> MessageRecord:
    stats: dict[str, Any] = {k: getattr(m, k) for k in STAT_COLUMNS if getattr(m, k) is not None}
    stats.update(m.stats_extra or {})
    return MessageRecord(
        id=m.id,
        parent_id=m.parent_id,
        conversation_id=m.conversation_id,
        role=m.role,
        content=m.content,
        status=m.status,
        persona=_ref(m.persona_version),
        settings=m.settings or {},
        seed=m.seed,
        stats=stats,
        model=m.model,
        created_at=m.created_at,
        finished_at=m.finished_at,
        rating=m.rating,
        recalled=recalled_records(m.recalled),
    )


def stat_values(stats: dict[str, Any]) -> dict[str, Any]:
    """Column values for a stats dict: the known figures as columns, the rest in `stats_extra`."""
    values: dict[str, Any] = {k: stats.get(k) for k in STAT_COLUMNS}
    extra = {k: v for k, v in stats.items() if k not in STAT_COLUMNS}
    values["stats_extra"] = extra or None
    return values


def check_parent(session: Session, conversation_id: int, parent_id: int | None) -> None:
    if parent_id is None:
        return
    owner = session.scalar(select(Message.conversation_id).where(Message.id == parent_id))
    if owner != conversation_id:
        raise ValueError(f"message {parent_id} is not in conversation {conversation_id}")


def add_message(session: Session, conversation_id: int, role: str, sender: str | None = None, **fields: Any) -> int:
    """`sender`: the owner (host:pid) of the process adding a user message (see `user_parent`)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    conversation = get_conversation(session, conversation_id)
    check_parent(session, conversation_id, fields.get("parent_id"))
    if role == "user":
        fields["parent_id"] = user_parent(session, conversation_id, fields.get("parent_id"), sender)
    now = utcnow()
    row = Message(conversation_id=conversation_id, role=role, created_at=now, updated_at=now, **fields)
    session.add(row)
    if role == "user" and conversation.title is None:
        conversation.title = derive_title(fields.get("content", ""))
    conversation.updated_at = now
    session.flush()
    return row.id


class ConversationMovedOn(UserError):
    """Another writer added to the branch a turn was meant to continue (exit 1)."""


def moved_on(conversation_id: int) -> ConversationMovedOn:
    return ConversationMovedOn(
        f"conversation {conversation_id} moved on while this message was being sent (another message was "
        "added to it): nothing was sent; open it again to see the new turn, then send again"
    )


def user_parent(session: Session, conversation_id: int, parent_id: int | None, owner: str | None = None) -> int | None:
    """A user message follows a finished assistant reply or starts at the root, never another user
    message or a reply still being written. A user message left without a reply (its reply never
    started: written before replies were stored with their question) first gets an empty
    `interrupted` reply, which the model never sees. A reply `owner` (this process) streamed is
    finished for it, even if its last write failed (a full disk)."""
    if parent_id is None:
        return None
    parent = session.get(Message, parent_id)
    if parent.role == "assistant" and parent.status == "streaming" and (owner is None or parent.owner != owner):
        raise moved_on(conversation_id)
    if parent.role == "user":
        if has_children(session, parent_id):
            raise moved_on(conversation_id)
        now = utcnow()
        empty = Message(conversation_id=conversation_id, role="assistant", content="", parent_id=parent_id,
                        status="interrupted", created_at=now, updated_at=now, finished_at=now)
        session.add(empty)
        session.flush()
        return empty.id
    return parent_id


def has_children(session: Session, message_id: int) -> bool:
    return session.scalar(select(exists().where(Message.parent_id == message_id))) or False


def add_turn(
    session: Session, conversation_id: int, content: str, parent_id: int | None, branch: bool, reply: dict[str, Any]
) -> tuple[int, int]:
    """A user message and its `streaming` reply, in one transaction. Unless `branch` (an edit
    beside an existing message), the message must continue its branch: a parent that has gained
    a child since the sender loaded it (another process's turn) is refused, so concurrent writers
    never fork a conversation into hidden side branches."""
    if not branch:
        taken = (
            has_children(session, parent_id)
            if parent_id is not None
            else session.scalar(select(exists().where(Message.conversation_id == conversation_id)))
        )
        if taken:
            get_conversation(session, conversation_id)  # an unknown id is "not found", not "moved on"
            raise moved_on(conversation_id)
    user_id = add_message(
        session, conversation_id, "user", content=content, parent_id=parent_id, status="complete", sender=reply.get("owner")
    )
    reply_id = add_message(session, conversation_id, "assistant", content="", parent_id=user_id, status="streaming", **reply)
    return user_id, reply_id


def update_content(session: Session, message_id: int, content: str) -> None:
    session.execute(update(Message).where(Message.id == message_id).values(content=content, updated_at=utcnow()))


def finish(session: Session, message_id: int, content: str, status: str, stats: dict[str, Any]) -> None:
    if status not in FINAL_STATUSES:
        raise ValueError(f"a reply ends {', '.join(FINAL_STATUSES)}, not {status!r}")
    row = session.get(Message, message_id)
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    now = utcnow()
    for key, value in {**stat_values(stats), "content": content, "status": status}.items():
        setattr(row, key, value)
    row.updated_at = row.finished_at = now
    touch(session, row.conversation_id, now)


def leaf_id(session: Session, conversation_id: int) -> int | None:
    """The most recently created message without children (a regenerated reply, being newest, wins)."""
    child = aliased(Message)
    return session.scalar(
        select(Message.id)
        .where(Message.conversation_id == conversation_id, ~exists().where(child.parent_id == Message.id))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


def branch(messages: Iterable[MessageRecord], leaf: int | None) -> list[MessageRecord]:
    """The root → leaf path of a message tree."""
    by_id = {m.id: m for m in messages}
    path: list[MessageRecord] = []
    while leaf is not None:
        if leaf not in by_id:
            raise NotFoundError(f"no message with id {leaf} in this conversation")
        path.append(by_id[leaf])
        leaf = by_id[leaf].parent_id
    return path[::-1]


def active_branch(session: Session, conversation_id: int, leaf: int | None = None) -> list[MessageRecord]:
    get_conversation(session, conversation_id)
    if leaf is None:
        leaf = leaf_id(session, conversation_id)
    rows = session.scalars(select(Message).where(Message.conversation_id == conversation_id))
    return branch((to_record(m) for m in rows), leaf)


def siblings(session: Session, message_id: int) -> list[MessageRecord]:
    row = session.get(Message, message_id)
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    parent = Message.parent_id.is_(None) if row.parent_id is None else Message.parent_id == row.parent_id
    rows = session.scalars(
        select(Message).where(Message.conversation_id == row.conversation_id, parent).order_by(Message.created_at, Message.id)
    )
    return [to_record(m) for m in rows]


def rate(session: Session, message_id: int, rating: str | None) -> None:
    """Set (or with None clear) a reply's rating: "good" or "bad" (checked here: the column is a
    plain string)."""
    if rating is not None and rating not in RATINGS:
        raise UsageError(f"a rating is good, bad or none, not {rating!r}")
    row = session.get(Message, message_id)
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    if row.role != "assistant":
        raise UserError(f"message {message_id} is a {row.role} message: only replies are rated")
    row.rating = rating


def rated_replies(session: Session, rating: str, conversation_ids: list[int] | None = None) -> list[MessageRecord]:
    query = select(Message).where(Message.role == "assistant", Message.rating == rating)
    if conversation_ids is not None:
        query = query.where(Message.conversation_id.in_(conversation_ids))
    return [to_record(m) for m in session.scalars(query.order_by(Message.id))]


def record_persona_switch(
    session: Session, conversation_id: int, persona_version_id: int, after_message_id: int | None = None
) -> int:
    get_conversation(session, conversation_id)
    row = PersonaSwitch(
        conversation_id=conversation_id,
        persona_version_id=persona_version_id,
        after_message_id=after_message_id if after_message_id is not None else leaf_id(session, conversation_id),
    )
    session.add(row)
    session.flush()
    touch(session, conversation_id)
    return row.id


def streaming_replies(session: Session) -> list[tuple[int, str | None, datetime]]:
    return list(
        session.execute(select(Message.id, Message.owner, Message.updated_at).where(Message.status == "streaming"))
    )


def mark_interrupted(session: Session, message_ids: list[int]) -> None:
    if message_ids:
        now = utcnow()
        session.execute(
            update(Message)
            .where(Message.id.in_(message_ids), Message.status == "streaming")
            .values(status="interrupted", finished_at=now, updated_at=now)
        )
