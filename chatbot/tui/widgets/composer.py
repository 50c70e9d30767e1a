"""The message input: multi-line; Enter sends, Ctrl+J (or Shift/Alt+Enter where the terminal
tells them apart) starts a new line. Both keys can be changed in the config file."""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import TextArea

from chatbot.terminal_text import visible
from chatbot.tui.keys import BY_ID


class Composer(TextArea):
    """Send and new line are handled as key events, not as (priority) bindings: a binding runs
    at once, ahead of typed characters still queued for this widget, and would send half a
    message when keys arrive in a burst (a paste, a fast typist, a busy machine)."""

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

    def get_line(self, line_index: int) -> Text:
        """The line as drawn: control characters as visible stand-ins, as the log shows them
        (drawn raw, a pasted ESC would steer the terminal); the text itself stays exact. The
        stand-ins are wider than the zero cells the layout counts for a control character, so
        the cursor sits a little left on such a line: drawn, never obeyed, is what matters."""
        return Text(visible(self.document.get_line(line_index)), end="", no_wrap=True)

    def _keys(self, binding_id: str) -> set[str]:
        keymap = getattr(self.app, "keymap", {})
        return {k.strip() for k in keymap.get(binding_id, BY_ID[binding_id].keys).split(",")}

    async def _on_key(self, event: events.Key) -> None:
        if event.key in self._keys("send"):
            event.stop()
            event.prevent_default()
            self.action_submit()
        elif event.key in self._keys("newline"):
            event.stop()
            event.prevent_default()
            self.action_newline()
        else:
            await super()._on_key(event)

    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self.clear()
        self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end, maintain_selection_offset=False)
