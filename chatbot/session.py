"""One conversation in use: history in, persona applied, reply streamed out, every step stored.

Shared by `chatbot ask`, `chatbot chat --plain` and the TUI. The user's message is committed before
generation starts; the reply row is created as `streaming`, flushed every ~0.5 s, and finished as
`complete`, `interrupted` or `error`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatbot.config import Settings
from chatbot.engine.decoding import Generation, GenerationStats, Prefix, TextStream
from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UsageError, UserError
from chatbot.memory.context import Context, ContextBuilder
from chatbot.memory.recall import sources_for
from chatbot.memory.render import Turn
from chatbot.personas.registry import InstalledPersona
from chatbot.runtime import Runtime
from chatbot.text import check_text

FLUSH_EVERY_S = 0.5


def turns_from_messages(messages) -> list[Turn]:
    """Group a stored branch (root to leaf) into turns of (user message, reply), each reply with
    where its prompt's window started (`dropped_turns` in its stats)."""
    turns: list[Turn] = []
    for message in messages:
        if message.role == "user":
            turns.append(Turn(message.content, None, user_id=message.id))
        elif message.role == "assistant" and turns:
            start = message.stats.get("dropped_turns")
            window_start = start if isinstance(start, int) and not isinstance(start, bool) else None
            turns[-1] = Turn(turns[-1].user, message.content, window_start, turns[-1].user_id, message.id)
        elif message.role == "assistant":  # the persona's opening message (a card's first_mes)
            turns.append(Turn("", message.content))
    # A user message whose reply never started (a crash) still counts, with an empty reply (which
    # the model does not see, as any empty reply).
    return [t if t.reply is not None else Turn(t.user, "", user_id=t.user_id) for t in turns]


def prompt_budget(budget: int, context_length: int, max_new_tokens: int) -> tuple[int, str | None]:
    """The prompt's share of the model's positions: the configured budget, but never so much that
    the prompt and `max_new_tokens` of reply overflow the model's context (a note says so)."""
    room = context_length - max_new_tokens
    if room < 1:
        raise UsageError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of {context_length} tokens"
        )
    if budget <= room:
        return budget, None
    return room, (
        f"the context budget of {budget} tokens is more than the model's context of {context_length} leaves "
        f"beside {max_new_tokens} new tokens: using {room}"
    )


def resolve_sampling(
    settings: Settings, persona: InstalledPersona, conversation: dict | None = None, **overrides
) -> SamplingParams:
    """Global settings, then the persona's defaults, then the conversation's own (its stored
    settings: the TUI's settings panel), then explicit overrides (None = unset).
    Needs no model, so bad values are refused before one loads."""
    values = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "top_k": settings.top_k,
        "repetition_penalty": settings.repetition_penalty,
        "max_new_tokens": settings.max_new_tokens,
    }
    values.update(persona.persona.generation.model_dump(exclude_none=True))
    values.update({k: v for k, v in (conversation or {}).items() if k in values and v is not None})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams(**values)


@dataclass(kw_only=True)
class Reply(TextStream):
    """A reply in progress: iterate for text deltas."""

    generation: Generation
    context: Context
    persona: InstalledPersona
    conversation_id: int | None = None
    message_id: int | None = None
    user_id: int | None = None  # the question's stored message
    status: str = "streaming"
    error: str | None = None
    # Set when the store refused a write during the reply (full disk, read-only database): the
    # text was still streamed, but not (all of it) saved. One line, for the user.
    save_error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def stats(self) -> GenerationStats:
        return self.generation.stats


class ChatSession:
    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        persona: InstalledPersona,
        store=None,
        conversation_id: int | None = None,
    ):
        self.runtime = runtime
        self.settings = settings
        self.persona = persona
        self.store = store
        self.conversation_id = conversation_id
        self.builder = ContextBuilder(runtime.tokenizer, settings.context_budget)
        self.history: list[Turn] = []
        self.leaf_id: int | None = None
        self._branching = False  # the next send is an edit: a sibling of a stored message
        self.opening = 0  # which of the persona's opening messages a new conversation follows (the TUI picks)
        # Interactive sessions (chat, the TUI) prefill the next turn's stable prefix once a reply
        # is finished, so a memory block costs only itself at the next send (memory/warm.py).
        self.warm_between_turns = False
        self.warmer = None
        if store is not None and conversation_id is not None:
            self.load_branch()

    # -- conversation state -------------------------------------------------------------------

    def load_branch(self, leaf_id: int | None = None) -> None:
        branch = self.store.active_branch(self.conversation_id, leaf_id)
        self.history = turns_from_messages(branch)
        self.leaf_id = branch[-1].id if branch else None
        self._branching = False

    def start_new(self) -> None:
        """The next send starts a new conversation."""
        self.conversation_id, self.history, self.leaf_id, self._branching = None, [], None, False

    def switch_persona(self, persona: InstalledPersona) -> None:
        self.persona = persona
        if self.store is not None and self.conversation_id is not None:
            self.store.record_persona_switch(self.conversation_id, self._persona_version_id(), self.leaf_id)

    def sampling_params(self, **overrides) -> SamplingParams:
        return resolve_sampling(self.settings, self.persona, **overrides)

    def context_for(self, message: str, prefix: Prefix | None = None, params: SamplingParams | None = None) -> Context:
        """The model input for answering `message` with `params` (default: this session's);
        `prefix` is the persona's soft prompt if the caller already has it."""
        prefix = prefix or self.prefix()
        reserved = 0 if prefix is None else int(prefix.embeddings.shape[0])
        params = params or self.sampling_params()
        budget, note = prompt_budget(
            self.settings.context_budget, self.runtime.loaded.info.context_length, params.max_new_tokens
        )
        context = self.builder.build(
            self.persona.persona, self.history, message, reserved=reserved, budget=budget,
            memory=self.memory_sources(), memory_share=self.settings.memory_share,
            conversation_id=self.conversation_id,
        )
        if note:
            context.warnings.insert(0, note)
        return context

    def memory_sources(self) -> list:
        """Where this turn's memory block comes from (memory/passages.py): recall in the scope of
        the `memory` setting."""
        from chatbot.personas.lorebook import lorebook_sources  # the persona's own world info first

        return lorebook_sources(self.persona, self.runtime.tokenizer) + sources_for(
            self.store, self.settings.memory, self.persona.persona.name, summary=self.settings.memory_summary
        )

    def prefix(self) -> Prefix | None:
        from chatbot.personas.soft_prompt import prefix_for

        return prefix_for(self.persona, self.runtime.loaded)

    # -- one turn -------------------------------------------------------------------------------

    def send(self, message: str, params: SamplingParams, cancel: threading.Event | None = None) -> Reply:
        """Store `message` as the next user turn and answer it."""
        if not message.strip():
            raise UsageError("the message is empty: nothing to send")
        check_text(message)
        return self._answer(message, None, params, cancel)

    def regenerate(self, user_message_id: int, params: SamplingParams, cancel: threading.Event | None = None) -> Reply:
        """A new reply to a stored user message, beside the replies it has (a sibling)."""
        branch = self.store.active_branch(self.conversation_id, user_message_id)
        self.history = turns_from_messages(branch[:-1])
        self.leaf_id = user_message_id
        self._branching = False
        return self._answer(branch[-1].content, user_message_id, params, cancel)

    def branch_from(self, leaf_id: int) -> None:
        """Make the next `send` follow stored message `leaf_id` as a new branch, beside any
        replies it has (the memory benchmark asks each question from the same point)."""
        self.load_branch(leaf_id)
        self._branching = True

    def branch_before(self, user_message_id: int) -> None:
        """Make the next `send` a sibling of a stored user message (edit-and-resend)."""
        branch = self.store.active_branch(self.conversation_id, user_message_id)
        self.history = turns_from_messages(branch[:-1])
        self.leaf_id = branch[-1].parent_id
        self._branching = True

    def _answer(self, message: str, user_id: int | None, params: SamplingParams, cancel) -> Reply:
        openings = self.persona.persona.first_messages
        if self.conversation_id is None and not self.history and openings:
            self.history = [Turn("", openings[self._opening_index()])]  # a new conversation opens with the persona's first message
        prefix = self.prefix()
        context = self.context_for(message, prefix, params)
        params = params.model_copy(update={"stop": tuple(params.stop) + context.stops})
        if params.seed is None and not params.greedy:
            params = params.model_copy(update={"seed": int(time.time_ns() % (2**31))})
        generation = self._generate(context, params, prefix, cancel)
        reply = Reply(_deltas=iter(()), generation=generation, context=context, persona=self.persona)
        reply.warnings.extend(context.warnings)
        if user_id is None:
            # Stored in full even when the model sees it cut: nothing typed is lost.
            user_id, reply.message_id = self._store_turn(message, params)
        elif self.store is not None:
            try:
                reply.message_id = self.store.start_reply(
                    self.conversation_id,
                    user_id,
                    self._persona_version_id(),
                    params.model_dump(mode="json"),
                    params.seed,
                    self.runtime.model_name,
                )
            except UserError:
                # The question is the leaf now, with no new reply: remember it as reloading would.
                self.history.append(Turn(message, ""))
                raise
        reply.conversation_id = self.conversation_id
        reply.user_id = user_id
        self._record_recalled(reply)
        reply._deltas = self._stream(reply, message, user_id, cancel)
        return reply

    def _generate(self, context: Context, params: SamplingParams, prefix: Prefix | None, cancel) -> Generation:
        engine = self.runtime.engine
        if prefix is None and getattr(engine, "takes_messages", False):  # the openai engine: messages, not ids
            from chatbot.engine.openai_engine import messages_for

            messages = messages_for(self.persona.persona, self.history, context)
            return engine.generate_messages(messages, context.prompt_ids, params, cancel=cancel)
        return engine.generate(context.prompt_ids, params, prefix=prefix, cancel=cancel)

    def _record_recalled(self, reply: Reply) -> None:
        """Each reply keeps what was recalled for it, so `history context --reply` shows what the
        model saw."""
        if self.store is None or reply.message_id is None or not self.memory_sources():
            return  # memory off: nothing stored (None), so replaying it adds no block either
        try:
            self.store.record_recalled(reply.message_id, [p.stored() for p in reply.context.recalled])
        except UserError as exc:  # a full disk: the reply still streams, and says so at the end
            reply.save_error = str(exc)

    def _stream(self, reply: Reply, message: str, user_id: int | None, cancel) -> Iterator[str]:
        last_flush = time.monotonic()
        try:
            for delta in reply.generation:
                yield delta
                due = time.monotonic() - last_flush >= FLUSH_EVERY_S
                if self.store is not None and reply.save_error is None and due:
                    try:
                        self.store.update_reply(reply.message_id, reply.generation.text)
                    except UserError as exc:  # full disk, read-only: keep streaming, say so at the end
                        reply.save_error = str(exc)
                    last_flush = time.monotonic()
        except GeneratorExit:
            # The consumer stopped reading (Ctrl-C in `ask`, a closed UI): keep what we have.
            reply.status = "interrupted"
            self._finish(reply, message, user_id)
            raise
        except Exception as exc:
            reply.status, reply.error = "error", f"{type(exc).__name__}: {exc}"
            self._finish(reply, message, user_id)
            raise
        reply.status = "interrupted" if reply.stats.stop_reason == "cancelled" else "complete"
        self._finish(reply, message, user_id)

    def _finish(self, reply: Reply, message: str, user_id: int | None) -> None:
        text = reply.generation.text
        window_start = reply.context.dropped_turns
        self.history.append(Turn(message, text, window_start, user_id, reply.message_id))
        if self.store is not None and reply.message_id is not None:
            # The window is stored with the reply: the branch, not this process, remembers it.
            stats = {**reply.stats.as_dict(), "dropped_turns": window_start}
            try:
                self.store.finish_reply(reply.message_id, text, reply.status, stats)
                reply.save_error = None  # a flush failed, but the whole reply is stored now
            except UserError as exc:  # the reply stays with the reader; what was stored before is intact
                reply.save_error = reply.save_error or str(exc)
            self.leaf_id = reply.message_id
        from chatbot.memory.warm import warm_next_turn

        self.warmer = warm_next_turn(self)

    def settle(self) -> None:
        """Wait for the background prefill of the next turn's prefix, if one is running."""
        if self.warmer is not None:
            self.warmer.wait()

    def _store_turn(self, message: str, params: SamplingParams) -> tuple[int | None, int | None]:
        """The user's message and its `streaming` reply, in one transaction. Refused (one line,
        nothing stored) if another process added to this branch since it was loaded."""
        if self.store is None:
            return None, None
        if self.conversation_id is None:
            self.conversation_id = self.store.new_conversation(None, self.runtime.model_name)
            openings = self.persona.persona.first_messages
            if openings and self.leaf_id is None:  # the first, then the alternates as its siblings
                ids = self.store.add_openings(self.conversation_id, list(openings), self._persona_version_id(),
                                              self.runtime.model_name)
                self.leaf_id = ids[self._opening_index()]
        user_id, reply_id = self.store.add_turn(
            self.conversation_id,
            message,
            self.leaf_id,
            self._persona_version_id(),
            params.model_dump(mode="json"),
            params.seed,
            self.runtime.model_name,
            branch=self._branching,
        )
        self._branching = False
        self.leaf_id = user_id
        return user_id, reply_id

    def _opening_index(self) -> int:
        return min(max(self.opening, 0), len(self.persona.persona.first_messages) - 1)

    def _persona_version_id(self) -> int | None:
        if self.store is None:
            return None
        from chatbot.personas.soft_prompt import version_definition

        persona = self.persona.persona
        return self.store.persona_version(persona.name, persona.kind, version_definition(self.persona))
