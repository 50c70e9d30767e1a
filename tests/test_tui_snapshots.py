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
        prefs=Preferences(CONFIG, cursor_blink=False), only=("assistant", "pirate"),
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
        # Its cursor blinks too: on or off by how long the search took (the snapshot flaked).
        pilot.app.get_screen("chat").sidebar.query_one("#search").cursor_blink = False
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


MARKDOWN_REPLY = (
    "## Reading a file\n\nUse **`open`** in a `with` block, as the [docs](https://docs.python.org/3/) say:\n\n"
    "```python\nwith open(\"notes.txt\", encoding=\"utf-8\") as f:\n    for line in f:\n        print(line.rstrip())\n```\n\n"
    "1. it closes the file\n2. even on *errors*\n\n> [bold] and <b>tags</b> stay text."
)


@pytest.fixture
def markdown_app(tmp_path, monkeypatch):
    from chatbot.store import Store

    monkeypatch.setattr(sidebar, "when", lambda moment: "2025-01-01 12:00")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the settings panel lists this machine's models
    settings = make_settings(tmp_path)
    cid = seed_conversation(settings, [("How do I **read** a file? [bold]", MARKDOWN_REPLY)], title="files")
    with Store.open(settings.database_url()) as store:
        store.set_conversation_settings(cid, {"temperature": 0.3, "max_new_tokens": 64, "memory": "off"})
    return make_app(
        tmp_path, FakeEngine(fixed_stats=True), settings=settings, resume="last",
        prefs=Preferences(CONFIG, cursor_blink=False), only=("assistant", "pirate"),
    )


def test_markdown_reply_and_the_conversations_settings_in_the_status_bar(markdown_app, snap_compare):
    assert snap_compare(markdown_app, terminal_size=(110, 36), run_before=ready)


def test_settings_panel(markdown_app, snap_compare):
    async def before(pilot):
        await ready(pilot)
        await pilot.press("f9")
        await wait_for(pilot, lambda: pilot.app.screen.query("#temperature"))
        pilot.app.screen.query_one("#temperature").cursor_blink = False
        await pilot.pause(0.2)

    assert snap_compare(markdown_app, terminal_size=(110, 36), run_before=before)
