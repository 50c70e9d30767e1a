"""Stored text as a terminal is shown it: the one rule for the TUI and every CLI command that prints
what a user typed or imported. Text is stored exactly, control characters and all; shown raw, an
imported `ESC ] 0 ; title BEL` would retitle the window, `ESC [ 2 J` clear it, a lone CR or a
bidi override hide or reorder what is around it. So each such character is drawn as a visible
stand-in instead, and nothing else changes.

Exact copies go elsewhere: `--json` (where the same characters are JSON escapes, which decode to
the very same text) and `export` to a file or a pipe.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline (a CR only outside CR LF), DEL, C1 controls, and the bidi
# embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: "Trojan Source" reordering).
_STEERING = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")
# Of those, what JSON leaves raw (it escapes C0 itself); only ever inside a JSON string.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _stand_in(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # ␛, ␍, ␀, ␇... (Unicode control pictures)
    if code == 0x7F:
        return "␡"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every character that would steer a terminal drawn as a stand-in (CR LF is a
    line break, as LF is)."""
    return _STEERING.sub(_stand_in, text).replace("\r\n", "\n")


def safe_json(dumped: str) -> str:
    """JSON text (as `json.dumps` writes it) that a terminal can be shown: the characters above as
    `\\uXXXX` escapes, which decode to exactly the same text. (JSON escapes C0 itself, and these
    characters can only stand inside its strings.)"""
    return _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)
