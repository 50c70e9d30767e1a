"""Full-text search on PostgreSQL: a GIN index over the messages' tsvector.

PostgreSQL only: SQLite has had its FTS5 index since 0002, so there this revision changes
nothing. The index is on an expression, not a column, so the tables stay the same everywhere.
'simple' matches words as they are (no stemming, no stop words), as FTS5's unicode61 does. Only a
message's first SEARCHED_CHARS characters are indexed: a tsvector holds at most 1 MB, and a
message may be 16 million characters (a longer one must still be storable).

Revision ID: 0004_postgres_search
Revises: 0003_recall_rating_settings
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004_postgres_search"
down_revision = "0003_recall_rating_settings"
branch_labels = None
depends_on = None

# Kept equal to chatbot.store.search's query expression (the index serves only that expression).
INDEX = "messages_content_tsv"
EXPRESSION = "to_tsvector('simple'::regconfig, left(content, 100000))"


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"CREATE INDEX {INDEX} ON messages USING gin ({EXPRESSION})")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
