"""Conversation memory: SQLite (or any SQLAlchemy database) through a typed ORM and Alembic.

Use `Store.open(url)`; it hands out records (`ConversationRecord`, `MessageRecord`...), never ORM
objects. This package knows nothing of torch or of the terminal.
"""

from chatbot.store.exchange import ExportDocument
from chatbot.store.records import (
    ConversationRecord,
    ConversationSummary,
    MessageRecord,
    PersonaRef,
    PersonaSwitchRecord,
    PersonaVersionRecord,
    SearchHit,
)
from chatbot.store.repository import persona_hash
from chatbot.store.store import Store

__all__ = [
    "ConversationRecord",
    "ConversationSummary",
    "ExportDocument",
    "MessageRecord",
    "PersonaRef",
    "PersonaSwitchRecord",
    "PersonaVersionRecord",
    "SearchHit",
    "Store",
    "persona_hash",
]
