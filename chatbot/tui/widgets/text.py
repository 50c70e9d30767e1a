"""Message text shown exactly as written: never parsed as markup, control characters made visible
(`chatbot.terminal_text`)."""

from __future__ import annotations

from rich.color import Color as RColor
from rich.style import Style
from rich.text import Text
from textual.color import Color as TColor

from chatbot.terminal_text import visible

clean = visible  # the TUI shows text by the same rule as every CLI command


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
