"""Counting 👍🏽 as the terminal draws it (chatbot/tui/emoji_width.py); the app's half of the
probe is in test_tui.py."""

import pytest
from rich.cells import cell_len

from chatbot.tui import emoji_width


@pytest.fixture
def rich_widths():
    yield emoji_width
    emoji_width.set_modifier_width(0)  # the table is the process's: put it back


def test_a_terminal_that_does_not_join_skin_tones_gets_them_counted(rich_widths):
    assert cell_len("👍🏽") == 2  # Rich's own count: the pair joined
    assert not rich_widths.adjust_to_report(2)  # the terminal joins them: nothing to change
    assert cell_len("👍🏽") == 2
    assert rich_widths.adjust_to_report(4)  # it drew 4 cells
    assert cell_len("ok 👍🏽 fine") == 12 and cell_len("👍") == 2
