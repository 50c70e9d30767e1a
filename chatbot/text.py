"""Which text the chatbot accepts. Everything is stored and shown exactly, control characters, NUL
and escape sequences included, except a lone surrogate (U+D800-U+DFFF on its own: what Python makes
of bytes that are not UTF-8, e.g. in a command-line argument). It is not a character and cannot be
written as UTF-8, so it is refused with one line, the same way by the store, the CLI and the TUI,
and nothing is stored."""

from __future__ import annotations

import re

from chatbot.errors import UsageError

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def unencodable(exc: UnicodeEncodeError) -> str:
    bad = exc.object[exc.start : exc.end] if isinstance(exc.object, str) else ""
    code = f"U+{ord(bad[0]):04X} " if bad else ""
    return (
        f"text with a lone surrogate ({code}at position {exc.start}: bytes that were not UTF-8?) "
        "cannot be stored; nothing was saved"
    )


def check_text(text: str, what: str = "the message") -> str:
    """`text` unchanged, or UsageError (one line) if it holds a lone surrogate."""
    found = _SURROGATE.search(text)
    if found is not None:
        raise UsageError(
            f"{what} is not valid text: a lone surrogate (U+{ord(found.group()):04X}) at position "
            f"{found.start()} (bytes that were not UTF-8?); nothing was sent or saved"
        )
    return text
