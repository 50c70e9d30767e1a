"""Message text shown exactly as written: never parsed as markup, control characters made visible."""

from __future__ import annotations

import re

from rich.color import Color as RColor
from rich.style import Style
from rich.text import Text
from textual.color import Color as TColor

# C0 controls except tab and newline, DEL, C1 controls; \r\n is a line break like \n.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # ␛, ␍, ␀... (Unicode control pictures)
    return "␡" if code == 0x7F else f"\\x{code:02x}"


def clean(text: str) -> str:
    return _CONTROL.sub(_visible, text.replace("\r\n", "\n"))


def literal(text: str, style: str | Style = "") -> Text:
    """A `Text` of `text` as typed: `[bold]`, `[/]` and escape sequences stay characters."""
    return Text(clean(text), style=style, end="")


def color_style(color: str | None, bold: bool = True) -> Style:
    """A style for a persona's colour: CSS/Textual names (`ansi_red`, `navy`, `#c0ffee`), Rich
    names (`bright_red`) and `ansired`; an unknown colour gives plain bold, never an error."""
    if color:
        candidates = [color.strip()]
        if color.startswith("ansi") and not color.startswith("ansi_"):
            candidates.append("ansi_" + color[4:])
        for candidate in candidates:
            try:
                return Style(color=TColor.parse(candidate).rich_color, bold=bold)
            except Exception:  # noqa: BLE001 - try the next spelling
                pass
            try:
                return Style(color=RColor.parse(candidate), bold=bold)
            except Exception:  # noqa: BLE001
                pass
    return Style(bold=bold)
