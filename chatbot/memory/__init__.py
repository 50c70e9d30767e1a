"""Turning stored history + a persona into model input within a token budget."""

from chatbot.memory.context import Context, ContextBuilder, Turn

__all__ = ["Context", "ContextBuilder", "Turn"]
