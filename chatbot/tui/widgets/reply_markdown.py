"""A reply rendered as Markdown (Textual's `Markdown` widget): code blocks highlighted, links shown
with their target and never opened, HTML shown as the text it is, control characters drawn as
visible stand-ins first (the same rule as everywhere, `widgets/text.py`). Only replies are
rendered: what the user typed is always shown as typed. The stored text is never touched: the
widget gets a cleaned copy.
"""

from __future__ import annotations

from contextlib import suppress

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from textual.content import Content
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Label, Markdown
from textual.widgets._markdown import MarkdownParagraph  # not exported; subclassed as Textual's docs do blocks
from textual.widgets.markdown import MarkdownBlock, MarkdownFence

from chatbot.tui.widgets.room import free_room, keep_room
from chatbot.tui.widgets.text import clean


def _show_link_targets(state: StateCore) -> None:
    """After a link whose text is not its address, the address in angle brackets: `[docs](http://x)`
    shows as `docs <http://x>`, so a link cannot pass for another place."""
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        href, text = None, []
        for token in block.children:
            children.append(token)
            if token.type == "link_open":
                href, text = str(token.attrs.get("href", "")), []
            elif token.type == "link_close" and href is not None:
                if "".join(text).strip() not in (href, href.removeprefix("mailto:")):
                    shown = Token("text", "", 0)
                    shown.content = f" <{href}>"
                    children.append(shown)
                href = None
            elif href is not None and token.type in ("text", "code_inline"):
                text.append(token.content)
        block.children = children


def reply_parser() -> MarkdownIt:
    # html off: a tag in a reply is text to show, not markup to drop (Textual draws no HTML).
    parser = MarkdownIt("gfm-like", {"html": False})
    parser.core.ruler.push("show_link_targets", _show_link_targets)
    return parser


def code_blocks(text: str) -> list[str]:
    """The fenced and indented code blocks of a reply, in order, exactly as written."""
    return [t.content for t in reply_parser().parse(text) if t.type in ("fence", "code_block")]


BLOCK_ROOM_LINES = 2  # room below a growing paragraph or code block while the reply streams


def _layout_for(widget: Widget, content: Content, markdown: Markdown) -> bool:
    """Whether showing `content` needs a layout (unknown: yes). A layout of the whole screen
    costs far more than a repaint, and most tokens of a growing paragraph or code block do not
    add a line; while the reply streams, the block keeps room for a few more (`room.py`)."""
    width = widget.content_region.width
    if width <= 0:
        return True
    height = content.get_height(widget.styles, width)
    if isinstance(markdown, ReplyMarkdown) and markdown.streaming:
        return markdown.room_for(widget, height)
    return height != widget.content_region.height


class _Paragraph(MarkdownParagraph):
    def update(self, content="", *, layout: bool = True) -> None:
        if layout and isinstance(content, Content) and self.is_mounted:
            layout = _layout_for(self, content, self._markdown)
        super().update(content, layout=layout)


class _Fence(MarkdownFence):
    def set_content(self, content: Content) -> None:
        self._content = content
        with suppress(NoMatches):
            label = self.query_one("#code-content", Label)
            label.update(content, layout=_layout_for(label, content, self._markdown))


class ReplyMarkdown(Markdown):
    """A reply's body. `show` renders the whole text again; `grow` adds what streamed in since
    (Textual re-parses only from the last block on)."""

    def __init__(self, text: str = "", **kwargs):
        self.shown = clean(text)
        self.streaming = False  # set by the message view while the reply streams
        self.growing: Widget | None = None  # the block last given room
        self._roomy: set[Widget] = set()
        super().__init__(self.shown, parser_factory=reply_parser, open_links=False, **kwargs)

    def get_block_class(self, block_name: str) -> type[MarkdownBlock]:
        # The two blocks a streaming reply grows most: repainted without a layout where they can be.
        steady = {"paragraph_open": _Paragraph, "fence": _Fence, "code_block": _Fence}
        return steady.get(block_name) or super().get_block_class(block_name)

    def text_height(self) -> int:
        """The lines its blocks take, as last laid out (margins included; -1, its own margin)."""
        return sum(block.outer_size.height + block.styles.margin.bottom for block in self.children) - 1

    async def grow(self, text: str) -> None:
        cleaned = clean(text)
        if cleaned.startswith(self.shown):
            added, self.shown = cleaned[len(self.shown):], cleaned
            if added:
                await self.append(added)
                self._free_room(keep=self._last_growing())
        else:  # e.g. a CR that a later LF made a line break: render it all again
            await self.show(text)

    def room_for(self, block: Widget, height: int) -> bool:
        """Room below the growing block (`keep_room`); whether a layout follows."""
        self.growing = block
        grew = keep_room(block, height, BLOCK_ROOM_LINES)
        self._roomy.add(block)
        return grew

    def _last_growing(self) -> Widget | None:
        """The block given room, if it is (in) the last block: one that a new block follows
        gives its room back at once, not a frame later, which would leave a gap."""
        last, growing = (self.children[-1] if self.children else None), self.growing
        if last is None or growing is None or not (growing is last or last in growing.ancestors):
            return None
        return growing

    def _free_room(self, keep: Widget | None = None) -> None:
        """Only the block that grows keeps room (one that a new block follows gives it back)."""
        for block in self._roomy - {keep}:
            free_room(block)
        self._roomy &= {keep}

    def end_stream(self) -> None:
        self.streaming, self.growing = False, None
        self._free_room()

    async def show(self, text: str) -> None:
        self._free_room()  # (every block is made again)
        self.shown = clean(text)
        await self.update(self.shown)

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        event.stop()
        self.notify(f"Not opened: {clean(event.href)}", title="link", markup=False)
