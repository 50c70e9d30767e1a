"""Recall candidates on PostgreSQL: the tsvector GIN index of migration 0004, ranked by ts_rank.

The counterpart of the FTS5 query in recall.py: any of the words may match (OR), each as a prefix
of a lexeme (the caller passes light stems: "live" finds "lives" and "living"), best rank first.
The words never reach tsquery syntax: each is a bound array element that `plainto_tsquery` turns
into quoted lexemes; only `:*` and `|` are added around that quoted output. A word with nothing
to index (punctuation only) drops out; with no word left nothing matches.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from chatbot.store.search import PG_DOCUMENT

# string_agg over the words' quoted lexemes: "('dog':*) | ('tea':*)"; NULL when none is left.
_QUERY = """
    SELECT to_tsquery('simple'::regconfig, string_agg('(' || lexemes || ':*)', ' | ')) AS query
    FROM (SELECT plainto_tsquery('simple'::regconfig, w)::text AS lexemes
          FROM unnest(CAST(:words AS text[])) AS w) AS parsed
    WHERE lexemes != ''
"""

_CANDIDATES = """
    SELECT m.id, m.conversation_id, m.role, m.content, c.title, ts_rank({document}, q.query) AS rank
    FROM messages AS m
    JOIN conversations AS c ON c.id = m.conversation_id
    CROSS JOIN ({query}) AS q
    WHERE {document} @@ q.query AND m.content != '' AND ({where})
    ORDER BY rank DESC, m.id
    LIMIT :limit
"""


def candidates(session: Session, words: list[str], where: str, params: dict[str, Any], limit: int):
    """Rows (id, conversation_id, role, content, title, rank) in scope `where`, best first."""
    if not words:
        return []
    statement = text(_CANDIDATES.format(document=PG_DOCUMENT, query=_QUERY, where=where))
    return list(session.execute(statement, {"words": list(words), "limit": limit, **params}))
