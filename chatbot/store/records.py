"""What the store hands out: immutable records, never ORM objects tied to a session.

They are also the one JSON vocabulary of `history list/show/export --json` and of import: a
conversation has `id`, `title`, `created_at`, `messages`...; a message has `id`, `parent_id`,
`role`, `content`, `status`, `persona` (`name`, `kind`, `hash`), `settings`, `stats`...
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["user", "assistant", "system"]
Status = Literal["streaming", "complete", "interrupted", "error"]
# what a SQLite INTEGER holds
SqliteInt = Annotated[int, Field(ge=-(2**63), lt=2**63)]


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PersonaRef(Record):
    """Which exact persona version produced a reply (hash: sha256 of its canonical definition)."""

    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=32)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


class RecalledItem(Record):
    """One passage a reply recalled: a stored message by its ids, any other passage with its text
    (`MemoryPassage.stored()`)."""

    source: str = Field(min_length=1, max_length=64)
    message_id: SqliteInt | None = None
    conversation_id: SqliteInt | None = None
    text: str | None = None
    heading: str | None = None

    def stored(self) -> dict[str, Any]:
        """As `messages.recalled` keeps it (the ids always, text and heading where there are)."""
        return {k: v for k, v in self.model_dump().items() if v is not None or k.endswith("_id")}


class MessageRecord(Record):
    id: int
    parent_id: int | None
    conversation_id: int
    role: Role
    content: str
    status: Status
    persona: PersonaRef | None = None
    settings: dict[str, Any] = {}
    seed: SqliteInt | None = None
    # prompt_tokens, reused_tokens, new_tokens, ttft_ms, tokens_per_s (those known), and any other
    # figure the engine reported
    stats: dict[str, Any] = {}
    model: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    # the user's rating of a reply (`history rate`, the TUI): "good", "bad", or None
    rating: Literal["good", "bad"] | None = None
    # what memory recalled into this reply's prompt (`messages.recalled`; None: memory was off)
    recalled: list[RecalledItem] | None = None

    @field_validator("stats")
    @classmethod
    def _known_figures_are_numbers(cls, stats: dict[str, Any]) -> dict[str, Any]:
        # These are numeric columns: a string or a boolean there (a damaged import) is refused here,
        # with the field named, rather than failing inside the database.
        for key in ("prompt_tokens", "reused_tokens", "new_tokens", "ttft_ms", "tokens_per_s"):
            value = stats.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"stats.{key} must be a number")
            if isinstance(value, int) and not -(2**63) <= value < 2**63:
                raise ValueError(f"stats.{key} is out of range")
        return stats


class PersonaSwitchRecord(Record):
    """An explicit persona switch, placed after the message that was the conversation's leaf then."""

    id: int
    persona: PersonaRef
    after_message_id: int | None
    created_at: datetime


class ConversationRecord(Record):
    id: int
    title: str | None
    created_at: datetime
    updated_at: datetime
    model: str
    archived: bool = False
    # the conversation's own settings (conversation_settings.py: the TUI's settings panel)
    settings: dict[str, Any] = {}
    # every message of the tree, oldest first (a parent always before its children)
    messages: list[MessageRecord] = []
    persona_switches: list[PersonaSwitchRecord] = []


class ConversationSummary(Record):
    """A line of `history list`: a conversation without its messages."""

    id: int
    title: str | None
    created_at: datetime
    updated_at: datetime
    model: str
    archived: bool
    message_count: int


class PersonaVersionRecord(Record):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=32)
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    definition: dict[str, Any]

    @property
    def ref(self) -> PersonaRef:
        return PersonaRef(name=self.name, kind=self.kind, hash=self.hash)


class SearchHit(Record):
    conversation_id: int
    conversation_title: str | None
    message_id: int
    role: Role
    created_at: datetime
    # the matching passage, without markers; `highlights` are [start, end) offsets into it
    snippet: str
    highlights: list[tuple[int, int]]
    score: float
