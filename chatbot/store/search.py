"""Full-text search over message text: FTS5 (ranked by bm25) on SQLite, the tsvector GIN index of
migration 0004 (ranked by ts_rank) on PostgreSQL, LIKE elsewhere.

The user's words are never passed to FTS5 as query syntax: each whitespace-separated word becomes a
quoted string (an implicit AND of them), so `"`, `*`, `-`, `:`, `(`, `NEAR`, `OR`... are just text.
On PostgreSQL each word is a bound parameter to `phraseto_tsquery` (never tsquery syntax), the
words ANDed.
Snippets are cut by `snippets.py` (FTS5's own are quadratic in a message's hits).
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from chatbot.errors import UsageError
from chatbot.store.models import Conversation, Message, UTCDateTime
from chatbot.store.records import SearchHit
from chatbot.store.snippets import make_snippet

FALLBACK_CONTEXT = 40

FTS_QUERY = text(
    """
    SELECT m.id, m.conversation_id, m.role, m.created_at, c.title, m.content,
           bm25(messages_fts) AS rank
    FROM messages_fts
    JOIN messages AS m ON m.id = messages_fts.rowid
    JOIN conversations AS c ON c.id = m.conversation_id
    WHERE messages_fts MATCH :query
    ORDER BY rank, m.id DESC
    LIMIT :limit
    """
)


# The expression migration 0004 indexes: the query must use it as it is for the index to serve.
PG_DOCUMENT = "to_tsvector('simple'::regconfig, left(m.content, 100000))"
PG_QUERY = """
    SELECT m.id, m.conversation_id, m.role, m.created_at, c.title, m.content,
           ts_rank({document}, q.query) AS rank
    FROM messages AS m
    JOIN conversations AS c ON c.id = m.conversation_id
    CROSS JOIN (SELECT {query} AS query) AS q
    WHERE {document} @@ q.query
    ORDER BY rank DESC, m.id DESC
    LIMIT :limit
"""


def query_words(query: str) -> list[str]:
    """The words to look for; UsageError when there is nothing at all."""
    query = query.replace("\x00", " ")  # FTS5 reads its query as a C string: a NUL would end it
    if not query.split():
        raise UsageError("the search query is empty")
    return [w for w in query.split() if any(ch.isalnum() for ch in w)]


def fts_query(query: str) -> str | None:
    """The FTS5 query for the user's words; None when no word has a letter or digit to look for."""
    words = query_words(query)
    if not words:
        return None
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def search(session: Session, query: str, limit: int = 20) -> list[SearchHit]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _hits(_search_postgres(session, query, limit), query, lambda rank: float(rank))
    if dialect != "sqlite":
        return _search_like(session, query, limit)
    match = fts_query(query)
    if match is None:
        return []
    rows = session.execute(
        FTS_QUERY.columns(created_at=UTCDateTime()),
        {"query": match, "limit": limit},
    )
    return _hits(rows, query, lambda rank: -rank)


def _search_postgres(session: Session, query: str, limit: int):
    words = query_words(query)
    if not words:
        return []
    tsquery = " && ".join(f"phraseto_tsquery('simple'::regconfig, :w{i})" for i in range(len(words)))
    statement = text(PG_QUERY.format(document=PG_DOCUMENT, query=tsquery)).columns(created_at=UTCDateTime())
    return session.execute(statement, {"limit": limit, **{f"w{i}": word for i, word in enumerate(words)}})


def _hits(rows, query: str, score) -> list[SearchHit]:
    words = query_words(query)
    hits = []
    for row in rows:
        snippet = make_snippet(row.content, words)
        hits.append(
            SearchHit(
                conversation_id=row.conversation_id,
                conversation_title=row.title,
                message_id=row.id,
                role=row.role,
                created_at=row.created_at,
                snippet=snippet.text,
                highlights=snippet.highlights,
                score=score(row.rank),
            )
        )
    return hits


def _search_like(session: Session, query: str, limit: int) -> list[SearchHit]:
    """A plain substring search (every word must appear) for databases without FTS5."""
    words = query.split()
    if not words:
        raise UsageError("the search query is empty")
    stmt = select(Message, Conversation.title).join(Conversation)
    for word in words:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Message.content.ilike(f"%{escaped}%", escape="\\"))
    hits = []
    for message, title in session.execute(stmt.order_by(Message.id.desc()).limit(limit)):
        at = message.content.lower().find(words[0].lower())
        lo = max(0, at - FALLBACK_CONTEXT)
        snippet = message.content[lo : at + len(words[0]) + FALLBACK_CONTEXT]
        hits.append(
            SearchHit(
                conversation_id=message.conversation_id,
                conversation_title=title,
                message_id=message.id,
                role=message.role,
                created_at=message.created_at,
                snippet=snippet,
                highlights=[(at - lo, at - lo + len(words[0]))],
                score=0.0,
            )
        )
    return hits
