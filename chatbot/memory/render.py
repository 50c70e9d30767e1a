"""Rendering a conversation as the text a model was trained on.

Chat models get their own chat template. Models without one (GPT-2, CTRL) get a plain
`User:` / `Assistant:` transcript, stopped at the next `User:`; a control code goes first in the
sequence, as CTRL was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.personas.schema import Persona

PLAIN_STOPS = ("\nUser:",)


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's message and the reply to it (None for the turn being answered)."""

    user: str
    reply: str | None = None


def _with_control_code(persona: Persona, text: str) -> str:
    return f"{persona.control_code}\n\n{text}" if persona.control_code else text


class ChatTemplateRenderer:
    stops: tuple[str, ...] = ()

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def render(self, persona: Persona, turns: list[Turn]) -> str:
        messages: list[dict] = []
        if persona.control_code and persona.placement == "system":
            messages.append({"role": "system", "content": persona.control_code})
        for index, turn in enumerate(turns):
            latest = index == len(turns) - 1
            user = turn.user
            if latest and persona.placement == "user":
                user = _with_control_code(persona, user)
            messages.append({"role": "user", "content": user})
            if turn.reply is not None:
                messages.append({"role": "assistant", "content": turn.reply})
        open_turn = bool(turns) and turns[-1].reply is None
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)


class PlainRenderer:
    stops = PLAIN_STOPS

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def render(self, persona: Persona, turns: list[Turn]) -> str:
        parts = [f"{persona.control_code}\n\n"] if persona.control_code else []
        for turn in turns:
            parts.append(f"User: {turn.user}\nAssistant:")
            if turn.reply is not None:
                parts.append(f" {turn.reply}\n")
        return "".join(parts)


def renderer_for(tokenizer) -> ChatTemplateRenderer | PlainRenderer:
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplateRenderer(tokenizer)
    return PlainRenderer(tokenizer)
