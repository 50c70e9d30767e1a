"""Store-side queries for memory recall: ranked candidate messages, what a reply recalled, forgetting.

On SQLite, candidates come from the FTS5 index of migration 0002, ranked by bm25; on PostgreSQL
from the tsvector index of migration 0004, ranked by ts_rank (recall_postgres.py); elsewhere from a
LIKE search ranked by how many of the query's words a message holds. The caller (memory/recall.py)
builds the FTS5 expression from the user's words (quoted, so never query syntax).

Which messages may be recalled (`Scope`): those of the open conversation up to `up_to_id` (the
caller keeps only the dropped turns of its branch), plus, with a long-term scope, the messages of
every other conversation (`others="all"`) or of the others that had a reply from the persona
named (`others="persona"`). Empty messages are never candidates (a forgotten one is empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.orm import Session

from chatbot.errors import NotFoundError, UsageError
from chatbot.store import recall_postgres
from chatbot.store.models import Conversation, MemorySummary, Message, PersonaVersion, utcnow
from chatbot.store.records import RecalledItem

CANDIDATES = 64


@dataclass(frozen=True)
class Scope:
    conversation_id: int | None  # the open conversation (None: not stored yet)
    up_to_id: int | None  # its newest message that may be recalled (None: none of it)
    others: str = "none"  # none | persona | all
    persona: str | None = None


@dataclass(frozen=True)
class RecallHit:
    message_id: int
    conversation_id: int
    conversation_title: str | None
    role: str
    content: str
    score: float


_FTS = """
    SELECT m.id, m.conversation_id, m.role, m.content, c.title, bm25(messages_fts) AS rank
    FROM messages_fts
    JOIN messages AS m ON m.id = messages_fts.rowid
    JOIN conversations AS c ON c.id = m.conversation_id
    WHERE messages_fts MATCH :query AND m.content != '' AND ({where})
    ORDER BY rank, m.id
    LIMIT :limit
"""


def _persona_conversations(name: str):
    return (
        select(Message.conversation_id)
        .join(PersonaVersion, PersonaVersion.id == Message.persona_version_id)
        .where(PersonaVersion.name == name)
    )


def _scope_sql(scope: Scope) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    if scope.conversation_id is not None and scope.up_to_id is not None:
        clauses.append("(m.conversation_id = :cid AND m.id <= :up_to)")
        params.update(cid=scope.conversation_id, up_to=scope.up_to_id)
    other = "m.conversation_id != :cid" if scope.conversation_id is not None else "1 = 1"
    params.setdefault("cid", scope.conversation_id if scope.conversation_id is not None else -1)
    if scope.others == "all":
        clauses.append(f"({other})")
    elif scope.others == "persona" and scope.persona:
        clauses.append(
            f"({other} AND m.conversation_id IN (SELECT m2.conversation_id FROM messages AS m2 "
            "JOIN persona_versions AS p ON p.id = m2.persona_version_id WHERE p.name = :persona))"
        )
        params["persona"] = scope.persona
    return " OR ".join(clauses) or "0 = 1", params


def _scope_filter(scope: Scope):
    """The same scope as SQLAlchemy criteria (for the LIKE fallback)."""
    clauses = []
    if scope.conversation_id is not None and scope.up_to_id is not None:
        clauses.append((Message.conversation_id == scope.conversation_id) & (Message.id <= scope.up_to_id))
    other = Message.conversation_id != (scope.conversation_id if scope.conversation_id is not None else -1)
    if scope.others == "all":
        clauses.append(other)
    elif scope.others == "persona" and scope.persona:
        clauses.append(other & Message.conversation_id.in_(_persona_conversations(scope.persona)))
    return or_(*clauses) if clauses else None


def candidates(session: Session, match: str, words: list[str], scope: Scope, limit: int = CANDIDATES) -> list[RecallHit]:
    """The best-ranked messages in scope for an FTS5 expression `match` (on SQLite) or for any of
    `words` (elsewhere, each a prefix on PostgreSQL), best first."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        where, params = _scope_sql(scope)
        rows = recall_postgres.candidates(session, words, where, params, limit)
        return [RecallHit(r.id, r.conversation_id, r.title, r.role, r.content, float(r.rank)) for r in rows]
    if dialect != "sqlite":
        return _candidates_like(session, words, scope, limit)
    where, params = _scope_sql(scope)
    rows = session.execute(text(_FTS.format(where=where)), {"query": match, "limit": limit, **params})
    return [RecallHit(r.id, r.conversation_id, r.title, r.role, r.content, -r.rank) for r in rows]


def _candidates_like(session: Session, words: list[str], scope: Scope, limit: int) -> list[RecallHit]:
    criteria = _scope_filter(scope)
    if criteria is None or not words:
        return []
    escaped = [w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in words]
    stmt = (
        select(Message, Conversation.title)
        .join(Conversation)
        .where(criteria, Message.content != "", or_(*(Message.content.ilike(f"%{w}%", escape="\\") for w in escaped)))
        .order_by(Message.id.desc())
        .limit(limit * 4)
    )
    hits = []
    for message, title in session.execute(stmt):
        lowered = message.content.lower()
        score = sum(1 for w in words if w.lower() in lowered)
        hits.append(RecallHit(message.id, message.conversation_id, title, message.role, message.content, float(score)))
    hits.sort(key=lambda h: (-h.score, h.message_id))
    return hits[:limit]


def messages_by_id(session: Session, ids: list[int]) -> dict[int, RecallHit]:
    """The stored messages among `ids` (a forgotten or deleted one is absent or empty)."""
    if not ids:
        return {}
    rows = session.execute(
        select(Message, Conversation.title).join(Conversation).where(Message.id.in_(set(ids)))
    )
    return {m.id: RecallHit(m.id, m.conversation_id, title, m.role, m.content, 0.0) for m, title in rows}


def record_recalled(session: Session, message_id: int, items: list[dict[str, Any]]) -> None:
    session.execute(update(Message).where(Message.id == message_id).values(recalled=items))


def recalled_of(session: Session, message_id: int) -> list[dict[str, Any]] | None:
    """What was recalled for a reply: a list (maybe empty) when memory was on, None when off."""
    row = session.get(Message, message_id)
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    return None if row.recalled is None else list(row.recalled)


def forget(session: Session, message_id: int) -> int:
    """Erase a message's text: it leaves the search index (the update trigger) and can never be
    recalled or shown again; the message keeps its place in the conversation. Returns its
    conversation's id."""
    row = session.get(Message, message_id)
    if row is None:
        raise NotFoundError(f"no message with id {message_id}")
    if row.status == "streaming":
        raise UsageError(f"message {message_id} is still being written: forget it once it is finished")
    row.content = ""
    row.stats_extra = {**(row.stats_extra or {}), "forgotten": True}
    _drop_summaries(session, row.conversation_id)
    row.updated_at = utcnow()
    return row.conversation_id



def recalled_records(raw: Any) -> list[RecalledItem] | None:
    """`messages.recalled` as records (None: memory was off); an item that is not one is left out."""
    if raw is None:
        return None
    items = []
    for item in raw if isinstance(raw, list) else []:
        try:
            items.append(RecalledItem.model_validate({k: item.get(k) for k in RecalledItem.model_fields if k in item}))
        except (AttributeError, ValueError):
            continue
    return items


def own_recalled(items: list[RecalledItem] | None, message_ids: dict[int, int], conversation_id: int):
    """The items of a conversation's export or import: a passage of another conversation is left
    out (an export never carries another conversation's text, nor ids that mean nothing elsewhere);
    a message of this one gets its id in `message_ids` (old -> new) and `conversation_id`."""
    if items is None:
        return None
    kept = []
    for item in items:
        if item.message_id is None:
            kept.append(item)
        elif item.message_id in message_ids:
            kept.append(item.model_copy(update={"message_id": message_ids[item.message_id],
                                                "conversation_id": conversation_id}))
    return kept


# -- the rolling summary (memory/summary.py) -----------------------------------------------------


def summary_for(session: Session, conversation_id: int, message_ids: list[int]) -> tuple[int, str] | None:
    """The newest summary of the conversation written through one of `message_ids` (a branch's
    dropped messages): (through_message_id, content), or None."""
    if not message_ids:
        return None
    row = session.scalars(
        select(MemorySummary)
        .where(MemorySummary.conversation_id == conversation_id, MemorySummary.through_message_id.in_(set(message_ids)))
        .order_by(MemorySummary.through_message_id.desc(), MemorySummary.id.desc())
        .limit(1)
    ).first()
    return None if row is None else (row.through_message_id, row.content)


def save_summary(session: Session, conversation_id: int, through_message_id: int, content: str, model: str | None) -> None:
    session.add(MemorySummary(conversation_id=conversation_id, through_message_id=through_message_id,
                              content=content, model=model))


def _drop_summaries(session: Session, conversation_id: int) -> None:
    """A forgotten message may be in any summary of its conversation, and in what replies recalled of
    them: both go (the summary is written again from what is left)."""
    session.execute(delete(MemorySummary).where(MemorySummary.conversation_id == conversation_id))
    rows = session.scalars(select(Message).where(Message.conversation_id == conversation_id, Message.recalled.is_not(None)))
    for message in rows:
        kept = [i for i in message.recalled if not (isinstance(i, dict) and i.get("source") == "summary")]
        if len(kept) != len(message.recalled):
            message.recalled = kept
