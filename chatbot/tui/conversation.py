"""What the UI does with a conversation, without any widget: open, send, regenerate, edit,
move between sibling messages, switch persona. Blocking calls (`send`, `regenerate`, `edit`)
run in a worker thread; everything else is quick store reads and writes.

Nothing here imports torch: the session is built only once the model has loaded.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatbot.errors import UserError

if TYPE_CHECKING:  # both import pydantic (~0.25 s of CPU): not before the UI's first frame
    from chatbot.config import Settings
    from chatbot.personas.registry import InstalledPersona


@dataclass
class BranchView:
    """The open branch as the log shows it: messages and persona switches, root to leaf."""

    conversation_id: int | None = None
    title: str | None = None
    items: list[Any] = field(default_factory=list)  # MessageRecord | replay.Switch
    siblings: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (position, count)


class ChatController:
    def __init__(self, settings: Settings, personas: dict[str, InstalledPersona], persona: InstalledPersona):
        self.settings = settings
        self.personas = personas
        self.persona = persona
        self.store = None
        self.runtime = None
        self.session = None
        self.conversation_id: int | None = None
        self.leaf_id: int | None = None
        self._persona_pending = False
        self.opening = 0  # a new conversation: which of a card's opening messages is shown (and kept)
        self.lock = threading.Lock()  # one reply at a time
        # The open conversation's own settings (the settings panel); a new conversation's are
        # stored with it once its first turn is.
        self.conversation_settings: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def model_name(self) -> str | None:
        return None if self.runtime is None else self.runtime.model_name

    def attach_store(self, store) -> None:
        self.store = store

    def attach_runtime(self, runtime) -> None:
        from chatbot.session import ChatSession

        self.runtime = runtime
        session = ChatSession(runtime, self.settings, self.persona, self.store, None)
        session.warm_between_turns = True  # the next turn's prefix is prefilled while the user types
        self.session = session
        self._sync_session()
        if self._persona_pending:
            self._persona_pending = False
            session.switch_persona(self.persona)

    def _sync_session(self) -> None:
        session = self.session
        if session is None:
            return
        from chatbot import conversation_settings

        session.settings = conversation_settings.session_settings(self.settings, self.conversation_settings)
        if self.conversation_id is None:
            session.start_new()
        else:
            session.conversation_id = self.conversation_id
            session.load_branch(self.leaf_id)

    # -- which conversation and branch ----------------------------------------------------------

    def open(self, conversation_id: int, leaf_id: int | None = None) -> None:
        branch = self.store.active_branch(conversation_id, leaf_id)  # NotFoundError if unknown
        if conversation_id != self.conversation_id:
            self.conversation_settings = self.store.conversation_settings(conversation_id)
        self.conversation_id = conversation_id
        self.leaf_id = branch[-1].id if branch else None
        self._take_persona_of(branch)
        self._sync_session()

    def _take_persona_of(self, branch) -> None:
        """Go on with the persona that wrote the branch's last reply (no switch is recorded)."""
        for message in reversed(branch):
            if message.role == "assistant" and message.persona is not None:
                installed = self.personas.get(message.persona.name)
                if installed is not None:
                    self.persona = installed
                    if self.session is not None:
                        self.session.persona = installed
                return

    def new(self) -> None:
        self.conversation_id, self.leaf_id = None, None
        self.opening = 0
        self.conversation_settings = {}
        self._sync_session()

    def view(self) -> BranchView:
        if self.store is None or self.conversation_id is None:
            return BranchView()
        from chatbot.store.replay import timeline

        record = self.store.conversation(self.conversation_id)
        branch = self.store.active_branch(self.conversation_id, self.leaf_id)
        groups: dict[tuple[int | None, str], list[int]] = {}
        for m in record.messages:
            groups.setdefault((m.parent_id, m.role), []).append(m.id)
        siblings = {}
        for m in branch:
            ids = groups.get((m.parent_id, m.role), [m.id])
            siblings[m.id] = (ids.index(m.id) + 1, len(ids))
        return BranchView(record.id, record.title, timeline(record, branch), siblings)

    def sibling(self, message_id: int, step: int) -> bool:
        """Show the branch through the sibling `step` away from `message_id` (its latest leaf)."""
        record = self.store.conversation(self.conversation_id)
        by_id = {m.id: m for m in record.messages}
        me = by_id[message_id]
        same = [m.id for m in record.messages if m.parent_id == me.parent_id and m.role == me.role]
        index = same.index(message_id) + step
        if not 0 <= index < len(same):
            return False
        children: dict[int, list[int]] = {}
        for m in record.messages:
            if m.parent_id is not None:
                children.setdefault(m.parent_id, []).append(m.id)
        subtree, todo = [], [same[index]]
        while todo:
            node = todo.pop()
            subtree.append(node)
            todo.extend(children.get(node, []))
        leaves = [n for n in subtree if n not in children]
        self.open(self.conversation_id, max(leaves))
        return True

    # -- turns (blocking: call from a worker thread) --------------------------------------------

    def params(self):
        from chatbot.session import resolve_sampling

        session = self.session
        return resolve_sampling(session.settings, session.persona, conversation=self.conversation_settings)

    def send(self, text: str, cancel: threading.Event):
        self.session.opening = self.opening  # a new conversation keeps the opening shown
        return self.session.send(text, self.params(), cancel)

    def regenerate(self, user_message_id: int, cancel: threading.Event):
        return self.session.regenerate(user_message_id, self.params(), cancel)

    def edit(self, user_message_id: int, text: str, cancel: threading.Event):
        self.session.branch_before(user_message_id)
        return self.session.send(text, self.params(), cancel)

    def finished(self, reply) -> None:
        """After a reply ends: follow the session to where it stored the turn."""
        started = self.conversation_id is None and self.session.conversation_id is not None
        self.conversation_id = self.session.conversation_id
        self.leaf_id = self.session.leaf_id
        if started and self.conversation_settings:
            with contextlib.suppress(UserError):  # the store refused the turn's writes too: said already
                self.store.set_conversation_settings(self.conversation_id, self.conversation_settings)

    # -- the conversation's own settings ----------------------------------------------------------

    def default_params(self):
        """The sampling the persona and the global settings give, before the conversation's own."""
        from chatbot.session import resolve_sampling

        return resolve_sampling(self.settings, self.persona)

    def check_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """ValueError (one line) unless every value is allowed."""
        from chatbot import conversation_settings

        return conversation_settings.check(values, self.settings, self.persona)

    def set_conversation_settings(self, values: dict[str, Any]) -> None:
        """Keep them with the conversation (a new one: once it is stored); from the next reply on."""
        values = self.check_settings(values)
        if self.conversation_id is not None:
            self.store.set_conversation_settings(self.conversation_id, values)
        self.conversation_settings = dict(values)
        if self.session is not None:
            from chatbot import conversation_settings

            self.session.settings = conversation_settings.session_settings(self.settings, values)

    # -- personas -------------------------------------------------------------------------------

    def switch_persona(self, name: str) -> InstalledPersona:
        installed = self.personas[name]
        self.persona = installed
        self.opening = 0
        if self.session is not None:
            self.session.switch_persona(installed)
        else:
            self._persona_pending = self.conversation_id is not None
        return installed

    def persona_color(self, name: str | None) -> str:
        installed = self.personas.get(name or "")
        return installed.persona.color if installed is not None else ""

    def persona_title(self, name: str | None) -> str:
        installed = self.personas.get(name or "")
        return installed.persona.title if installed is not None else (name or "assistant")
