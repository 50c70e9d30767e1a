"""How long stored text may be, and which numbers can be stored: what the store and an import
refuse (one line, nothing written) rather than keep something no command can show or read back.

The limits are far beyond what a conversation needs (a message may be 16 times the 1 MB paste the
guarantees promise), so everything the chatbot stores itself also imports back.
"""

from __future__ import annotations

import json
import math
from typing import Any

TITLE_MAX_CHARS = 1_000
MODEL_NAME_MAX_CHARS = 1_000  # a path or hub id
MESSAGE_MAX_CHARS = 16_000_000
SETTINGS_MAX_CHARS = 65_536  # a message's settings, or its stats, as JSON
PERSONA_DEFINITION_MAX_CHARS = 16_000_000  # as JSON (a control code can be long)
IMPORT_FILE_MAX_BYTES = 1 << 30


def too_long(what: str, text: str | None, limit: int) -> str | None:
    """The problem with a text longer than `limit` characters, or None."""
    if text is not None and len(text) > limit:
        return f"{what} is {len(text):,} characters long (at most {limit:,})"
    return None


def non_finite(what: str, value: Any) -> str | None:
    """The first NaN or infinity anywhere in a JSON-like value (SQLite and JSON cannot hold them:
    NaN becomes NULL, infinity a JSON text `json_extract` rejects), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{what} is {value!r}, not a finite number"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        problem = non_finite(f"{what}.{key}", item)
        if problem is not None:
            return problem
    return None


def json_too_long(what: str, value: Any, limit: int) -> str | None:
    return too_long(what, json.dumps(value, ensure_ascii=False, default=str), limit)
