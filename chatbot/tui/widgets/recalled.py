"""What memory recalled into a reply's prompt (issue 14): the passages with the message ids they
came from, as stored with the reply (`messages.recalled`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from chatbot.memory.recall import StoredPassages
from chatbot.tui.widgets.dialogs import Dialog
from chatbot.tui.widgets.text import clean


def recalled_lines(store, reply_id: int, conversation_id: int | None) -> list[str]:
    """One line per recalled passage, or one line saying why there is none."""
    items = store.recalled_of(reply_id)
    if items is None:
        return ["Memory was off for this reply."]
    passages = StoredPassages(store, items).passages(None)
    if not passages:
        return ["Nothing was recalled for this reply (nothing had left the window, or nothing matched)."]
    lines = []
    for p in passages:
        origin = f"message {p.message_id}" if p.message_id is not None else p.source
        if p.role:
            origin += " (you)" if p.role == "user" else " (reply)"
        if p.conversation_id is not None and p.conversation_id != conversation_id:
            origin += f" of conversation {p.conversation_id}"
        lines.append(f"{origin}: {' '.join(p.text.split())}")
    return lines


class RecalledScreen(Dialog):
    def __init__(self, reply_id: int, lines: list[str]):
        super().__init__(classes="dialog-screen")
        self.reply_id, self.lines = reply_id, lines

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog recalled"):
            yield Label(f"Recalled for reply {self.reply_id}  (Esc closes)")
            with VerticalScroll():
                yield Static(Text("\n\n".join(clean(line) for line in self.lines)), markup=False, id="recalled")
