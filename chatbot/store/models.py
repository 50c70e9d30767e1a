"""The ORM schema: persona versions, conversations, messages (a tree), persona switches.

The migrations in `migrations/versions/` create exactly this schema (a test compares them); the FTS5
index over message text is created there too but is not part of this metadata: SQLAlchemy has no
notion of virtual tables, and the index is maintained by triggers, never written by the ORM.
"""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

ROLES = ("user", "assistant", "system")
RATINGS = ("good", "bad")
STATUSES = ("streaming", "complete", "interrupted", "error")
FINAL_STATUSES = ("complete", "interrupted", "error")
STAT_COLUMNS = ("prompt_tokens", "reused_tokens", "new_tokens", "ttft_ms", "tokens_per_s")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC (what SQLite keeps) and always read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware (UTC) datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class PersonaVersion(Base):
    """One exact persona definition; a reply points at the version that produced it."""

    __tablename__ = "persona_versions"
    __table_args__ = (UniqueConstraint("name", "kind", "hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    # sha256 (hex) of the canonical JSON of `definition`
    hash: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(primary_key=True)
    # None until the first user message gives one (see repository.derive_title)
    title: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(500))
    archived: Mapped[bool] = mapped_column(default=False, server_default=false())
    # per-conversation choices (sampling, budget, memory scope, model), applied from the next reply
    settings: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    messages: Mapped[list["Message"]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", passive_deletes=True, order_by="Message.id"
    )


class Message(Base):
    """A user message or a reply. `parent_id` makes a tree: regenerating a reply adds a sibling."""

    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"role IN {ROLES!r}", name="role"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        Index("ix_messages_conversation_id_created_at", "conversation_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    persona_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("persona_versions.id", ondelete="RESTRICT"), index=True
    )
    settings: Mapped[dict[str, Any] | None]
    seed: Mapped[int | None] = mapped_column(BigInteger)
    model: Mapped[str | None] = mapped_column(String(500))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    reused_tokens: Mapped[int | None] = mapped_column(Integer)
    new_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    # stats keys beyond the columns above, kept so that nothing the engine reports is lost
    stats_extra: Mapped[dict[str, Any] | None]
    # "host:pid" of the process streaming this reply; lets crash recovery spare live writers
    owner: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # last write (a streaming reply's heartbeat)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # what memory recalled into this reply's prompt: [{"message_id", "conversation_id", ...}]
    recalled: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # the user's "good" / "bad" (RATINGS); None when unrated
    rating: Mapped[str | None] = mapped_column(String(8))

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    persona_version: Mapped[PersonaVersion | None] = relationship(lazy="joined")


class MemorySummary(Base):
    """A model-written summary of a branch's dropped turns, up to and including `through_message_id`."""

    __tablename__ = "memory_summaries"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    through_message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PersonaSwitch(Base):
    """An explicit persona switch in a conversation, placed after the message that was the leaf then."""

    __tablename__ = "persona_switches"

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    persona_version_id: Mapped[int] = mapped_column(ForeignKey("persona_versions.id", ondelete="RESTRICT"))
    after_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    persona_version: Mapped[PersonaVersion] = relationship(lazy="joined")
