"""Training and evaluation data: JSONL conversations, turned into (prompt ids, reply ids) pairs
rendered exactly as inference renders them (`memory.ContextBuilder`).

One conversation per line: `{"messages": [{"role": "user", "content": ...}, {"role": "assistant",
"content": ...}, ...]}`, user and assistant alternating, starting with the user. Every assistant
message is one training reply, with the conversation before it as its history, unless it says
`"target": false` (history only; then it may be empty). A line may open with such a reply (a
persona's opening message, before any question).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import NotFoundError, UserError
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.schema import Persona

MAX_REPORTED = 5


@dataclass(frozen=True)
class Example:
    history: tuple[Turn, ...]
    message: str
    reply: str
    line: int  # the JSONL line (conversation) it came from
    # What memory put in front of the message when it was answered (`--from-history`: the stored
    # reply's recalled passages), rebuilt into the prompt as at inference.
    memory: tuple = ()


@dataclass(frozen=True)
class Encoded:
    prompt_ids: list[int]
    reply_ids: list[int]  # the reply's tokens and the end-of-turn token: the loss is on these only


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_conversation(record) -> list[dict]:
    if not isinstance(record, dict):
        raise ValueError("expected an object with a 'messages' list")
    unknown = set(record) - {"messages", "meta"}
    if unknown:
        raise ValueError(f"unknown field '{sorted(unknown)[0]}'")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    # An opening message (a persona's first message, before any question) comes first, as context.
    opening = bool(messages) and isinstance(messages[0], dict) and messages[0].get("role") == "assistant"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message) <= {"role", "content", "target"}:
            raise ValueError(f"message {index + 1}: expected 'role' and 'content' (and for a reply, 'target')")
        context_only = message.get("target", True) is False
        if "target" in message and (message["role"] != "assistant" or not isinstance(message["target"], bool)):
            raise ValueError(f"message {index + 1}: 'target' is true or false, on a reply")
        if not isinstance(message["content"], str) or not (message["content"].strip() or context_only):
            raise ValueError(f"message {index + 1}: 'content' must be a non-empty string")
        if _SURROGATE.search(message["content"]):
            raise ValueError(f"message {index + 1}: 'content' holds a lone surrogate (not valid text)")
        if opening and index == 0:
            if not context_only:
                raise ValueError("message 1: an opening reply before the first question needs \"target\": false")
            continue
        expected = "user" if (index - opening) % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(f"message {index + 1}: role must be '{expected}' (user and assistant alternate), got {message['role']!r}")
    if messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's reply")
    return messages


def read_jsonl(path: Path) -> list[tuple[int, list[dict]]]:
    """All conversations with their line numbers; any bad line stops everything with one message
    listing the bad line numbers (and the first few reasons)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"no such data file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from exc
    conversations: list[tuple[int, list[dict]]] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            conversations.append((number, _check_conversation(json.loads(line))))
        except json.JSONDecodeError as exc:
            bad.append((number, f"not JSON ({exc.msg})"))
        except RecursionError:
            bad.append((number, "nested too deeply"))
        except ValueError as exc:
            bad.append((number, " ".join(str(exc).split())))  # one line, whatever the field names hold
    if bad:
        lines = ", ".join(str(n) for n, _ in bad)
        reasons = "; ".join(f"line {n}: {why}" for n, why in bad[:MAX_REPORTED])
        more = f"; and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise UserError(f"{path}: {len(bad)} bad line(s) ({lines}), nothing trained: {reasons}{more}")
    if not conversations:
        raise UserError(f"{path}: no conversations in the file")
    return conversations


def examples_of(conversations: list[tuple[int, list[dict]]]) -> list[Example]:
    """One example per reply, with the conversation before it as its history; a reply marked
    `"target": false` is history only (a disliked or unrated reply around a liked one)."""
    examples: list[Example] = []
    for line, messages in conversations:
        turns: list[Turn] = []
        if messages[0]["role"] == "assistant":  # an opening message: a reply to no question
            turns.append(Turn("", messages[0]["content"]))
            messages = messages[1:]
        for i in range(0, len(messages), 2):
            user, reply = messages[i]["content"], messages[i + 1]
            if reply.get("target", True):
                examples.append(Example(tuple(turns), user, reply["content"], line))
            turns.append(Turn(user, reply["content"]))
    return examples


def load_examples(path: Path) -> list[Example]:
    return examples_of(read_jsonl(path))


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_lines(lines: list[int], heldout: float, seed: int) -> tuple[list[int], list[int]]:
    """Split conversations (by line, so no conversation is on both sides) into train / held-out."""
    order = sorted(set(lines))
    random.Random(seed).shuffle(order)
    if len(order) < 2 or heldout <= 0:
        return sorted(order), []
    n_held = min(max(1, round(len(order) * heldout)), len(order) - 1)
    return sorted(order[n_held:]), sorted(order[:n_held])


def end_of_turn_ids(tokenizer, builder: ContextBuilder) -> list[int]:
    """The tokens that close a reply as the chat template writes it (`<|im_end|>` for ChatML),
    found by rendering a one-turn conversation: what follows the reply, up to its first end token."""
    persona = Persona(name="probe")
    marker = "Hi."
    prompt = builder.renderer.render(persona, [Turn("x")])
    full = builder.renderer.render(persona, [Turn("x", marker)])
    if not full.startswith(prompt + marker):
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    tail = tokenizer(full[len(prompt) + len(marker):], add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []))
    for i, token in enumerate(tail):
        if token in special:
            return tail[: i + 1]
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


class Encoder:
    """Examples -> token ids under a persona, as `ChatSession` would build the prompt."""

    def __init__(self, tokenizer, budget: int = 2048):
        self.tokenizer = tokenizer
        self.budget = budget
        # One builder for every example: it keeps no window between builds, and its encoders
        # and piece cache are worth keeping.
        self.builder = ContextBuilder(tokenizer, budget)
        self.end_ids = end_of_turn_ids(tokenizer, self.builder)

    def encode(self, persona: Persona, example: Example, reserved: int = 0) -> Encoded:
        memory = [_Passages(example.memory)] if example.memory else ()
        context = self.builder.build(persona, list(example.history), example.message, reserved=reserved, memory=memory)
        reply = self.builder.encode_content(example.reply)  # a reply is content: never special tokens
        return Encoded(list(context.prompt_ids), list(reply) + self.end_ids)


class _Passages:
    """Fixed passages as a memory source (memory/passages.py)."""

    def __init__(self, passages):
        self._passages = list(passages)

    def passages(self, request) -> list:
        return self._passages
