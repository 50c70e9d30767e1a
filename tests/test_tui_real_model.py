"""The TUI end to end on the real bundled model: the UI paints, the model loads behind it (in its
own process, as `chatbot` runs it), a message typed meanwhile is answered, streamed and stored."""

from __future__ import annotations

import pytest
from tui_fakes import idle, make_app, wait_for

from chatbot.config import Settings
from chatbot.store import Store

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]


async def test_real_bundled_model_end_to_end(tmp_path, model_cache_dir):
    from chatbot.engine.remote import open_remote_runtime

    settings = Settings(
        model="", cache_dir=model_cache_dir, data_dir=tmp_path / "data", db=str(tmp_path / "chat.db"),
        temperature=0, max_new_tokens=16,
    )
    progress_seen: list[str] = []

    def load(progress):
        def note(message: str) -> None:
            progress_seen.append(message)
            progress(message)

        return open_remote_runtime(settings, progress=note)

    app = make_app(tmp_path, settings=settings, open_runtime=load)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.get_screen("chat")
        screen.composer.text = "What is the capital of France?"
        await pilot.press("enter")  # before the model is ready: queued, sent when it is
        await wait_for(pilot, lambda: idle(app) and len(screen.log_view.messages) == 2, timeout=240, what="reply")
        reply = screen.log_view.messages[-1]
        assert reply.status in ("complete", "interrupted") and reply.content.strip()
        assert "SmolLM2" in screen.status.model
        ttft, rate = screen.status.speed
        assert rate > 0
        worker = app.controller.runtime.engine.worker.process
    app.controller.runtime.close()
    assert worker.poll() is not None  # the model's process ends with the UI
    with Store.open(settings.database_url()) as store:
        stored = store.active_branch(store.latest_conversation_id())
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].content == reply.content and stored[1].stats["new_tokens"] > 0
    assert "Paris" in reply.content
