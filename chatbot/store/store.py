"""`Store`: the conversation memory as the rest of the app sees it. One transaction per call.

Writes on SQLite begin with `BEGIN IMMEDIATE` (take the write lock first, waiting up to the busy
timeout) and are retried with backoff if the database still reports being locked, so two processes
appending at once both succeed. Reads use plain transactions (WAL lets them run beside a writer).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import DatabaseError, OperationalError, StatementError
from sqlalchemy.orm import Session

from chatbot.errors import NotFoundError, UsageError
from chatbot.text import unencodable
from chatbot.store import database, exchange, limits, recall, repository, search
from chatbot.store.database import Location, OpenReport
from chatbot.store.exchange import ExportDocument
from chatbot.store.models import utcnow
from chatbot.store.records import ConversationRecord, ConversationSummary, MessageRecord, SearchHit

T = TypeVar("T")
RETRIES = 6
# A streaming reply owned by another host counts as crashed once silent this long.
STALE_AFTER = timedelta(minutes=10)

# Replies being streamed by Stores in this process: (database, message id).
_live_replies: set[tuple[str, int]] = set()
_live_lock = threading.Lock()


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise UsageError(f"{problem}; nothing was saved")


class Store:
    def __init__(self, engine: Any, location: Location, report: OpenReport):
        self._engine = engine
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE") if location.is_sqlite else engine
        self.location = location
        self.report = report

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, create: bool = True, create_folders: bool = True) -> Store:
        """Open a database (a path or URL), upgrading it as needed; then mark replies left
        `streaming` by a process that is gone as `interrupted`. A missing file is created only
        with `create` (else `database.NoDatabase`), its missing folder only with `create_folders`.
        A database that cannot be written (read-only, a full disk) opens for reading."""
        engine, location, report = database.open_database(url, create, create_folders)
        store = cls(engine, location, report)
        try:
            recovered = 0 if location.read_only else store._write(store._recover)
        except database.WriteFailure:
            recovered = 0  # readable all the same; replies left streaming stay so until it is writable
        except BaseException:
            store.close()
            raise
        store.report = OpenReport(report.previous_revision, report.revision, report.backup, recovered)
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backup(self, dest: Path | None = None) -> Path:
        if self.location.path is None:
            raise UsageError(f"backups are for SQLite files; {self.location.display} is not one")
        return database.backup_file(self.location.path, dest)

    # --- transactions --------------------------------------------------------------------------

    def _run(self, engine: Any, fn: Callable[[Session], T]) -> T:
        for attempt in range(RETRIES + 1):
            try:
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    return fn(session)
            except OperationalError as exc:
                if database.is_busy(exc) and attempt < RETRIES:
                    time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))
                    continue
                raise database.translate_error(exc, self.location) from exc
            except DatabaseError as exc:
                raise database.translate_error(exc, self.location) from exc
            except OverflowError as exc:  # e.g. an imported seed or count beyond a 64-bit integer
                raise UsageError(f"a number too large to store ({exc}); nothing was saved") from exc
            except UnicodeEncodeError as exc:  # a lone surrogate: not text SQLite can hold
                raise UsageError(unencodable(exc)) from exc
            except StatementError as exc:
                if isinstance(exc.orig, UnicodeEncodeError):
                    raise UsageError(unencodable(exc.orig)) from exc
                raise
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Session], T]) -> T:
        return self._run(self._engine, fn)

    def _write(self, fn: Callable[[Session], T]) -> T:
        return self._run(self._writer, fn)

    def _recover(self, session: Session) -> int:
        host = socket.gethostname()
        crashed = []
        for message_id, owner, updated_at in repository.streaming_replies(session):
            owner_host, _, pid = (owner or "").rpartition(":")
            if owner_host != host or not pid.isdigit():
                alive = owner is not None and utcnow() - updated_at < STALE_AFTER
            elif int(pid) == os.getpid():
                alive = (self.location.display, message_id) in _live_replies
            else:
                alive = _pid_alive(int(pid))
            if not alive:
                crashed.append(message_id)
        repository.mark_interrupted(session, crashed)
        return len(crashed)

    # --- personas and conversations ------------------------------------------------------------

    def persona_version(self, name: str, kind: str, definition: dict[str, Any]) -> int:
        """The id of this exact persona definition (sha256 of its canonical JSON), created if new.
        `definition` must be JSON-serialisable (e.g. a pydantic `model_dump(mode="json")`)."""
        return self._write(lambda s: repository.persona_version(s, name, kind, definition))

    def new_conversation(self, title: str | None, model: str) -> int:
        """A new conversation; with title None, the first user message gives it one."""
        _refuse(limits.too_long("the title", title, limits.TITLE_MAX_CHARS))
        return self._write(lambda s: repository.new_conversation(s, title, model))

    def latest_conversation_id(self) -> int | None:
        """The most recently active conversation (not archived), or None."""
        return self._read(repository.latest_conversation_id)

    def conversation_id_of(self, ref: str) -> int | None:
        """A conversation id as a user typed it, or 'last': the most recently active one (None if
        there are none yet). UsageError for anything else; an id beyond SQLite's range cannot
        exist, so it is NotFoundError here rather than an overflow later."""
        if ref.strip().lower() == "last":
            return self.latest_conversation_id()
        try:
            conversation_id = int(ref)
        except ValueError:
            raise UsageError(f"'{ref}' is not a conversation id (a number, or 'last')") from None
        if not 0 < conversation_id < 2**63:
            raise NotFoundError(f"no conversation with id {conversation_id}")
        return conversation_id

    def conversation(self, conversation_id: int) -> ConversationRecord:
        """The conversation with its whole message tree; NotFoundError if there is none."""
        return self._read(lambda s: repository.load_conversation(s, conversation_id))

    def list_conversations(self, limit: int | None = None) -> list[ConversationSummary]:
        """Most recently active first."""
        return self._read(lambda s: repository.list_conversations(s, limit))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        _refuse(limits.too_long("the title", title, limits.TITLE_MAX_CHARS))
        self._write(lambda s: repository.rename(s, conversation_id, title))

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation, its messages and switches (persona versions stay)."""
        self._write(lambda s: repository.delete(s, conversation_id))

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        return self._read(lambda s: search.search(s, query, limit))

    def export_conversation(self, conversation_id: int) -> ExportDocument:
        return self._read(lambda s: exchange.export_document(s, conversation_id))

    def import_conversation(self, doc: ExportDocument) -> int:
        """Write a validated export as a new conversation (all or nothing); returns its id."""
        return self._write(lambda s: exchange.import_document(s, doc))

    # --- messages ------------------------------------------------------------------------------

    def conversation_settings(self, conversation_id: int) -> dict[str, Any]:
        """The conversation's own settings (sampling, context budget, memory scope...: the TUI's
        settings panel), {} when it has none."""
        return self._read(lambda s: dict(repository.get_conversation(s, conversation_id).settings or {}))

    def set_conversation_settings(self, conversation_id: int, settings: dict[str, Any]) -> None:
        """Replace the conversation's settings (an empty dict clears them)."""
        _refuse(limits.non_finite("the settings", settings))
        _refuse(limits.json_too_long("the settings", settings, limits.SETTINGS_MAX_CHARS))
        _refuse(exchange.settings_problem("the settings", settings))  # only what an import takes back

        def write(session: Session) -> None:
            repository.get_conversation(session, conversation_id).settings = dict(settings) or None

        self._write(write)

    def add_user_message(self, conversation_id: int, content: str, parent_id: int | None) -> int:
        """Commit a user message (before generation starts); returns its id."""
        _refuse(limits.too_long("the message", content, limits.MESSAGE_MAX_CHARS))
        return self._write(
            lambda s: repository.add_message(
                s, conversation_id, "user", content=content, parent_id=parent_id, status="complete"
            )
        )

    def add_openings(self, conversation_id: int, texts: list[str], persona_version_id: int | None, model: str) -> list[int]:
        """A persona's opening messages (a card's first_mes and alternate greetings) as complete
        replies at the root of the conversation, siblings in the order given; returns their ids."""
        for text in texts:
            _refuse(limits.too_long("an opening message", text, limits.MESSAGE_MAX_CHARS))

        def add(session: Session) -> list[int]:
            return [
                repository.add_message(
                    session, conversation_id, "assistant", content=text, parent_id=None, status="complete",
                    persona_version_id=persona_version_id, model=model, finished_at=utcnow(),
                )
                for text in texts
            ]

        return self._write(add)

    def add_turn(
        self,
        conversation_id: int,
        content: str,
        parent_id: int | None,
        persona_version_id: int | None,
        settings: dict[str, Any],
        seed: int | None,
        model: str,
        branch: bool = False,
    ) -> tuple[int, int]:
        """Commit a user message and its `streaming` reply together (no other writer ever sees the
        question without its reply); returns both ids. Refused with one line when the conversation
        moved on past `parent_id` (see repository.add_turn)."""
        reply = dict(persona_version_id=persona_version_id, settings=settings, seed=seed, model=model, owner=_owner())
        user_id, reply_id = self._write(
            lambda s: repository.add_turn(s, conversation_id, content, parent_id, branch, reply)
        )
        with _live_lock:
            _live_replies.add((self.location.display, reply_id))
        return user_id, reply_id

    def start_reply(
        self,
        conversation_id: int,
        parent_id: int,
        persona_version_id: int | None,
        settings: dict[str, Any],
        seed: int | None,
        model: str,
    ) -> int:
        """Create the assistant row, status `streaming`, owned by this process; returns its id."""
        message_id = self._write(
            lambda s: repository.add_message(
                s,
                conversation_id,
                "assistant",
                content="",
                parent_id=parent_id,
                status="streaming",
                persona_version_id=persona_version_id,
                settings=settings,
                seed=seed,
                model=model,
                owner=_owner(),
            )
        )
        with _live_lock:
            _live_replies.add((self.location.display, message_id))
        return message_id

    def update_reply(self, message_id: int, content: str) -> None:
        """Flush a streaming reply's text so far (and its heartbeat)."""
        self._write(lambda s: repository.update_content(s, message_id, content))

    def finish_reply(self, message_id: int, content: str, status: str, stats: dict[str, Any]) -> None:
        """End a reply: status complete, interrupted or error; stats as reported by the engine
        (prompt_tokens, reused_tokens, new_tokens, ttft_ms, tokens_per_s, and any others)."""
        try:
            self._write(lambda s: repository.finish(s, message_id, content, status, stats))
        finally:  # not ours to stream any more: recovery may mark it interrupted if this failed
            with _live_lock:
                _live_replies.discard((self.location.display, message_id))

    def active_branch(self, conversation_id: int, leaf_id: int | None = None) -> list[MessageRecord]:
        """Root → leaf; by default the leaf is the most recently created message without children."""
        return self._read(lambda s: repository.active_branch(s, conversation_id, leaf_id))

    def siblings(self, message_id: int) -> list[MessageRecord]:
        """The messages sharing this one's parent, itself included, oldest first."""
        return self._read(lambda s: repository.siblings(s, message_id))

    def rate(self, message_id: int, rating: str | None) -> None:
        """Rate a reply "good" or "bad", or clear its rating (None)."""
        self._write(lambda s: repository.rate(s, message_id, rating))

    def rated_replies(self, rating: str = "good", conversation_ids: list[int] | None = None) -> list[MessageRecord]:
        """Replies with this rating (in these conversations, or all), oldest first."""
        return self._read(lambda s: repository.rated_replies(s, rating, conversation_ids))

    def record_persona_switch(
        self, conversation_id: int, persona_version_id: int, after_message_id: int | None = None
    ) -> int:
        """Record that the conversation switched persona after `after_message_id` (default: its
        newest leaf), so the switch sits on the branch being shown; returns the id."""
        return self._write(
            lambda s: repository.record_persona_switch(s, conversation_id, persona_version_id, after_message_id)
        )

    # --- memory recall (chatbot/store/recall.py) -----------------------------------------------

    def recall_candidates(self, match: str, words: list[str], scope: recall.Scope, limit: int = recall.CANDIDATES):
        """Messages in `scope` for a recall query, best first (FTS5 bm25 on SQLite, the
        tsvector index by ts_rank on PostgreSQL, LIKE elsewhere)."""
        return self._read(lambda s: recall.candidates(s, match, words, scope, limit))

    def recall_messages(self, ids: list[int]) -> dict[int, recall.RecallHit]:
        """The messages a reply recalled, by id (a deleted one is absent, a forgotten one empty)."""
        return self._read(lambda s: recall.messages_by_id(s, ids))

    def record_recalled(self, message_id: int, items: list[dict[str, Any]]) -> None:
        """What memory recalled into a reply's prompt (`MemoryPassage.stored()` of each)."""
        self._write(lambda s: recall.record_recalled(s, message_id, items))

    def recalled_of(self, message_id: int) -> list[dict[str, Any]] | None:
        """A reply's recalled passages (maybe none) when memory was on for it; None when off."""
        return self._read(lambda s: recall.recalled_of(s, message_id))

    def memory_summary(self, conversation_id: int, message_ids: list[int]) -> tuple[int, str] | None:
        """The newest rolling summary written through one of `message_ids`: (through id, text)."""
        return self._read(lambda s: recall.summary_for(s, conversation_id, message_ids))

    def save_memory_summary(self, conversation_id: int, through_message_id: int, content: str, model: str | None) -> None:
        self._write(lambda s: recall.save_summary(s, conversation_id, through_message_id, content, model))

    def forget_message(self, message_id: int) -> int:
        """Erase a message's text from memory, search and every view; returns its conversation."""
        return self._write(lambda s: recall.forget(s, message_id))
