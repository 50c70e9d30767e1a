"""Saved conversations: a search box over all messages and the list (newest first)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ListItem, ListView

from chatbot.tui import keys
from chatbot.tui.widgets.text import clean, literal


def when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def title_of(title: str | None, conversation_id: int) -> str:
    return title or f"Conversation {conversation_id}"


class ConversationItem(ListItem):
    def __init__(self, conversation_id: int, title: str, detail: str = "", current: bool = False):
        super().__init__(classes="-current" if current else "")
        self.conversation_id = conversation_id
        self.title = title
        self.detail = detail

    def compose(self) -> ComposeResult:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(clean(self.title), style="bold" if "-current" in self.classes else "")
        if self.detail:
            text.append("\n")
            text.append(literal(self.detail, "dim"))
        yield Label(text, markup=False)


class Sidebar(Vertical):
    BINDINGS = keys.bindings("sidebar")

    class Open(Message):
        def __init__(self, conversation_id: int):
            super().__init__()
            self.conversation_id = conversation_id

    class Rename(Open):
        pass

    class Delete(Open):
        pass

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.store = None
        self.current_id: int | None = None

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search conversations…", id="search")
        yield ListView(id="conversations")

    @property
    def query_text(self) -> str:
        return self.query_one("#search", Input).value.strip()

    def reload(self) -> None:
        """Fill the list: every conversation, or the search hits when there is a query."""
        if self.store is None:
            return
        items: list[ConversationItem] = []
        query = self.query_text
        if query:
            seen: set[int] = set()
            for hit in self.store.search(query, limit=50):
                if hit.conversation_id in seen:
                    continue
                seen.add(hit.conversation_id)
                title = title_of(hit.conversation_title, hit.conversation_id)
                items.append(ConversationItem(hit.conversation_id, title, hit.snippet.replace("\n", " ")))
        else:
            for c in self.store.list_conversations():
                title = title_of(c.title, c.id)
                # The count first: at the list's width (~29 cells) the date may be cut, never the count.
                count = f"{c.message_count} msg{'' if c.message_count == 1 else 's'}"
                detail = f"{count} · {when(c.updated_at)}"
                items.append(ConversationItem(c.id, title, detail, current=c.id == self.current_id))
        view = self.query_one("#conversations", ListView)
        view.clear()
        view.extend(items)
        if not items:
            view.append(ListItem(Label("no matches" if query else "no saved conversations", classes="empty")))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the search box opens the best match (the list's first); ↓ goes to the list."""
        event.stop()
        first = next(iter(self.query_one("#conversations", ListView).query(ConversationItem)), None)
        if first is not None:
            self.post_message(self.Open(first.conversation_id))

    def on_key(self, event) -> None:
        if event.key == "down" and self.query_one("#search", Input).has_focus:
            event.stop()
            listing = self.query_one("#conversations", ListView)
            if listing.index is None and listing.children:
                listing.index = 0
            listing.focus()

    def _highlighted(self) -> int | None:
        item = self.query_one("#conversations", ListView).highlighted_child
        return item.conversation_id if isinstance(item, ConversationItem) else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Open(event.item.conversation_id))

    def action_open(self) -> None:
        if (cid := self._highlighted()) is not None:
            self.post_message(self.Open(cid))

    def action_rename(self) -> None:
        if (cid := self._highlighted()) is not None:
            self.post_message(self.Rename(cid))

    def action_delete(self) -> None:
        if (cid := self._highlighted()) is not None:
            self.post_message(self.Delete(cid))
