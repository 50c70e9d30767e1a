"""Rendering a conversation as the text a model was trained on.

Chat models get their own chat template. Models without one (GPT-2, CTRL) get a plain
`User:` / `Assistant:` transcript, stopped at the next `User:`; a control code goes first in the
sequence, as CTRL was trained.

A render is a list of `Piece`s: the template's own text (its markers may be special tokens) and
content (messages, replies, persona text), which is encoded as plain text however much it looks
like a marker. Typed `<|im_end|>` must never close a turn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chatbot.personas.schema import Persona

PLAIN_STOPS = ("\nUser:",)

# Stand-ins for content while the template renders: private-use characters no template writes.
_SLOT = "\ue000{}\ue001"
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class Turn:
    """One exchange: the user's message and the reply to it (None for the turn being answered).

    `window_start` is how many of the branch's oldest turns were left out of the prompt that
    produced this reply (None: not known): the context window belongs to the conversation."""

    user: str
    reply: str | None = None
    window_start: int | None = None
    # The stored messages (None: not stored); what memory recall looks for among dropped turns.
    user_id: int | None = field(default=None, compare=False)
    reply_id: int | None = field(default=None, compare=False)

    @property
    def answered(self) -> bool:
        """An empty reply (interrupted before its first token) is not a turn the model should see."""
        return bool(self.reply and self.reply.strip())


@dataclass(frozen=True)
class Piece:
    text: str
    content: bool  # True: typed or stored text, never special tokens


def text_of(pieces: list[Piece]) -> str:
    return "".join(piece.text for piece in pieces)


def _with_post_history(persona: Persona, text: str) -> str:
    """A card's post-history instructions: the last word before the latest message."""
    return f"{persona.post_history}\n\n{text}" if persona.post_history else text


def is_opening(turn: Turn, index: int) -> bool:
    """The persona's opening message (a card's first_mes): a reply with no question before it."""
    return index == 0 and not turn.user and turn.answered


def _with_control_code(persona: Persona, text: str) -> str:
    return f"{persona.control_code}\n\n{text}" if persona.control_code else text


class _Renderer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def render(self, persona: Persona, turns: list[Turn]) -> str:
        return text_of(self.pieces(persona, turns))

    def pieces(self, persona: Persona, turns: list[Turn]) -> list[Piece]:
        raise NotImplementedError


def chat_messages(persona: Persona, turns: list[Turn], wrap=lambda text: text) -> list[dict]:
    """The chat messages a conversation renders to (the persona's control code placed), each
    content passed through `wrap`. The openai engine sends these as they are."""
    messages: list[dict] = []
    if persona.control_code and persona.placement == "system":
        messages.append({"role": "system", "content": wrap(persona.control_code)})
    for index, turn in enumerate(turns):
        latest = index == len(turns) - 1
        user = _with_post_history(persona, turn.user) if latest else turn.user
        user = _with_control_code(persona, user) if latest and persona.placement == "user" else user
        if not is_opening(turn, index):
            messages.append({"role": "user", "content": wrap(user)})
        if turn.answered:
            messages.append({"role": "assistant", "content": wrap(turn.reply)})
    return messages


class ChatTemplateRenderer(_Renderer):
    stops: tuple[str, ...] = ()

    def pieces(self, persona: Persona, turns: list[Turn]) -> list[Piece]:
        contents: list[str] = []

        def slot(text: str) -> str:
            contents.append(text)
            return _SLOT.format(len(contents) - 1)

        messages = chat_messages(persona, turns, slot)
        open_turn = bool(turns) and turns[-1].reply is None
        return self._pieces(self._apply(messages, open_turn), contents)

    def _apply(self, messages: list[dict], open_turn: bool) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)
        except TemplateError:
            # A template that insists on alternating roles: an unanswered message joins the next.
            merged = _merge_consecutive_users(messages)
            if merged == messages:
                raise
            return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=open_turn)

    @staticmethod
    def _pieces(rendered: str, contents: list[str]) -> list[Piece]:
        parts = _SLOT_RE.split(rendered)  # template, slot index, template, slot index, ...
        slots = [int(i) for i in parts[1::2]]
        if slots != list(range(len(contents))):
            raise ValueError("the chat template does not write each message's content once, in order")
        pieces: list[Piece] = []
        for index, part in enumerate(parts):
            text = contents[int(part)] if index % 2 else part
            if text:
                pieces.append(Piece(text, content=bool(index % 2)))
        return pieces


def _merge_consecutive_users(messages: list[dict]) -> list[dict]:
    merged: list[dict] = []
    for message in messages:
        if merged and message["role"] == "user" and merged[-1]["role"] == "user":
            merged[-1] = {"role": "user", "content": f"{merged[-1]['content']}\n\n{message['content']}"}
        else:
            merged.append(message)
    return merged


class PlainRenderer(_Renderer):
    stops = PLAIN_STOPS

    def pieces(self, persona: Persona, turns: list[Turn]) -> list[Piece]:
        # Content keeps its leading space (" hello" is one word to a BPE); markers stay apart.
        pieces = [Piece(persona.control_code, True), Piece("\n\n", False)] if persona.control_code else []
        for index, turn in enumerate(turns):
            if is_opening(turn, index):
                pieces += [Piece("Assistant:", False), Piece(f" {turn.reply}", True), Piece("\n", False)]
                continue
            user = _with_post_history(persona, turn.user) if index == len(turns) - 1 else turn.user
            pieces += [Piece("User:", False), Piece(f" {user}", True), Piece("\nAssistant:", False)]
            if turn.answered:
                pieces += [Piece(f" {turn.reply}", True), Piece("\n", False)]
            elif turn.reply is not None:  # unanswered: the next message follows it directly
                pieces[-1] = Piece("\n", False)
        return pieces


def renderer_for(tokenizer) -> ChatTemplateRenderer | PlainRenderer:
    if getattr(tokenizer, "chat_template", None):
        return ChatTemplateRenderer(tokenizer)
    return PlainRenderer(tokenizer)
