"""A conversation's own settings (the TUI's settings panel): sampling, context budget, memory
scope. Stored in `conversations.settings` as JSON, only what was set (an unset field follows the
persona and the global settings); applied from the conversation's next reply, in the TUI and in
`ask` / `chat --plain` continuing it (their options still win).

Sampling values layer in `session.resolve_sampling`; the context budget and the memory scope give
the session its own copy of the global `Settings`. The bounds are the global settings' and
`SamplingParams`' own, so the panel refuses exactly what `chatbot ask` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, get_args

from pydantic import TypeAdapter, ValidationError

from chatbot.config import Settings

_MEMORY = Settings.model_fields.get("memory")  # the memory scope (chatbot/memory/recall.py)
MEMORY_SCOPES = get_args(_MEMORY.annotation) if _MEMORY is not None else ("off", "conversation", "persona", "all")
SESSION_KEYS = ("context_budget", "memory")  # applied through the session's Settings, not sampling


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    kind: type  # float, int or str (a choice)
    short: str  # in the status bar


FIELDS = (
    Field("temperature", "Temperature (0 = greedy)", float, "temp"),
    Field("top_p", "Top-p (nucleus mass, 0-1]", float, "top-p"),
    Field("top_k", "Top-k (0 = all)", int, "top-k"),
    Field("repetition_penalty", "Repetition penalty (> 0, 1 = none)", float, "rep"),
    Field("max_new_tokens", "Max new tokens", int, "max"),
    Field("context_budget", "Context budget (tokens)", int, "budget"),
    Field("memory", "Memory scope", str, "memory"),
)
BY_KEY = {f.key: f for f in FIELDS}


def parse(raw: dict[str, str]) -> dict[str, Any]:
    """The panel's text fields as values; an empty field is unset. ValueError names the field."""
    values: dict[str, Any] = {}
    for key, text in raw.items():
        text = text.strip()
        if not text:
            continue
        kind = BY_KEY[key].kind
        try:
            values[key] = kind(text)
        except ValueError:
            raise ValueError(f"{BY_KEY[key].label}: '{text}' is not {'an integer' if kind is int else 'a number'}") from None
    return values


def check(values: dict[str, Any], settings: Settings, persona) -> dict[str, Any]:
    """`values` if every one is allowed, else ValueError with one line naming the field."""
    from chatbot.session import resolve_sampling

    try:
        resolve_sampling(settings, persona, conversation=values)
    except ValidationError as exc:
        raise ValueError(_first_error(exc)) from None
    for key in SESSION_KEYS:  # by the global setting's own type and bounds
        if key in values and key in Settings.model_fields:
            wrong = _field_problem(key, values[key])
            if wrong is not None:
                raise ValueError(wrong)
    return values


def _field_problem(key: str, value: Any, strict: bool = False) -> str | None:
    """The value against the global setting of that name (the same type and bounds as
    `SamplingParams`' for the sampling fields, without importing torch), or None."""
    field = Settings.model_fields[key]
    kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    try:
        TypeAdapter(kind).validate_python(value, strict=strict)
    except ValidationError as exc:
        return f"{BY_KEY[key].label}: {exc.errors()[0]['msg'].lower()}"
    return None


def stored_problem(values: Any) -> str | None:
    """What is wrong with settings about to be stored (an imported conversation's, a store
    write), or None: an object of known fields only, each of its own type (strictly: `"0.5"` is
    not a number, `true` not an integer) and within the bounds the panel and `ask` apply."""
    if not isinstance(values, dict):
        return "must be an object"
    for key, value in values.items():
        if key not in BY_KEY or key not in Settings.model_fields:
            return f"'{key}' is not a conversation setting (known: {', '.join(BY_KEY)})"
        wrong = _field_problem(key, value, strict=True)
        if wrong is not None:
            return wrong
    return None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else ""
    label = BY_KEY[key].label if key in BY_KEY else key
    return f"{label}: {first['msg'].lower()}"


def session_settings(base: Settings, values: dict[str, Any]) -> Settings:
    """The global settings with the conversation's budget and memory scope (a field the global
    settings do not have is left out: kept with the conversation, applied once they do)."""
    update = {k: values[k] for k in SESSION_KEYS if k in values and k in type(base).model_fields}
    return base.model_copy(update=update) if update else base


def summary(values: dict[str, Any]) -> str:
    """What the conversation sets, for the status bar: `temp 0.2 · max 64`."""
    return " · ".join(f"{f.short} {values[f.key]:g}" if f.kind is not str else f"{f.short} {values[f.key]}"
                      for f in FIELDS if f.key in values)
