"""Per-reply recall and rating, per-conversation settings, stored memory summaries.

- messages.recalled: what the memory recalled into the prompt of this reply (message ids and
  the conversations they came from), so `history context` and replay show what the model saw.
- messages.rating: a user's "good" / "bad" on a reply (validated by the store, not a CHECK:
  adding one on SQLite would rebuild the table and drop the FTS triggers of 0002).
- conversations.settings: sampling, budget, memory scope and model chosen for one conversation.
- memory_summaries: a rolling summary of a branch's dropped turns, written by the model.

Revision ID: 0003_recall_rating_settings
Revises: 0002_message_search
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from chatbot.store.models import UTCDateTime

revision = "0003_recall_rating_settings"
down_revision = "0002_message_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("recalled", sa.JSON(), nullable=True))
    op.add_column("messages", sa.Column("rating", sa.String(length=8), nullable=True))
    op.add_column("conversations", sa.Column("settings", sa.JSON(), nullable=True))
    op.create_table(
        "memory_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("through_message_id", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=500), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"],
            name=op.f("fk_memory_summaries_conversation_id_conversations"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["through_message_id"], ["messages.id"],
            name=op.f("fk_memory_summaries_through_message_id_messages"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_summaries")),
    )
    op.create_index(
        op.f("ix_memory_summaries_conversation_id"), "memory_summaries", ["conversation_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_memory_summaries_conversation_id"), table_name="memory_summaries")
    op.drop_table("memory_summaries")
    # SQLite >= 3.35 drops a column in place (no table rebuild, so the FTS triggers survive)
    op.drop_column("conversations", "settings")
    op.drop_column("messages", "rating")
    op.drop_column("messages", "recalled")
