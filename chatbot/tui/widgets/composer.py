"""The message input: multi-line; Enter sends, Ctrl+J (or Shift/Alt+Enter where the terminal
tells them apart) starts a new line. Both keys can be changed in the config file."""

from __future__ import annotations

from textual.message import Message
from textual.widgets import TextArea

from chatbot.tui import keys


class Composer(TextArea):
    BINDINGS = keys.bindings("composer")

    class Submitted(Message):
        def __init__(self, composer: Composer, text: str):
            super().__init__()
            self.composer = composer
            self.text = text

    def __init__(self, **kwargs):
        super().__init__(
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            placeholder="Message…  (Enter sends, Ctrl+J new line, F1 help)",
            highlight_cursor_line=False,
            compact=True,
            **kwargs,
        )

    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self.clear()
        self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)
