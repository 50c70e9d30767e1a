"""Export and import of a conversation: lossless JSON (validated by pydantic), Markdown for reading.

The JSON document is `{"format": "persona-chatbot.conversation", "version": 1, "exported_at",
"conversation": <ConversationRecord: the whole message tree, persona switches>, "personas": [the
full definition of every persona version referred to]}`. Importing it gives an identical
conversation with new ids; a malformed document is refused with its first problem named, as is
one holding a NaN or an infinity, a text beyond `limits.py`, or conversation settings the settings
panel would refuse (nothing is written).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from chatbot.conversation_settings import stored_problem
from chatbot.errors import NotFoundError, UserError
from chatbot.store import limits, recall, repository
from chatbot.store.models import Conversation, Message, PersonaSwitch, utcnow
from chatbot.store.records import ConversationRecord, MessageRecord, PersonaRef, PersonaVersionRecord, Record
from chatbot.store.replay import Switch, timeline

FORMAT = "persona-chatbot.conversation"


class ExportDocument(Record):
    format: Literal["persona-chatbot.conversation"] = FORMAT
    version: Literal[1] = 1
    exported_at: datetime
    conversation: ConversationRecord
    personas: list[PersonaVersionRecord] = []

    @model_validator(mode="after")
    def _storable(self) -> ExportDocument:
        problem = next((p for p in _storage_problems(self) if p is not None), None)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ExportDocument:
        for i, persona in enumerate(self.personas):
            if repository.persona_hash(persona.definition) != persona.hash:
                raise ValueError(f"personas.{i}.hash does not match the persona's definition")
        known = {p.ref for p in self.personas}
        seen: set[int] = set()
        for i, m in enumerate(self.conversation.messages):
            where = f"conversation.messages.{i}"
            if m.id in seen:
                raise ValueError(f"{where}.id: {m.id} appears twice")
            if m.conversation_id != self.conversation.id:
                raise ValueError(f"{where}.conversation_id: {m.conversation_id} is not the conversation's id")
            if m.parent_id is not None and m.parent_id not in seen:
                raise ValueError(f"{where}.parent_id: {m.parent_id} is not an earlier message of this conversation")
            if m.persona is not None and m.persona not in known:
                raise ValueError(f"{where}.persona: {m.persona.name!r} is not among the document's personas")
            seen.add(m.id)
        for i, s in enumerate(self.conversation.persona_switches):
            if s.after_message_id is not None and s.after_message_id not in seen:
                raise ValueError(f"conversation.persona_switches.{i}.after_message_id: no message {s.after_message_id}")
            if s.persona not in known:
                raise ValueError(f"conversation.persona_switches.{i}.persona: not among the document's personas")
        return self


def _storage_problems(doc: ExportDocument):
    """Each field's problem or None, lazily: the first problem is enough."""
    c = doc.conversation
    yield limits.too_long("conversation.title", c.title, limits.TITLE_MAX_CHARS)
    yield limits.too_long("conversation.model", c.model, limits.MODEL_NAME_MAX_CHARS)
    yield limits.non_finite("conversation.settings", c.settings)
    yield settings_problem("conversation.settings", c.settings)
    for i, m in enumerate(c.messages):
        where = f"conversation.messages.{i}"
        yield limits.too_long(f"{where}.content", m.content, limits.MESSAGE_MAX_CHARS)
        yield limits.too_long(f"{where}.model", m.model, limits.MODEL_NAME_MAX_CHARS)
        for j, item in enumerate(m.recalled or []):
            yield limits.too_long(f"{where}.recalled.{j}.text", item.text, limits.MESSAGE_MAX_CHARS)
            yield limits.too_long(f"{where}.recalled.{j}.heading", item.heading, limits.TITLE_MAX_CHARS)
        for field in ("settings", "stats"):
            value = getattr(m, field)
            yield limits.non_finite(f"{where}.{field}", value)
            yield limits.json_too_long(f"{where}.{field}", value, limits.SETTINGS_MAX_CHARS)
    for i, p in enumerate(doc.personas):
        # (a persona's hash is of its canonical JSON, which has no NaN: a mismatch is also refused)
        yield limits.non_finite(f"personas.{i}.definition", p.definition)
        yield limits.json_too_long(f"personas.{i}.definition", p.definition, limits.PERSONA_DEFINITION_MAX_CHARS)


def settings_problem(where: str, settings: dict) -> str | None:
    problem = stored_problem(settings)
    return None if problem is None else f"{where}: {problem}"


def export_document(session: Session, conversation_id: int) -> ExportDocument:
    record = repository.load_conversation(session, conversation_id)
    own = {m.id: m.id for m in record.messages}
    record = record.model_copy(update={"messages": [
        m.model_copy(update={"recalled": recall.own_recalled(m.recalled, own, record.id)}) for m in record.messages
    ]})
    used = select(Message.persona_version_id).where(Message.conversation_id == conversation_id).union(
        select(PersonaSwitch.persona_version_id).where(PersonaSwitch.conversation_id == conversation_id)
    )
    persona_ids = {pid for pid in session.scalars(used) if pid is not None}
    return ExportDocument(
        exported_at=utcnow(),
        conversation=record,
        personas=repository.persona_definitions(session, persona_ids),
    )


def import_document(session: Session, doc: ExportDocument) -> int:
    """Write a validated document as a new conversation; returns its id (all or nothing: the
    caller's transaction)."""
    persona_ids: dict[PersonaRef, int] = {
        p.ref: repository.persona_version(session, p.name, p.kind, p.definition) for p in doc.personas
    }
    c = doc.conversation
    row = Conversation(
        title=c.title, model=c.model, archived=c.archived, created_at=c.created_at, updated_at=c.updated_at,
        settings=dict(c.settings) or None,
    )
    session.add(row)
    session.flush()
    new_ids: dict[int, int] = {}
    recalled: list[tuple[Message, list | None]] = []
    for m in c.messages:
        message = Message(
            conversation_id=row.id,
            parent_id=None if m.parent_id is None else new_ids[m.parent_id],
            role=m.role,
            content=m.content,
            status=m.status,
            persona_version_id=None if m.persona is None else persona_ids[m.persona],
            settings=m.settings or None,
            seed=m.seed,
            model=m.model,
            created_at=m.created_at,
            updated_at=m.finished_at or m.created_at,
            finished_at=m.finished_at,
            rating=m.rating,
            **repository.stat_values(m.stats),
        )
        session.add(message)
        session.flush()
        new_ids[m.id] = message.id
        recalled.append((message, m.recalled))
    for message, items in recalled:  # once every message has its new id
        message.recalled = None if items is None else [
            i.stored() for i in recall.own_recalled(items, new_ids, row.id)
        ]
    for s in c.persona_switches:
        session.add(
            PersonaSwitch(
                conversation_id=row.id,
                persona_version_id=persona_ids[s.persona],
                after_message_id=None if s.after_message_id is None else new_ids[s.after_message_id],
                created_at=s.created_at,
            )
        )
    session.flush()
    return row.id


def parse_document(text: str | bytes, source: str) -> ExportDocument:
    """Validate an export; a problem becomes one UserError line naming the source and the problem."""
    check_size(len(text), source)
    try:
        return ExportDocument.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "json_invalid":
            message = f"not valid JSON ({first.get('ctx', {}).get('error', message)})"
        problem = f"{where}: {message}" if where else message
        extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise UserError(f"{source}: not a conversation export: {problem}{extra}; nothing imported") from exc


def read_document(path: Path) -> ExportDocument:
    try:
        with path.open("rb") as f:
            data = f.read(limits.IMPORT_FILE_MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"no such file: {path}") from exc
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_document(data, str(path))


def check_size(size: int, source: str) -> None:
    if size > limits.IMPORT_FILE_MAX_BYTES:
        raise UserError(
            f"{source}: larger than {limits.IMPORT_FILE_MAX_BYTES >> 20} MiB, not a conversation export; nothing imported"
        )


def to_json(doc: ExportDocument) -> str:
    return json.dumps(doc.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"


def persona_label(persona: PersonaRef | None) -> str:
    return "no persona" if persona is None else f"{persona.name} ({persona.kind}, {persona.hash[:12]})"


def render_markdown(doc: ExportDocument, branch: list[MessageRecord]) -> str:
    """A readable Markdown rendering of one branch (the JSON export holds the whole tree)."""
    c = doc.conversation
    lines = [f"# {c.title or '(untitled)'}", ""]
    lines.append(f"- conversation {c.id}, model `{c.model}`")
    lines.append(f"- created {c.created_at.isoformat()}, updated {c.updated_at.isoformat()}")
    hidden = len(c.messages) - len(branch)
    if hidden > 0:
        lines.append(f"- {hidden} message(s) on other branches are not shown (the JSON export has them all)")
    for item in timeline(c, branch):
        lines.append("")
        if isinstance(item, Switch):
            lines.append(f"*persona switched to {persona_label(item.after)}*")
            continue
        if item.role == "assistant":
            head = f"## Assistant · {persona_label(item.persona)}"
            if item.model and item.model != c.model:  # written after a model switch
                head += f" · by `{item.model}`"
            if item.status != "complete":
                head += f" · {item.status}"
        else:
            head = f"## {item.role.capitalize()}"
        lines += [head, "", item.content]
    return "\n".join(lines) + "\n"
