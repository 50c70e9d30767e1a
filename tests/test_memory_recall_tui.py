"""The chat UI shows memory recall (issue 14): "recalled N" in the status bar, and F10 opens what
was recalled for the reply in view, with the message ids. Real Textual app (Pilot), real SQLite
file, the fake model of tui_fakes (it answers a secret word it finds anywhere in the prompt)."""

from __future__ import annotations

import pytest
from tui_fakes import idle, make_app, make_settings, seed_conversation, wait_for

from chatbot.store import Store
from chatbot.tui.widgets.recalled import RecalledScreen

pytestmark = pytest.mark.asyncio


async def test_the_status_bar_counts_what_was_recalled_and_f10_shows_it(tmp_path):
    settings = make_settings(tmp_path).model_copy(update={"context_budget": 400})
    filler = [(f"Tell me about topic number {i}, please.", f"Topic {i} is interesting. " * 3) for i in range(20)]
    cid = seed_conversation(settings, [("The secret word is PINEAPPLE. Say OK.", "OK.")] + filler)
    with Store.open(settings.database_url()) as store:
        secret_id = store.active_branch(cid)[0].id
    app = make_app(tmp_path, settings=settings, resume="last")
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        screen = app.get_screen("chat")
        before = screen.controller.session.context_for("Go on.")
        assert before.dropped_turns > 0 and "PINEAPPLE" not in before.text  # out of the window
        screen.composer.focus()
        screen.composer.text = "What is the secret word?"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and screen.log_view.messages[-1].content.startswith("The secret"),
                       what="reply")
        assert screen.log_view.messages[-1].content == "The secret word is PINEAPPLE."
        assert screen.status.recalled == 1 and "recalled 1" in str(screen.status.render())
        await pilot.press("f10")
        await wait_for(pilot, lambda: isinstance(app.screen, RecalledScreen), what="recalled screen")
        shown = str(app.screen.query_one("#recalled").render())
        assert f"message {secret_id} (you): The secret word is PINEAPPLE. Say OK." in shown
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, RecalledScreen), what="closed")
