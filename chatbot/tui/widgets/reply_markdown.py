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
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import Label, Markdown
from textual.widgets._markdown import (  # not exported; subclassed as Textual's docs do blocks
    MarkdownBullet,
    MarkdownBulletList,
    MarkdownH1,
    MarkdownH2,
    MarkdownH3,
    MarkdownH4,
    MarkdownH5,
    MarkdownH6,
    MarkdownListItem,
    MarkdownOrderedList,
    MarkdownParagraph,
)
from textual.widgets.markdown import MarkdownBlock, MarkdownFence

from chatbot.tui.widgets.room import OneLayout, free_room, keep_room
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


def _same(a: Content, b: Content) -> bool:
    """The same text and styles (Content's own == compares the text only)."""
    return a.plain == b.plain and a.spans == b.spans


class _Steady(OneLayout):
    """A text block (paragraph, heading) that a streamed update of the same kind changes in
    place, repainted without a layout where its height allows; unchanged, not even repainted.
    (A mixin, not a widget: Textual's CSS follows only the first widget base of a class, so the
    block's own Textual class must come first among those.)"""

    def set_content(self, content: Content) -> None:
        if self.is_mounted and _same(content, self._content):  # e.g. a list item before the growing one
            return
        super().set_content(content)

    def update(self, content="", *, layout: bool = True) -> None:
        if layout and isinstance(content, Content) and self.is_mounted:
            layout = _layout_for(self, content, self._markdown)
        super().update(content, layout=layout)

    async def _update_from_block(self, block: MarkdownBlock) -> None:
        if type(block) is type(self):  # Textual's heading is taken down and mounted again
            self.set_content(block._content)
            self._copy_context(block)
        else:
            await _replace(self, block)


class _Paragraph(_Steady, MarkdownParagraph):
    pass


_HEADINGS = {cls.__name__[-2:].lower(): type(f"_{cls.__name__}", (_Steady, cls), {})
             for cls in (MarkdownH1, MarkdownH2, MarkdownH3, MarkdownH4, MarkdownH5, MarkdownH6)}


async def _replace(old: MarkdownBlock, new: MarkdownBlock) -> None:
    """`new` where `old` was (Textual's own fallback mounts it at the end of the document: right
    only for a top-level block)."""
    await old.parent.mount(new, after=old)
    await old.remove()


def _in_place(old: Widget, new: Widget) -> bool:
    """Whether `old` takes an update to `new` in place (the blocks made here, of one kind)."""
    return type(old) is type(new) and isinstance(old, (_Steady, _Fence, _GrowingList))


class _GrowingList(OneLayout):
    """A list that a streamed update grows in place: items it has are updated (their blocks in
    place, or made again where their shape changed), new items are mounted after them. Textual's
    own list is taken down and mounted again at each update: a compose, and a layout, of every
    item. Rows are laid out as Textual's: a bullet beside a column of the item's blocks. (A mixin,
as `_Steady` is.)"""

    def symbols(self, items: list[MarkdownListItem]) -> list[str]:
        return [item.bullet for item in items]

    def compose(self):
        items = [block for block in self._blocks if isinstance(block, MarkdownListItem)]
        yield from (_row(item, symbol) for item, symbol in zip(items, self.symbols(items)))
        self._blocks.clear()

    async def _update_from_block(self, block: MarkdownBlock) -> None:
        if type(block) is not type(self) or not await self._grow_to(block):
            await _replace(self, block)

    async def _grow_to(self, block: MarkdownBlock) -> bool:
        items = [b for b in block._blocks if isinstance(b, MarkdownListItem)]
        symbols = self.symbols(items)
        rows = [row for row in self.children if isinstance(row, Horizontal)]
        if len(items) < len(rows) or [row.children[0].symbol for row in rows] != symbols[: len(rows)]:
            return False  # fewer items, or the numbers' width changed: made again
        for row, item in zip(rows, items):
            column, blocks = row.children[1], item._blocks
            old = list(column.children)
            if len(old) == len(blocks) and all(_in_place(o, n) for o, n in zip(old, blocks)):
                for o, n in zip(old, blocks):
                    await o._update_from_block(n)
            else:
                await column.remove_children()
                await column.mount_all(blocks)
        if len(items) > len(rows):
            await self.mount_all([_row(item, symbol) for item, symbol in zip(items[len(rows):], symbols[len(rows):])])
        self._copy_context(block)
        return True


def _row(item: MarkdownListItem, symbol: str) -> Horizontal:
    bullet = _Bullet()
    bullet.symbol = symbol
    return _Row(bullet, _Column(*item._blocks))


class _Row(OneLayout, Horizontal):
    pass


class _Column(OneLayout, Vertical):
    pass


class _Bullet(OneLayout, MarkdownBullet):
    pass


class _BulletList(_GrowingList, MarkdownBulletList):
    pass


class _OrderedList(_GrowingList, MarkdownOrderedList):
    def symbols(self, items: list[MarkdownListItem]) -> list[str]:
        """As Textual numbers them: from the first item's number, right-aligned."""
        try:
            start = int(items[0].bullet) if items else 1
        except ValueError:
            start = 1
        numbers = [f"{number}. " for number in range(start, start + len(items))]
        width = max((len(n) for n in numbers), default=0)
        return [n.rjust(width + 1) for n in numbers]


class _Fence(OneLayout, MarkdownFence):
    def set_content(self, content: Content) -> None:
        if self.is_mounted and _same(content, self._content):
            return
        self._content = content
        with suppress(NoMatches):
            label = self.query_one("#code-content", Label)
            label.update(content, layout=_layout_for(label, content, self._markdown))

    def compose(self):
        yield _CodeLabel(self._highlighted_code, id="code-content", expand=True)  # as Textual's


class _CodeLabel(OneLayout, Label):
    pass


class ReplyMarkdown(OneLayout, Markdown):
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
        steady = {"paragraph_open": _Paragraph, "fence": _Fence, "code_block": _Fence,
                  "bullet_list_open": _BulletList, "ordered_list_open": _OrderedList, **_HEADINGS}
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
