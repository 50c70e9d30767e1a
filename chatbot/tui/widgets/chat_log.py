"""The conversation: user messages, persona-labelled replies (streaming), persona switches."""

from __future__ import annotations

import threading

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.content import Content
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Static

from chatbot.tui.widgets.room import OneLayout, free_room, keep_room
from chatbot.tui.widgets.text import clean, color_style, literal

# Repaint a streaming reply at most this often: each frame costs the decoder CPU, and most frames
# that add a line lay the whole screen out again (tens of ms of CPU a frame at 120x40).
STREAM_REPAINT_S = 1 / 4
# A Markdown reply's frame costs about twice a raw one's (the last block parsed again, a new
# block mounted: its widgets composed and styled, the screen laid out): half as many frames keep
# the screen's CPU while streaming at half what it was before the frame cap (docs/tui.md).
STREAM_REPAINT_MARKDOWN_S = 1 / 2
# While a reply streams its body keeps room below the text (`room.py`), grown in steps: the log,
# anchored to the bottom, scrolls (a repaint of all of it) once a step rather than at every line.
STREAM_ROOM_LINES = 12
STREAM_ROOM_MARGIN = 2  # grow the room once the text comes this close to its end


class MessageView(OneLayout, Vertical):
    """One message: a header (who, sibling position, status) and its text."""

    class Selected(Message):
        def __init__(self, view: MessageView):
            super().__init__()
            self.view = view

    def __init__(
        self,
        role: str,
        content: str = "",
        *,
        label: str = "",
        color: str = "",
        message_id: int | None = None,
        parent_id: int | None = None,
        status: str = "complete",
        siblings: tuple[int, int] = (1, 1),
        pending: bool = False,
        rating: str | None = None,
        markdown: bool = False,
        model: str | None = None,
    ):
        super().__init__(classes=f"message -{role}")
        self.role = role
        self.content = content
        self.label = label or ("You" if role == "user" else "Assistant")
        self.color = color
        self.message_id = message_id
        self.parent_id = parent_id
        self.status = status
        self.sibling_pos = siblings
        self.pending = pending
        self.rating = rating  # a reply's "good" / "bad" (history rate, alt+g / alt+b)
        self.markdown = markdown and role == "assistant"  # what you typed is always shown as typed
        self.model = model  # the model that wrote this reply (messages.model)
        self.model_note: str | None = None  # that model's name in the header (see note_model)
        self._chunks: list[str] = []  # deltas from the decoding thread, drained by the repaint timer
        self._chunks_lock = threading.Lock()
        self._timer = None

    def compose(self) -> ComposeResult:
        yield _Text(self._header(), classes="header", markup=False)
        yield self._make_body()

    def _make_body(self) -> Static:
        if self.markdown:
            # Imported with the first reply, not at start: Markdown and its parser cost the first
            # paint ~0.1 s, and the first frame holds no reply.
            from chatbot.tui.widgets.reply_markdown import ReplyMarkdown

            return ReplyMarkdown(self.content, classes="body")
        return _Text(literal(self.content), classes="body", markup=False)

    async def show_markdown(self, on: bool) -> None:
        """Render the reply as Markdown, or show its raw text (also while it streams)."""
        on = on and self.role == "assistant"
        if on == self.markdown:
            return
        self.markdown = on
        if self.is_mounted:
            await self.query_one(".body").remove()
            await self.mount(self._make_body())
        if self._timer is not None:  # streaming: at the rate of what it shows now
            self._start_repaints()

    def _header(self) -> Text:
        header = Text()
        header.append(literal(self.label, color_style(self.color if self.role == "assistant" else None)))
        position, count = self.sibling_pos
        if count > 1:
            header.append(f"  ◀ {position}/{count} ▶", style="dim")
        if self.rating == "good":
            header.append("  ✓ good", style="green")
        elif self.rating == "bad":
            header.append("  ✗ bad", style="red")
        if self.model_note:
            header.append(f"  · {clean(self.model_note)}", style="italic dim")
        if self.pending:
            header.append("  waiting for the model…", style="italic dim")
        elif self.status == "streaming":
            header.append("  …", style="dim")
        elif self.status in ("interrupted", "error"):
            header.append(f"  [{self.status}]", style="bold red" if self.status == "error" else "bold yellow")
        return header

    def note_model(self, current: str | None) -> None:
        """Name the model that wrote this reply in its header when it is not the one loaded now
        (the status bar names that one); nothing while no model is loaded."""
        note = self.model if self.model and current and self.model != current else None
        if note != self.model_note:
            self.model_note = note
            self.refresh_header()

    def refresh_header(self) -> None:
        if self.is_mounted:
            self.query_one(".header", Static).update(self._header())

    def set_status(self, status: str, message_id: int | None = None) -> None:
        self.status = status
        if message_id is not None:
            self.message_id = message_id
        self.refresh_header()

    # -- streaming ------------------------------------------------------------------------------

    def start_stream(self) -> None:
        self.status = "streaming"
        self.refresh_header()
        self._start_repaints()

    def _start_repaints(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.repaint_interval, self.flush)

    @property
    def repaint_interval(self) -> float:
        return STREAM_REPAINT_MARKDOWN_S if self.markdown else STREAM_REPAINT_S

    def push(self, delta: str) -> None:
        """Called from the decoding thread: no widget work here, only a list append."""
        with self._chunks_lock:
            self._chunks.append(delta)

    async def flush(self) -> None:
        with self._chunks_lock:
            chunks, self._chunks = self._chunks, []
        if chunks:
            self.content += "".join(chunks)
            await self._show_body(grow=True)

    async def _show_body(self, grow: bool = False) -> None:
        """Repaint the text; lay the screen out again only when it needs more lines than it has
        (a layout of the whole log costs far more than a repaint, and most tokens do not add a
        line). Markdown re-renders only its last block while it grows."""
        body = self.query_one(".body")
        streaming = self._timer is not None
        if not isinstance(body, Static):  # a ReplyMarkdown (its type is imported with the first one)
            body.streaming = streaming
            if streaming:
                keep_room(body, body.text_height(), STREAM_ROOM_LINES, STREAM_ROOM_MARGIN)
            await (body.grow(self.content) if grow else body.show(self.content))
            return
        content = Content(clean(self.content))
        width = body.content_region.width
        if width <= 0:
            body.update(content)
            return
        height = content.get_height(body.styles, width)
        if streaming:
            layout = keep_room(body, height, STREAM_ROOM_LINES, STREAM_ROOM_MARGIN)
        else:
            layout = height != body.content_region.height
        body.update(content, layout=layout)

    async def end_stream(self, status: str, text: str | None = None) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        await self.flush()
        if text is not None and text != self.content:
            self.content = text
            await self._show_body()
        body = self.query_one(".body")
        if not isinstance(body, Static):
            body.end_stream()
        free_room(body)
        self.set_status(status)

    def on_click(self, event: events.Click) -> None:
        self.post_message(self.Selected(self))


class _Text(OneLayout, Static):
    """A message's header or raw text."""


class EventLine(Static):
    """A line between messages: a persona switch, a notice."""

    def __init__(self, text: str, style: str = ""):
        super().__init__(literal(text, style), classes="event", markup=False)


class ChatLog(VerticalScroll):
    """The scrolling log; keeps to the bottom while a reply streams unless scrolled away."""

    can_focus = False

    def on_mount(self) -> None:
        self.anchor()

    @property
    def messages(self) -> list[MessageView]:
        return list(self.query(MessageView))

    def add_message(self, view: MessageView) -> MessageView:
        self.mount(view)
        return view

    def add_event(self, text: str, style: str = "italic") -> EventLine:
        line = EventLine(text, style)
        self.mount(line)
        return line

    def clear(self) -> None:
        self.remove_children()

    # -- selection: the message that regenerate, edit and sibling moves act on -------------------

    @property
    def selected(self) -> MessageView | None:
        found = self.query(".-selected")
        if found:
            return found.first(MessageView)
        messages = self.messages
        return messages[-1] if messages else None

    def select(self, view: MessageView | None) -> None:
        for old in self.query(".-selected"):
            old.remove_class("-selected")
        if view is not None:
            view.add_class("-selected")
            self.scroll_to_widget(view, animate=False)

    def select_step(self, step: int) -> None:
        messages = self.messages
        if not messages:
            return
        current = self.selected
        index = messages.index(current) if current in messages else len(messages) - 1
        self.select(messages[max(0, min(len(messages) - 1, index + step))])

    def select_id(self, message_id: int | None) -> None:
        for view in self.messages:
            if view.message_id == message_id:
                self.select(view)
                return
