"""Keys from a terminal that sends bytes that are not UTF-8 (a Latin-1 locale, a broken paste).

Textual's POSIX input thread decodes the terminal's bytes as strict UTF-8, so one such byte raises
in that thread and the app dies with a traceback (Textualize/textual#6456, open as of 8.2). Until
that is fixed upstream, its decoder replaces them with U+FFFD, as a terminal would show them.
"""

from __future__ import annotations

import codecs
import functools


def _replacing_decoder(encoding: str):
    return functools.partial(codecs.getincrementaldecoder(encoding), errors="replace")


def tolerate_malformed_input() -> None:
    """Make Textual's POSIX driver replace malformed input instead of dying on it."""
    try:
        from textual.drivers import linux_driver
    except ImportError:  # Windows: its driver reads keys as text already
        return
    # The input thread looks the factory up by this module-level name each time it starts.
    linux_driver.getincrementaldecoder = _replacing_decoder
