"""The main screen: sidebar, chat log, composer, status bar; and what each key does."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from textual import events, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from chatbot.errors import NotFoundError, UserError
from chatbot.tui import keys
from chatbot.tui.conversation import ChatController
from chatbot.tui.widgets.chat_log import ChatLog, EventLine, MessageView
from chatbot.tui.widgets.composer import Composer
from chatbot.tui.widgets.sidebar import Sidebar, title_of
from chatbot.tui.widgets.status_bar import StatusBar
from chatbot.tui.widgets.text import literal


LOADING = "Loading the model… type away: your message is sent when it is ready."
# Below this many columns the conversation list starts hidden (Ctrl+B shows it): at 32 columns
# of its own it would leave the conversation a narrow strip.
SIDEBAR_MIN_WIDTH = 80
# The backend opens once the first frame is out, or this long after mounting at the latest.
BACKEND_AT_LATEST_S = 5.0  # a safety net (no layout at all: a terminal of size 0), well after the frame
# What works before the settings are read (a moment after the first frame, see `open_backend`):
# nothing here needs the conversation's controller.
WITHOUT_CONTROLLER = {"cancel", "select", "toggle_sidebar", "search", "help", "pick_theme", "toggle_markdown"}


_startup_frozen = False


def _freeze_startup() -> None:
    """What startup made (modules, the tokenizer, the store's mappings) lives as long as the
    process: once the model is ready, collected once and then kept out of the garbage
    collector's full passes, which walked all of it (~0.1-0.2 s of CPU in one frame, several
    times while a long reply streams). Once a process (tests run many apps in one)."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.collect()
        gc.freeze()


class ChatScreen(Screen):
    BINDINGS = keys.bindings("chat")

    def __init__(self, controller: ChatController | None, resume: str | None = None, persona: str | None = None):
        super().__init__()
        self.controller = controller  # None: made by the app's `prepare` after the first frame
        self.resume = resume
        self.persona_asked = persona  # `--persona`: wins over a resumed conversation's own
        self.pending: list[tuple[str, MessageView]] = []  # typed before the model was ready
        self.cancel_event: threading.Event | None = None
        self.streaming: MessageView | None = None
        self.editing: int | None = None  # the user message being edited
        self.sidebar_chosen = False  # shown or hidden by the user: no longer follows the width
        self._backend_started = False

    # -- layout ---------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield Sidebar(id="sidebar")
            with Vertical(id="chat"):
                yield ChatLog(id="log")
                yield Static("", id="edit-banner", markup=False)
                yield Composer(id="composer")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def log_view(self) -> ChatLog:
        return self.query_one("#log", ChatLog)

    @property
    def composer(self) -> Composer:
        return self.query_one("#composer", Composer)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    @property
    def sidebar(self) -> Sidebar:
        return self.query_one("#sidebar", Sidebar)

    @property
    def busy(self) -> bool:
        return self.cancel_event is not None

    def on_mount(self) -> None:
        if self.controller is not None:
            self._show_persona()
        self.composer.cursor_blink = self.app.prefs.cursor_blink
        self.composer.focus()
        self._loading_notice()
        # Once the first frame is out: reading the settings and personas (pydantic), opening the
        # store and the tokenizer (SQLAlchemy, transformers) import on a worker thread, which,
        # holding the GIL, delayed the first paint. The first refresh callback came before the
        # frame that holds the screen's widgets; the layout signal comes after it is written out.
        self.screen_layout_refresh_signal.subscribe(self.log_view, self._laid_out)
        self.set_timer(BACKEND_AT_LATEST_S, self._start_backend)

    def _laid_out(self, _screen) -> None:
        self.screen_layout_refresh_signal.unsubscribe(self.log_view)
        self.composer.call_after_refresh(self._start_backend)

    def _start_backend(self) -> None:
        if not self._backend_started:
            self._backend_started = True
            gc.enable()  # off until now when started from the shell (cli/tui_start.py)
            self.open_backend()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.controller is None and action not in WITHOUT_CONTROLLER:
            return None  # shown, disabled, for the moment until the settings are read
        return True

    def on_resize(self, event: events.Resize) -> None:
        if not self.sidebar_chosen:
            self.sidebar.display = event.size.width >= SIDEBAR_MIN_WIDTH

    def _loading_notice(self) -> None:
        self.log_view.add_event(LOADING).add_class("-loading")

    # -- opening the store and the model in the background --------------------------------------

    @work(thread=True, exclusive=True, group="backend")
    def open_backend(self) -> None:
        app = self.app
        if self.controller is None:
            try:
                controller = app.prepare()
            except Exception as exc:  # noqa: BLE001 - e.g. an invalid setting: one line once the UI closes
                self._post(self._prepare_failed, exc)
                return
            self._post(self._controller_ready, controller)
        try:
            store = app.open_store()
        except Exception as exc:  # noqa: BLE001 - shown, not raised: the UI stays up
            self._post(self._backend_failed, f"cannot open the database: {exc}")
            return
        self._post(self._store_ready, store)
        if app.fatal is not None:  # `--resume` of no such conversation: closing, load no model
            return  # (importing torch here held the one-line error up by seconds)
        # The Markdown widgets, before the first reply needs them (~0.07 s; not before the
        # first frame, which holds no reply): the model loads for seconds after this anyway.
        import chatbot.tui.widgets.reply_markdown  # noqa: F401

        def progress(message: str) -> None:
            self._post(self._show_progress, message)

        os.environ["TQDM_DISABLE"] = "1"
        try:
            runtime = app.open_runtime(progress)
        except Exception as exc:  # noqa: BLE001
            self._post(self._backend_failed, f"cannot load the model: {exc}")
            return
        self._post(self._runtime_ready, runtime)

    def _post(self, callback, *args) -> None:
        """From a worker thread: run `callback` on the UI; nothing if the UI is closing."""
        try:
            self.app.call_from_thread(callback, *args)
        except Exception:  # noqa: BLE001 - the app is shutting down (or gone)
            pass

    def _controller_ready(self, controller: ChatController) -> None:
        self.controller = controller
        self._show_persona()
        self.refresh_bindings()

    def _prepare_failed(self, exc: Exception) -> None:
        self.app.fatal = exc
        self.app.exit(return_code=getattr(exc, "exit_code", 1))

    def _show_progress(self, message: str) -> None:
        if self.is_attached:
            self.status.model = f"loading: {message}"

    def _backend_failed(self, message: str) -> None:
        if not self.is_attached:
            return
        self.status.model = "not loaded"
        self.log_view.add_event(message, "bold red")
        self.notify(message, severity="error", timeout=10)

    async def _store_ready(self, store) -> None:
        if not self.is_attached:
            return
        self.controller.attach_store(store)
        self.sidebar.store = store
        resume = self.resume
        try:
            conversation_id = store.conversation_id_of(resume) if resume else None
            if conversation_id is not None:  # ('last' with none yet: a new conversation)
                self.controller.open(conversation_id)
        except UserError as exc:
            self.app.fatal = exc
            self.app.exit(return_code=exc.exit_code)
            return
        await self._render_view(keep_notice=True)
        self.sidebar.reload()
        if self.persona_asked is not None:  # as `ask --continue --persona P` does: a recorded switch
            self.switch_persona(self.persona_asked)
        self._preview_context()

    def _runtime_ready(self, runtime) -> None:
        if not self.is_attached:
            return
        try:
            self.controller.attach_runtime(runtime)
        except Exception as exc:  # noqa: BLE001
            self._backend_failed(f"cannot start the session: {exc}")
            return
        self.status.model_loading = False
        self.status.model = runtime.model_name
        for view in self.log_view.messages:  # replies by another model (after a switch) say which
            view.note_model(runtime.model_name)
        for event in self.log_view.query(".event.-loading"):
            event.remove()
        self._preview_context()
        self._send_next_pending()
        _freeze_startup()

    def _preview_context(self) -> None:
        """How much of the budget the open branch (and persona) already takes, shown from the
        moment a conversation opens rather than after its next reply."""
        session = self.controller.session
        if session is None or self.busy or self.controller.conversation_id is None:
            return
        try:
            ctx = session.context_for("", params=self.controller.params())
        except Exception:  # noqa: BLE001 - only a preview: the next turn reports a real problem
            return
        self.status.context = (ctx.tokens, ctx.budget, ctx.dropped_turns)

    # -- showing the open branch ----------------------------------------------------------------

    def _label(self, name: str | None) -> str:
        return self.controller.persona_title(name)

    def _color(self, name: str | None) -> str:
        return self.controller.persona_color(name)

    def _message_view(self, m, siblings=(1, 1)) -> MessageView:
        view = self._new_message_view(m, siblings)
        view.rating = getattr(m, "rating", None)  # shown in its header
        view.model = getattr(m, "model", None) if m.role == "assistant" else None
        view.note_model(self.controller.model_name)
        return view

    def _new_message_view(self, m, siblings=(1, 1)) -> MessageView:
        if m.role == "assistant":
            name = m.persona.name if m.persona else None
            return MessageView(
                "assistant", m.content, label=self._label(name), color=self._color(name), message_id=m.id,
                parent_id=m.parent_id, status=m.status, siblings=siblings, markdown=self.app.prefs.markdown,
            )
        return MessageView(m.role, m.content, message_id=m.id, parent_id=m.parent_id, status=m.status, siblings=siblings)

    async def _render_view(self, keep_notice: bool = False, select_id: int | None = None) -> None:
        from chatbot.store.replay import Switch

        view = self.controller.view()
        log = self.log_view
        widgets = []
        for item in view.items:
            if isinstance(item, Switch):
                widgets.append(EventLine(f"── persona: {self._label(item.after.name)} ──", "italic"))
            else:
                widgets.append(self._message_view(item, view.siblings.get(item.id, (1, 1))))
        if not view.items:
            widgets += self._opening_widgets()
        if keep_notice and not self.controller.ready:
            widgets.append(EventLine(LOADING, "italic"))
            widgets[-1].add_class("-loading")
        widgets += [pending for _, pending in self.pending]
        async with self.batch():
            await log.remove_children()
            await log.mount_all(widgets)
        self.sidebar.current_id = self.controller.conversation_id
        if select_id is not None:
            self.call_after_refresh(log.select_id, select_id)
        self._show_persona()
        self.app.sub_title = title_of(view.title, view.conversation_id) if view.conversation_id else "new conversation"

    def _opening_widgets(self) -> list:
        """A new conversation: a card's opening message, shown at once as the persona's first reply
        (its alternates as siblings, stored with the first turn); other personas' greeting is a line
        the model never sees."""
        persona = self.controller.persona.persona
        openings = persona.first_messages
        if self.controller.conversation_id is None and openings:
            index = min(self.controller.opening, len(openings) - 1)
            return [MessageView("assistant", openings[index], label=persona.title, color=persona.color,
                                siblings=(index + 1, len(openings)), markdown=self.app.prefs.markdown)]
        if persona.greeting:
            return [EventLine(f"{persona.title}: {persona.greeting}", "italic")]
        return []

    def _show_persona(self) -> None:
        from chatbot import conversation_settings

        p = self.controller.persona.persona
        self.status.persona = p.title
        self.status.persona_color = p.color
        self.status.tuning = conversation_settings.summary(self.controller.conversation_settings)

    # -- sending --------------------------------------------------------------------------------

    def on_composer_submitted(self, event: Composer.Submitted) -> None:
        text = event.text
        log = self.log_view
        log.select(None)
        if self.editing is not None:
            if self.busy or not self.controller.ready:
                self.notify("Wait for the model (or Esc the reply) before resending an edit.")
                self.composer.text = text
                return
            user_id, self.editing = self.editing, None
            self._show_edit_banner()
            self._truncate_from(user_id, keep=False)
            self._start_turn("edit", text, user_id)
            return
        if self.busy or self.controller is None or not self.controller.ready:
            view = MessageView("user", text, pending=True)
            self.pending.append((text, view))
            log.add_message(view)
            return
        self._start_turn("send", text)

    def _send_next_pending(self) -> None:
        if self.pending and self.controller is not None and self.controller.ready and not self.busy:
            text, view = self.pending.pop(0)
            view.remove()
            self._start_turn("send", text)

    def _start_turn(self, kind: str, text: str, target: int | None = None) -> None:
        log = self.log_view
        user_view = None
        if kind != "regenerate":
            user_view = log.add_message(MessageView("user", text, parent_id=self.controller.leaf_id))
        persona = self.controller.persona.persona
        view = MessageView(
            "assistant", label=persona.title, color=persona.color, status="streaming", markdown=self.app.prefs.markdown,
            model=self.controller.model_name,
        )
        log.add_message(view)
        view.start_stream()
        log.anchor()
        self.streaming = view
        self.cancel_event = threading.Event()
        self.status.activity = "replying… (Esc stops)"
        self.composer.cursor_blink = False  # each blink repaints: ~2% of a core, taken from the decoder
        self._generate(kind, text, target, user_view, view, self.cancel_event)

    @work(thread=True, group="generate")
    def _generate(self, kind, text, target, user_view, view: MessageView, cancel: threading.Event) -> None:
        controller = self.controller
        reply = None
        try:
            with controller.lock:
                if kind == "regenerate":
                    reply = controller.regenerate(target, cancel)
                elif kind == "edit":
                    reply = controller.edit(target, text, cancel)
                else:
                    reply = controller.send(text, cancel)
                user_id = controller.session.leaf_id  # the question, stored before generation
                self._post(self._reply_started, reply, user_id, user_view, view)
                for delta in reply:
                    view.push(delta)
        except Exception as exc:  # noqa: BLE001 - a failed turn is shown; the UI goes on
            message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            # Refused before any reply (e.g. the database is read-only): the text goes back in the box.
            give_back = text if reply is None and kind != "regenerate" else None
            self._post(self._turn_failed, view, message, give_back)
            return
        self._post(self._turn_done, kind, reply, view)

    def _reply_started(self, reply, user_id, user_view, view) -> None:
        if user_view is not None:
            user_view.message_id = user_id
        view.message_id, view.parent_id = reply.message_id, user_id
        ctx = reply.context
        self.status.context = (ctx.tokens, ctx.budget, ctx.dropped_turns)
        self.status.recalled = len(ctx.recalled)
        for warning in reply.warnings:
            self.notify(warning, severity="warning")

    def _finish_turn(self) -> None:
        self.composer.cursor_blink = self.app.prefs.cursor_blink
        self.cancel_event = None
        self.streaming = None
        self.status.activity = ""
        self._send_next_pending()

    async def _turn_failed(self, view: MessageView, message: str, give_back: str | None = None) -> None:
        await view.end_stream("error")
        if self.controller.session is not None and self.controller.session.conversation_id is not None:
            self.controller.finished(None)
            await self._render_view()  # what was stored (the question, the partial reply)
        self.log_view.add_event(f"error: {message}", "bold red")
        if give_back is not None and not self.composer.text:
            self.composer.text = give_back
        self._finish_turn()

    async def _turn_done(self, kind: str, reply, view: MessageView) -> None:
        await view.end_stream(reply.status, reply.text)
        started = self.controller.conversation_id is None
        self.controller.finished(reply)
        if started and self.controller.persona.persona.first_messages:
            await self._render_view()  # the opening shown is a stored message now (rate it, its siblings)
        stats = reply.stats
        self.status.speed = (stats.ttft_ms, stats.tokens_per_s)
        if reply.save_error:  # the reply stays on screen as streamed; the store could not keep it
            self.log_view.add_event(f"error: {reply.save_error}", "bold red")
            self.notify(reply.save_error, severity="error", timeout=10)
        elif kind != "send":  # sibling counters changed: show the branch as stored
            await self._render_view(select_id=reply.message_id)
        self.sidebar.reload()
        self._finish_turn()

    def _truncate_from(self, message_id: int, keep: bool) -> None:
        """Remove the log from the message `message_id` on (or after it, with `keep`)."""
        children = list(self.log_view.children)
        for index, child in enumerate(children):
            if isinstance(child, MessageView) and child.message_id == message_id:
                for gone in children[index + 1 if keep else index :]:
                    gone.remove()
                return

    # -- actions on the selected message --------------------------------------------------------

    def _target(self, role: str) -> MessageView | None:
        """The selected message, or the last one; for `user`, a reply stands for its question."""
        log = self.log_view
        view = log.selected
        if view is None or view.message_id is None:
            return None
        if view.role == role:
            return view
        if role == "user":
            return next((m for m in log.messages if m.message_id == view.parent_id), None)
        return next((m for m in log.messages if m.role == role and m.parent_id == view.message_id), None)

    def _refuse_if_busy(self) -> bool:
        if self.busy:
            self.notify("A reply is streaming: Esc stops it first.")
            return True
        if not self.controller.ready:
            self.notify("The model is still loading.")
            return True
        return False

    def action_cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.status.activity = "stopping…"
        elif self.editing is not None:
            self.editing = None
            self.composer.clear()
            self._show_edit_banner()
        elif self.log_view.query(".-selected"):
            self.log_view.select(None)
        else:
            self.composer.focus()

    def action_regenerate(self) -> None:
        if self._refuse_if_busy():
            return
        view = self._target("user")
        if view is None:
            self.notify("Nothing to regenerate yet.")
            return
        self._truncate_from(view.message_id, keep=True)
        self._start_turn("regenerate", view.content, view.message_id)

    async def action_sibling(self, step: int) -> None:
        if self.busy:
            self.notify("A reply is streaming: Esc stops it first.")
            return
        view = self.log_view.selected
        if view is not None and view.role == "assistant" and view.message_id is None and self.controller.conversation_id is None:
            await self._step_opening(step)
            return
        if view is None or view.message_id is None or self.controller.store is None:
            return
        if view.sibling_pos[1] < 2:
            self.notify("This message has no siblings (regenerate or edit to make some).")
            return
        index = self.log_view.messages.index(view)
        if self.controller.sibling(view.message_id, step):
            await self._render_view()
            self._preview_context()
            messages = self.log_view.messages
            if index < len(messages):
                self.call_after_refresh(self.log_view.select, messages[index])

    async def _step_opening(self, step: int) -> None:
        """Before the first turn: show another of the card's opening messages (the one shown is kept)."""
        count = len(self.controller.persona.persona.first_messages)
        index = self.controller.opening + step
        if count < 2 or not 0 <= index < count:
            return
        self.controller.opening = index
        await self._render_view()
        messages = self.log_view.messages
        if messages:
            self.call_after_refresh(self.log_view.select, messages[0])

    def action_rate(self, rating: str) -> None:
        """Rate the selected (or last) reply; the same rating again clears it."""
        view = self._target("assistant")
        if view is None or view.role != "assistant" or self.controller.store is None:
            self.notify("No reply to rate yet.")
            return
        if view.status == "streaming":
            self.notify("The reply is still streaming.")
            return
        new = None if view.rating == rating else rating
        try:
            self.controller.store.rate(view.message_id, new)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        view.rating = new
        view.refresh_header()
        self.notify(f"Rated the reply {new}." if new else "Rating cleared.")

    def action_show_recalled(self) -> None:
        """What memory recalled into the prompt of the selected (or last) reply, as stored with it."""
        from chatbot.tui.widgets.recalled import RecalledScreen, recalled_lines

        view = self._target("assistant")
        if view is None or view.role != "assistant" or self.controller.store is None:
            self.notify("No reply to show the memory of yet.")
            return
        try:
            lines = recalled_lines(self.controller.store, view.message_id, self.controller.conversation_id)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self.app.push_screen(RecalledScreen(view.message_id, lines))

    def action_select(self, step: int) -> None:
        self.log_view.select_step(step)

    def action_edit(self) -> None:
        if self._refuse_if_busy():
            return
        view = self._target("user")
        if view is None or view.role != "user":
            self.notify("No message of yours to edit yet.")
            return
        self.editing = view.message_id
        self.composer.text = view.content
        self.composer.move_cursor(self.composer.document.end)
        self.composer.focus()
        self._show_edit_banner()

    def action_copy_message(self) -> None:
        view = self.log_view.selected
        if view is None or not view.content:
            self.notify("Nothing to copy yet.")
            return
        # OSC 52: the terminal puts it on the system clipboard (most do; tmux needs set-clipboard).
        self.app.copy_to_clipboard(view.content)
        what = "your message" if view.role == "user" else "the reply"
        self.notify(f"Copied {what} ({len(view.content)} characters).")

    def action_copy_code(self) -> None:
        from chatbot.tui.widgets.reply_markdown import code_blocks

        view = self._target("assistant")
        blocks = code_blocks(view.content) if view is not None else []
        if not blocks:
            self.notify("No code block in that reply.")
            return
        self.app.copy_to_clipboard(blocks[-1])
        self.notify(f"Copied the code block ({len(blocks[-1])} characters).")

    async def action_toggle_markdown(self) -> None:
        prefs = self.app.prefs
        prefs.markdown = not prefs.markdown
        prefs.save()
        for view in self.log_view.messages:
            await view.show_markdown(prefs.markdown)
        self.notify("Replies rendered as Markdown." if prefs.markdown else "Replies shown as raw text.")

    def _show_edit_banner(self) -> None:
        banner = self.query_one("#edit-banner", Static)
        if self.editing is None:
            banner.update("")
            banner.display = False
        else:
            banner.update(literal("Editing: Enter sends it as a new branch (the old one is kept), Esc cancels."))
            banner.display = True

    # -- personas -------------------------------------------------------------------------------

    def action_pick_persona(self) -> None:
        from chatbot.tui.widgets.dialogs import PersonaPicker

        picker = PersonaPicker(self.controller.personas, self.controller.persona.persona.name)
        self.app.push_screen(picker, lambda name: name and self.switch_persona(name))

    def switch_persona(self, name: str) -> None:
        if name == self.controller.persona.persona.name:
            return
        had_openings = self.controller.persona.persona.first_messages
        try:
            installed = self.controller.switch_persona(name)
        except Exception as exc:  # noqa: BLE001 - e.g. the database refused the write
            self.notify(f"cannot switch persona: {exc}", severity="error")
            return
        if self.controller.conversation_id is None and (had_openings or installed.persona.first_messages):
            self.call_later(self._render_view)  # a new conversation opens with this persona's opening
        else:
            self.log_view.add_event(f"── persona: {installed.persona.title} ──")
        self._show_persona()

    # -- the conversation's own settings ----------------------------------------------------------

    def action_settings(self) -> None:
        controller = self.controller
        settings = controller.settings
        defaults = {  # what an empty field means: the persona's and the global settings
            **controller.default_params().model_dump(),
            "context_budget": settings.context_budget,
            "memory": getattr(settings, "memory", None),
        }
        from chatbot.tui.model_switch import model_names
        from chatbot.tui.widgets.settings_panel import SettingsPanel

        panel = SettingsPanel(
            controller.personas, controller.persona.persona.name, controller.conversation_settings, defaults,
            controller.check_settings, controller.model_name, model_names(settings) if controller.ready else [],
        )
        self.app.push_screen(panel, self._settings_chosen)

    def _settings_chosen(self, answer) -> None:
        if answer is None:
            return
        persona, values, model = answer
        try:
            self.controller.set_conversation_settings(values)
        except (UserError, ValueError) as exc:
            self.notify(f"cannot keep the settings: {exc}", severity="error", markup=False)
            return
        self.switch_persona(persona)
        self._show_persona()
        self._preview_context()
        self.notify("Settings kept: from the next reply on.")
        if model is not None and model != self.controller.model_name:
            from chatbot.tui.model_switch import switch_model

            switch_model(self, model)  # loads behind the screen, as the palette's Model: commands

    # -- conversations --------------------------------------------------------------------------

    def action_toggle_sidebar(self) -> None:
        sidebar = self.sidebar
        sidebar.display = not sidebar.display
        self.sidebar_chosen = True
        if sidebar.display:
            sidebar.reload()
            sidebar.query_one("#conversations").focus()
        else:
            self.composer.focus()

    def action_search(self) -> None:
        self.sidebar.display = True
        self.sidebar_chosen = True  # asked for: a narrow terminal's resize must not hide it again
        self.sidebar.query_one("#search", Input).focus()

    async def on_sidebar_open(self, event: Sidebar.Open) -> None:
        if type(event) is not Sidebar.Open:
            return
        await self.open_conversation(event.conversation_id)

    async def open_conversation(self, conversation_id: int) -> None:
        if self.busy:
            self.notify("A reply is streaming: Esc stops it first.")
            return
        try:
            self.controller.open(conversation_id)
        except NotFoundError as exc:
            self.notify(str(exc), severity="error")
            self.sidebar.reload()
            return
        self.editing = None
        self._show_edit_banner()
        self.status.context = None
        await self._render_view(keep_notice=True)
        self.sidebar.reload()
        self._preview_context()
        self.composer.focus()

    async def action_new_conversation(self) -> None:
        if self.busy:
            self.notify("A reply is streaming: Esc stops it first.")
            return
        self.controller.new()
        self.status.context = None
        await self._render_view(keep_notice=True)
        self.sidebar.reload()
        self.composer.focus()

    def on_sidebar_rename(self, event: Sidebar.Rename) -> None:
        self.rename(event.conversation_id)

    def on_sidebar_delete(self, event: Sidebar.Delete) -> None:
        self.delete(event.conversation_id)

    def action_rename(self) -> None:
        if self.controller.conversation_id is None:
            self.notify("Nothing saved yet to rename.")
            return
        self.rename(self.controller.conversation_id)

    def action_delete(self) -> None:
        if self.controller.conversation_id is None:
            self.notify("Nothing saved yet to delete.")
            return
        self.delete(self.controller.conversation_id)

    def rename(self, conversation_id: int) -> None:
        from chatbot.tui.widgets.dialogs import TextPrompt

        store = self.controller.store
        current = store.conversation(conversation_id).title or ""

        def done(title: str | None) -> None:
            if title:
                store.rename_conversation(conversation_id, title)
                self.sidebar.reload()
                if conversation_id == self.controller.conversation_id:
                    self.app.sub_title = title

        self.app.push_screen(TextPrompt("New title:", current), done)

    def delete(self, conversation_id: int) -> None:
        from chatbot.tui.widgets.dialogs import ConfirmDialog

        store = self.controller.store
        if conversation_id == self.controller.conversation_id and self.busy:
            self.notify("A reply is streaming: Esc stops it first.")
            return
        title = title_of(store.conversation(conversation_id).title, conversation_id)

        async def done(yes: bool | None) -> None:
            if not yes:
                return
            store.delete_conversation(conversation_id)
            self.notify(f"Deleted “{title}”.")
            if conversation_id == self.controller.conversation_id:
                await self.action_new_conversation()
            self.sidebar.reload()

        self.app.push_screen(ConfirmDialog(f"Delete “{title}” and all its messages? This cannot be undone."), done)

    # -- export, replay, help, theme ------------------------------------------------------------

    def action_export(self, fmt: str | None = None) -> None:
        cid = self.controller.conversation_id
        if cid is None:
            self.notify("Nothing saved yet to export.")
            return
        from chatbot.tui.widgets.dialogs import ExportDialog

        dialog = ExportDialog(f"conversation-{cid}", Path.cwd())
        self.app.push_screen(dialog, lambda answer: answer and self.export(*answer))

    def export(self, fmt: str, path: Path) -> Path | None:
        from chatbot.store import exchange

        store, cid = self.controller.store, self.controller.conversation_id
        doc = store.export_conversation(cid)
        if fmt == "json":
            text = exchange.to_json(doc)
        else:
            text = exchange.render_markdown(doc, store.active_branch(cid, self.controller.leaf_id))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # history is personal
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", severity="error")
            return None
        self.notify(f"Exported to {path}")
        return path

    def action_replay(self) -> None:
        if self.controller.conversation_id is None:
            self.notify("Open a saved conversation to replay it.")
            return
        from chatbot.tui.widgets.replay import ReplayScreen

        self.app.push_screen(ReplayScreen(self.controller.view(), self._label, self._color))

    def action_help(self) -> None:
        from chatbot.tui.widgets.dialogs import HelpScreen

        self.app.push_screen(HelpScreen(self.app.keymap, self.app.prefs.path))

    def action_pick_theme(self) -> None:
        self.app.action_change_theme()
