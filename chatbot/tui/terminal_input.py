"""What Textual's POSIX driver makes of a terminal's raw input, fixed where it loses what was typed.

- Bytes that are not UTF-8 (a Latin-1 locale, a broken paste): Textual's input thread decodes them
  as strict UTF-8, so one such byte raises in that thread and the app dies with a traceback
  (Textualize/textual#6456, open as of 8.2). Its decoder here replaces them with U+FFFD, as a
  terminal would show them.
- A bracketed paste (`ESC [ 200 ~` text `ESC [ 201 ~`): Textual's parser reads an ESC inside the
  paste as the start of a key sequence, so `xyz ESC [31mQ` arrived as the keys `^[31mQ` followed
  by a paste of `xyz`, and the keys for BEL, ^A or Tab inside it were dropped or moved focus.
  Here the whole paste, every character in order, becomes one `Paste` event; what lies outside
  pastes goes to Textual's parser unchanged.
"""

from __future__ import annotations

import codecs
import functools
from collections.abc import Iterable

from textual import events
from textual._xterm_parser import XTermParser
from textual.message import Message

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"


def _replacing_decoder(encoding: str):
    return functools.partial(codecs.getincrementaldecoder(encoding), errors="replace")


def _split_marker(data: str, marker: str, shortest: int) -> int:
    """How many characters at the end of `data` may be the start of `marker`, cut by a read
    (at least `shortest` of them; 0 if none)."""
    for length in range(min(len(marker) - 1, len(data)), shortest - 1, -1):
        if data.endswith(marker[:length]):
            return length
    return 0


class ExactPasteParser(XTermParser):
    """XTermParser with bracketed pastes taken out first, whole and in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._paste: list[str] | None = None  # the paste so far, while inside one
        self._held = ""  # the start of a marker that the last read cut

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # end of input
            if self._paste is not None:
                yield events.Paste("".join(self._paste) + self._held)
            elif self._held:
                yield from super().feed(self._held)
            self._paste, self._held = None, ""
            yield from super().feed("")
            return
        data, self._held = self._held + data, ""
        while data:
            if self._paste is None:
                start = data.find(PASTE_START)
                if start < 0:
                    # A lone ESC at the end is left to the parser (the Escape key, on its timeout).
                    self._held = data[len(data) - _split_marker(data, PASTE_START, 2) :]
                    before = data[: len(data) - len(self._held)]
                    if before:
                        yield from super().feed(before)
                    return
                if start:
                    yield from super().feed(data[:start])
                self._paste, data = [], data[start + len(PASTE_START) :]
            else:
                end = data.find(PASTE_END)
                if end < 0:
                    self._held = data[len(data) - _split_marker(data, PASTE_END, 1) :]
                    self._paste.append(data[: len(data) - len(self._held)])
                    return
                self._paste.append(data[:end])
                yield events.Paste("".join(self._paste))
                self._paste, data = None, data[end + len(PASTE_END) :]


def tolerate_malformed_input() -> None:
    """Make Textual's POSIX driver replace malformed input and keep pastes whole."""
    try:
        from textual.drivers import linux_driver
    except ImportError:  # Windows: its driver reads keys as text already
        return
    # The input thread looks both up by these module-level names each time it starts.
    linux_driver.getincrementaldecoder = _replacing_decoder
    linux_driver.XTermParser = ExactPasteParser
