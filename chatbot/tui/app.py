"""The Textual app: `chatbot` (no command) opens it. The screen itself lives in `screen.py`."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from textual import events
from textual.app import App
from textual.binding import Binding

from chatbot.tui.commands import ChatCommands
from chatbot.tui import emoji_width
from chatbot.tui.conversation import ChatController
from chatbot.tui.keys import BY_ID
from chatbot.tui.preferences import Preferences, default_path
from chatbot.tui.screen import ChatScreen
from chatbot.tui.terminal_input import tolerate_malformed_input


class ChatApp(App):
    CSS_PATH = "chat.tcss"
    TITLE = "chatbot"
    COMMANDS = App.COMMANDS | {ChatCommands}
    BINDINGS = [Binding(BY_ID["quit"].keys, "quit", "Quit", show=False, priority=True, id="quit")]

    def __init__(
        self,
        controller: ChatController | None,
        open_store: Callable[[], Any] | None,
        open_runtime: Callable[[Callable[[str], None]], Any] | None,
        prefs: Preferences | None = None,
        resume: str | None = None,
        persona: str | None = None,
        prepare: Callable[[ChatApp], ChatController] | None = None,
    ):
        """Without a controller, `prepare(app)` makes it on the backend worker after the first
        frame (and sets `open_store` and `open_runtime`): the settings and personas it reads
        import pydantic, ~0.25 s of CPU the first paint need not wait for."""
        self.prefs = prefs if prefs is not None else Preferences(None)
        self.COMMAND_PALETTE_BINDING = self.prefs.keys.get("palette", BY_ID["palette"].keys)
        super().__init__()
        self.controller = controller
        self.open_store = open_store
        self.open_runtime = open_runtime
        self._prepare = prepare
        self.resume = resume
        self.persona_asked = persona  # from the command line: it also applies to a resumed conversation
        self.fatal: Exception | None = None
        self.set_keymap(self.prefs.keys)
        self._probing_widths = False

    def prepare(self) -> ChatController:
        """On the backend worker: the controller (and store and model openers) not made yet."""
        self.controller = self._prepare(self)
        return self.controller

    @property
    def keymap(self) -> dict[str, str]:
        return dict(self.prefs.keys)

    @property
    def chat(self) -> ChatScreen:
        return self.get_screen("chat")

    def on_mount(self) -> None:
        if self.prefs.theme and self.prefs.theme in self.available_themes:
            self.theme = self.prefs.theme
        elif self.prefs.theme:
            self.prefs.problems.append(f"unknown theme '{self.prefs.theme}': using the default")
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.install_screen(ChatScreen(self.controller, self.resume, self.persona_asked), "chat")
        self.push_screen("chat")
        for problem in self.prefs.problems:
            self.notify(problem, title="config", severity="warning", timeout=10)
        if not self.is_headless and self._driver is not None:
            self.probe_emoji_width()

    def probe_emoji_width(self) -> None:
        """Ask the terminal how wide it draws 👍🏽 (see emoji_width.py); the answer arrives as a
        cursor position report."""
        self._probing_widths = True
        if self._driver is not None:
            self._driver.write(emoji_width.PROBE)
            self._driver.flush()

    def on_cursor_position(self, event: events.CursorPosition) -> None:
        if not self._probing_widths:
            return
        self._probing_widths = False
        if emoji_width.adjust_to_report(event.x):
            self.refresh_css(animate=False)  # every widget drops the lines it laid out before
        self.screen.refresh(layout=True)  # and the corner the probe drew in is painted over

    def _remember_theme(self, theme) -> None:
        if self.prefs.theme != theme.name:
            self.prefs.theme = theme.name
            self.prefs.save()


def run_tui(make_state: Callable[[], Any], resume: str | None = None, persona: str | None = None) -> None:
    """Open the UI at once. `make_state()` (the settings: `cli.state.AppState`), the personas,
    the store and the model are made behind the first frame, on the UI's backend worker."""
    os.environ["TQDM_DISABLE"] = "1"  # a conversion progress bar would draw over the screen
    made = []

    def prepare(app: ChatApp) -> ChatController:
        from chatbot.personas.registry import scan

        state = make_state()  # an invalid setting: one line, once the UI has closed
        made.append(state)
        settings = state.settings
        installed = state.persona(persona)  # an unknown name: the same
        personas, _problems = scan(settings.data_dir)
        personas.setdefault(installed.persona.name, installed)

        def open_runtime(progress):
            # The model decodes in a process of its own: from a thread of this one, next to the
            # UI's event loop, it ran at half the speed of `chatbot ask` (see engine/worker.py).
            from textual.worker import get_current_worker

            from chatbot.engine.remote import open_remote_runtime

            loader = get_current_worker()  # cancelled when the UI closes: then stop loading at once
            return open_remote_runtime(settings, progress=progress, cancelled=lambda: loader.is_cancelled)

        app.open_store, app.open_runtime = state.store, open_runtime
        return ChatController(settings, personas, installed)

    app = ChatApp(None, None, None, Preferences.load(default_path()), resume, persona, prepare=prepare)
    tolerate_malformed_input()
    try:
        app.run()
    finally:
        # The model's process, loaded or still loading. Not imported yet: none was started (an
        # import here, for nothing, was torch's: seconds before an early error could be shown).
        stop_all_workers = getattr(sys.modules.get("chatbot.engine.remote"), "stop_all_workers", None)
        if stop_all_workers is not None:
            stop_all_workers()
        for state in made:
            state.close()  # the store, if it opened
    if app.fatal is not None:
        raise app.fatal
