"""Room below a streaming text, so that most lines it gains move nothing else on the screen.

Textual lays the whole screen out again when a widget's height changes, and repaints every widget
whose geometry changed: all the blocks of a Markdown reply when the reply grows a line (their
container's size is part of their geometry), the whole log when the log, anchored to the bottom,
scrolls. While a reply streams, its widgets are given a minimum height a few lines beyond their
text, grown in steps: a line more then fits, and is a repaint of that widget alone.
"""

from __future__ import annotations

from textual.widget import Widget


def keep_room(widget: Widget, height: int, lines: int, margin: int = 0) -> bool:
    """Make sure `widget` has room for `height` lines of text and `margin` more (its height as
    laid out, or the room it was given); when it has not, give it `lines` beyond its text.
    Returns whether it grew (a layout follows)."""
    room = widget.styles.min_height
    if height + margin <= max(widget.content_region.height, 0 if room is None else int(room.value)):
        return False
    widget.styles.min_height = height + lines
    return True


def free_room(widget: Widget) -> None:
    """Back to the text's own height (a layout follows if it had room)."""
    if widget.styles.min_height is not None:
        widget.styles.min_height = None


class OneLayout:
    """A widget mixin: a layout that resizes it is not followed by a second layout of the whole
    screen. Textual sets a resized widget's virtual size as a layout-changing value, so each
    layout that resizes a block of a streaming reply asks for another, which changes nothing
    for a widget that does not scroll (10-20 ms of CPU a frame at 120x40). Only for widgets that
    never scroll. (Not a widget class itself: Textual's CSS follows a class's first widget base.)"""

    def _size_updated(self, size, virtual_size, container_size, layout: bool = True) -> bool:
        return super()._size_updated(size, virtual_size, container_size, layout=False)
