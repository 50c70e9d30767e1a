"""Snapshots of the main screens (pytest-textual-snapshot; `--snapshot-update` after a
deliberate change, then look at the SVGs). Over the fake model with fixed stats and dates."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_fakes import FakeEngine, idle, make_app, make_settings, seed_conversation, wait_for

from chatbot.tui.preferences import Preferences
from chatbot.tui.widgets import sidebar

SIZE = (110, 30)
CONFIG = Path("/home/you/.config/persona-chatbot/tui.toml")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setattr(sidebar, "when", lambda moment: "2025-01-01 12:00")
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("What is a [bold]tag[/]?", "Text in square brackets, shown as typed.")],
                      title="markup")
    seed_conversation(settings, [("Hello!", "Hi! How can I help?"), ("Tell me about ships", "Ships float.")],
                      title="ships")
    return make_app(
        tmp_path, FakeEngine(fixed_stats=True), settings=settings, resume="last",
        prefs=Preferences(CONFIG), only=("assistant", "pirate"),
    )


async def ready(pilot) -> None:
    await wait_for(pilot, lambda: idle(pilot.app) and pilot.app.get_screen("chat").log_view.messages)
    # A blinking cursor is on or off depending on when the frame is taken: keep it still.
    pilot.app.get_screen("chat").composer.cursor_blink = False


async def send_as_pirate(pilot) -> None:
    await ready(pilot)
    pilot.app.get_screen("chat").switch_persona("pirate")
    pilot.app.get_screen("chat").composer.text = "Where is the treasure?"
    await pilot.press("enter")
    await wait_for(pilot, lambda: idle(pilot.app) and len(pilot.app.get_screen("chat").log_view.messages) == 6)
    await pilot.pause(0.2)


def test_main_screen(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=send_as_pirate)


def test_persona_picker(app, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("f2")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_help_screen(app, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(110, 50), run_before=before)


def test_search_in_sidebar(app, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("ctrl+f", *"brackets")
        await wait_for(pilot, lambda: len(pilot.app.get_screen("chat").sidebar.query("ConversationItem")) == 1)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_replay_screen(app, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("f6")
        await pilot.pause(0.1)
        for _ in range(6):
            await pilot.press("s")
            await pilot.pause(0.1)
        await wait_for(pilot, lambda: pilot.app.screen.finished)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)
