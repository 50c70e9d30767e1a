"""`--memory off|conversation|persona|all` on the commands that answer (ask, chat, history context)."""

from __future__ import annotations

from enum import Enum

import typer

from chatbot.conversation_settings import MEMORY_SCOPES as SCOPES  # not memory.recall: it imports the store (SQLAlchemy), ~0.4 s before the TUI paints

MemoryScope = Enum("MemoryScope", {scope: scope for scope in SCOPES}, type=str)

Memory = typer.Option(
    None,
    "--memory",
    help="Recall beyond the window: off, conversation (the default), persona (also its other "
    "conversations) or all (every conversation). Default from CHATBOT_MEMORY.",
    show_default=False,
)


def use_memory(state, scope: MemoryScope | str | None) -> None:
    """This command's memory scope, over the setting."""
    if scope is not None:
        value = scope.value if isinstance(scope, Enum) else scope
        state.settings = state.settings.model_copy(update={"memory": value})
