"""Replay mode: a saved branch played back, each reply streaming at the speed it was generated
(time to first token, then its tokens/s), with pause, skip and speed keys."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from chatbot.tui import keys
from chatbot.tui.widgets.chat_log import ChatLog, MessageView
from chatbot.tui.widgets.text import clean

USER_PAUSE_S = 0.6  # a beat after each user message, at speed 1
TICK_S = 0.02


class ReplayScreen(Screen):
    BINDINGS = keys.bindings("replay")

    def __init__(self, view, label_of, color_of, speed: float = 1.0):
        super().__init__(classes="replay")
        self.view = view
        self.label_of, self.color_of = label_of, color_of
        self.speed = speed
        self.paused = False
        self.skipping = False
        self.finished = False
        self.position = 0
        self._streaming: MessageView | None = None  # the reply being played, while it plays
        self.total = sum(1 for i in view.items if getattr(i, "role", None) == "assistant")

    def compose(self) -> ComposeResult:
        yield Static(id="replay-title", markup=False)
        yield ChatLog(id="replay-log")
        yield Static(id="replay-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        title = self.view.title or f"Conversation {self.view.conversation_id}"
        self.query_one("#replay-title", Static).update(Text(f"Replay: {clean(title)}", style="bold"))
        self._show_status()
        self.run_worker(self._play(), exclusive=True, group="replay")

    def _show_status(self) -> None:
        state = "finished" if self.finished else ("paused" if self.paused else "playing")
        self.query_one("#replay-status", Static).update(
            Text(f"{state} · reply {self.position}/{self.total} · speed ×{self.speed:g}", style="italic")
        )

    async def _play(self) -> None:
        from chatbot.store.replay import Switch, plan_reply

        log = self.query_one(ChatLog)
        for item in self.view.items:
            if isinstance(item, Switch):
                log.add_event(f"── persona: {self.label_of(item.after.name)} ──")
                continue
            if item.role == "user":
                self.skipping = False
                log.add_message(MessageView("user", item.content, message_id=item.id))
                await self._wait(USER_PAUSE_S)
            elif item.role == "assistant":
                self.position += 1
                self._show_status()
                name = item.persona.name if item.persona else None
                reply = MessageView(
                    "assistant", label=self.label_of(name), color=self.color_of(name), message_id=item.id,
                    markdown=self.app.prefs.markdown,
                )
                await log.mount(reply)
                reply.start_stream()
                self._streaming = reply
                for chunk in plan_reply(item, 1.0):
                    await self._wait(chunk.delay_s)
                    reply.push(chunk.text)
                self._streaming = None
                await reply.end_stream(item.status, item.content)
                self.skipping = False
        self.finished = True
        self._show_status()

    async def _wait(self, seconds: float) -> None:
        """Sleep `seconds` of recorded time: scaled by the speed, held while paused, cut by skip."""
        left = seconds
        while (left > 0 or self.paused) and not self.skipping:
            await asyncio.sleep(TICK_S)
            if not self.paused:
                left -= TICK_S * self.speed

    async def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self._show_status()
        if self.paused and self._streaming is not None:
            # Show every word played so far now, not at the next repaint: a pause freezes what
            # is on screen, and nothing is pushed while paused.
            await self._streaming.flush()

    def action_skip(self) -> None:
        self.skipping = True
        self.paused = False
        self._show_status()

    def action_faster(self) -> None:
        self.speed = min(self.speed * 2, 64)
        self._show_status()

    def action_slower(self) -> None:
        self.speed = max(self.speed / 2, 0.125)
        self._show_status()

    def action_leave(self) -> None:
        self.app.pop_screen()
