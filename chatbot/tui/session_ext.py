"""`ChatSession` plus what the UI needs on a message tree: answer a stored user message again
(regenerate: a sibling reply) and branch before a user message (edit-and-resend).

Imported only once the model is loading: `chatbot.session` pulls in torch.
"""

from __future__ import annotations

import threading

from chatbot.engine.sampling import SamplingParams
from chatbot.session import ChatSession, Reply, turns_from_messages


class TuiSession(ChatSession):
    _reuse_user_id: int | None = None

    def regenerate(self, user_message_id: int, params: SamplingParams, cancel: threading.Event | None = None) -> Reply:
        """A new reply to the stored user message `user_message_id`, beside the ones it has."""
        branch = self.store.active_branch(self.conversation_id, user_message_id)
        user = branch[-1]
        self.history = turns_from_messages(branch[:-1])
        self.leaf_id = user.id
        self._reuse_user_id = user.id
        try:
            return self.send(user.content, params, cancel)
        finally:
            self._reuse_user_id = None

    def branch_before(self, user_message_id: int) -> None:
        """Make the next `send` a sibling of `user_message_id` (a new branch from its parent)."""
        branch = self.store.active_branch(self.conversation_id, user_message_id)
        self.history = turns_from_messages(branch[:-1])
        self.leaf_id = branch[-1].parent_id

    def _store_user_message(self, message: str) -> int | None:
        if self._reuse_user_id is not None:
            return self._reuse_user_id
        return super()._store_user_message(message)
