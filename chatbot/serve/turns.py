"""A client's messages (the whole conversation, as OpenAI clients send it) -> what a session
takes: system text, earlier turns, and the latest user message."""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.errors import UsageError
from chatbot.memory.render import Turn


@dataclass
class ClientConversation:
    system: str
    history: list[Turn]
    message: str


def read_messages(messages) -> ClientConversation:
    """System and developer messages join into one system text; user and assistant messages pair
    into turns; the last message must be the user's."""
    if messages[-1].role != "user":
        raise UsageError("the last message must be the user's (role 'user')")
    system: list[str] = []
    history: list[Turn] = []
    pending: str | None = None  # a user message not answered yet
    for message in messages[:-1]:
        if message.role in ("system", "developer"):
            system.append(message.text)
        elif message.role == "user":
            if pending is not None:
                history.append(Turn(pending, ""))
            pending = message.text
        elif message.role == "assistant":
            history.append(Turn(pending or "", message.text))
            pending = None
        else:
            raise UsageError("tool messages are not supported: this server has no tools")
    if pending is not None:
        history.append(Turn(pending, ""))
    return ClientConversation("\n\n".join(s for s in system if s.strip()), history, messages[-1].text)
