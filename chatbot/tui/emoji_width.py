"""How wide the terminal really draws an emoji with a skin-tone modifier (👍🏽).

Rich counts the modifier (U+1F3FB-U+1F3FF) as 0 cells, so 👍🏽 takes 2, as terminals that join
the pair draw it (kitty, WezTerm). Many do not (xterm, VTE, tmux): they draw the modifier as an
emoji of its own, 4 cells in all, and every line holding one overflows its box by 2. No setting
tells which kind a terminal is, so the app asks it: it draws the pair at the top-left corner, asks
where the cursor went (`ESC [ 6 n`), and when the answer is 4 cells counts each modifier as 2
from then on. The screen is repainted over the probe at once.
"""

from __future__ import annotations

from rich import cells

PROBE = "\x1b7\x1b[1;1H\U0001f44d\U0001f3fd\x1b[6n\x1b8"  # save cursor, draw 👍🏽, ask, restore
MODIFIERS = (0x1F3FB, 0x1F3FF)
JOINED_WIDTH = 2  # what Rich counts for 👍🏽


def _table() -> list[tuple[int, int, int]] | None:
    """Rich's width table in use (a list of (first, last, width) ranges), or None when this Rich
    keeps it otherwise: then nothing is adjusted and 👍🏽 stays 2 cells, as before."""
    try:
        widths = cells.load_cell_table("auto").widths
    except Exception:
        return None
    return widths if isinstance(widths, list) else None


def modifier_width() -> int:
    return cells.get_character_cell_size(chr(MODIFIERS[0]))


def set_modifier_width(width: int) -> bool:
    """Count each skin-tone modifier as `width` cells (2: the terminal does not join the pair;
    0: it does, Rich's own count). Returns whether Rich's table could be adjusted."""
    table = _table()
    if table is None:
        return False
    first, last = MODIFIERS
    for index, (start, end, _) in enumerate(table):
        if (start, end) == (first, last):  # Rich gives the five modifiers a range of their own
            table[index] = (start, end, width)
            break
    else:
        return False
    cells.get_character_cell_size.cache_clear()
    cells.cached_cell_len.cache_clear()
    return True


def adjust_to_report(column: int) -> bool:
    """Take the terminal's answer to PROBE (the 0-based column the cursor reached after 👍🏽):
    True when the widths changed."""
    if column == JOINED_WIDTH + 2 and modifier_width() == 0:
        return set_modifier_width(2)
    return False
