"""An imported card's opening messages in the chat UI (Textual Pilot, fake model, real SQLite):
shown as the persona's first reply the moment a new conversation starts, its alternates browsable
as siblings before anything is stored, and the one shown kept with the first turn."""

from __future__ import annotations

import json

import pytest
from card_files import REAL_WORLD_V2
from test_persona_support import run_cli
from tui_fakes import FakeEngine, idle, make_app, make_settings, wait_for

from chatbot.personas.registry import find
from chatbot.store import Store

pytestmark = pytest.mark.asyncio
SIZE = (110, 34)
MARA = "captain-mara-voss"


@pytest.fixture
def settings(tmp_path, isolated_settings, monkeypatch):
    """The TUI's settings over a data dir holding the imported card (and the fake pirate)."""
    monkeypatch.setenv("CHATBOT_USER_NAME", "Ann")
    card = tmp_path / "mara.json"
    card.write_text(json.dumps(REAL_WORLD_V2))
    assert run_cli(["persona", "import", str(card)]) == 0
    settings = make_settings(tmp_path)
    assert settings.data_dir == isolated_settings.data_dir
    return settings


def shown(app) -> list[tuple[str, str, tuple[int, int]]]:
    return [(m.role, m.content, m.sibling_pos) for m in app.get_screen("chat").log_view.messages]


async def test_a_new_conversation_shows_the_cards_opening_at_once(tmp_path, settings):
    openings = find(MARA, settings.data_dir).persona.first_messages
    assert len(openings) == 3
    engine = FakeEngine(reply_for=lambda prompt: "Aye.")
    app = make_app(tmp_path, engine, persona=MARA, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        assert shown(app) == [("assistant", openings[0], (1, 3))]  # before anything is typed or stored
        with Store.open(settings.database_url()) as store:
            assert store.latest_conversation_id() is None
        screen = app.get_screen("chat")
        screen.log_view.select(screen.log_view.messages[0])
        await pilot.press("alt+right")
        await wait_for(pilot, lambda: shown(app)[0][2] == (2, 3), what="the next opening")
        assert shown(app) == [("assistant", openings[1], (2, 3))]
        composer = screen.composer
        composer.focus()
        composer.text = "Where do I sleep?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 3, what="the first reply")
        assert openings[1] in engine.prompts[-1] and openings[0] not in engine.prompts[-1]
        # the opening shown is the stored one now: a message with an id, its siblings the others
        first = screen.log_view.messages[0]
        assert first.message_id is not None and (first.content, first.sibling_pos) == (openings[1], (2, 3))
        assert shown(app)[1:] == [("user", "Where do I sleep?", (1, 1)), ("assistant", "Aye.", (1, 1))]
    with Store.open(settings.database_url()) as store:
        branch = store.active_branch(store.latest_conversation_id())
        assert [m.content for m in branch] == [openings[1], "Where do I sleep?", "Aye."]
        assert [m.content for m in store.siblings(branch[0].id)] == list(openings)


async def test_switching_to_a_card_in_a_new_conversation_shows_its_opening(tmp_path, settings):
    openings = find(MARA, settings.data_dir).persona.first_messages
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        assert shown(app) == []
        app.get_screen("chat").switch_persona(MARA)
        await wait_for(pilot, lambda: shown(app) == [("assistant", openings[0], (1, 3))], what="the opening")
        app.get_screen("chat").switch_persona("pirate")
        await wait_for(pilot, lambda: shown(app) == [], what="the pirate's greeting line only")
