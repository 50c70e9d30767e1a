"""A fast stand-in for the model, for the TUI tests: the engine interface (`generate` ->
`Generation` of text deltas, honouring `cancel`), a character-level tokenizer without a chat
template (so memory renders a plain `User:`/`Assistant:` transcript), canned replies."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from chatbot.config import Settings
from chatbot.engine.decoding import Generation, GenerationStats
from chatbot.personas.registry import scan
from chatbot.tui.app import ChatApp
from chatbot.tui.conversation import ChatController
from chatbot.tui.preferences import Preferences


class FakeTokenizer:
    chat_template = None

    def __call__(self, text, add_special_tokens=False, split_special_tokens=False):  # no special tokens
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def default_reply(prompt: str) -> str:
    """Echo the latest user message; remember a secret word said earlier in the prompt."""
    latest = prompt.rsplit("User: ", 1)[-1].rsplit("\nAssistant:", 1)[0]
    secret = re.search(r"secret word is (\w+)", prompt)
    if secret and "secret word?" in latest:
        return f"The secret word is {secret.group(1)}."
    return f"You said: {latest}"


@dataclass
class FakeEngine:
    reply_for: object = default_reply
    delay_s: float = 0.0  # per token
    name: str = "fake"
    prompts: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    calls: int = 0
    fixed_stats: bool = False  # report TTFT 12 ms and 42 tok/s (stable snapshots)
    # Set `gate` to hold the reply after `gate_after` tokens until it is set: a test can then see a
    # half-streamed reply however slow the machine is.
    gate: threading.Event | None = None
    gate_after: int = 0

    def generate(self, prompt_ids, params, prefix=None, cancel=None, reuse=True):
        stats = GenerationStats(prompt_tokens=len(prompt_ids))
        generation = Generation(_deltas=iter(()), stats=stats)
        generation._deltas = self._decode(generation, prompt_ids, cancel)
        return generation

    def _decode(self, generation, prompt_ids, cancel):
        stats = generation.stats
        prompt = "".join(chr(i) for i in prompt_ids)
        self.prompts.append(prompt)
        self.calls += 1
        text = self.reply_for(prompt)
        tokens = re.findall(r"\s*\S+", text)
        started = time.perf_counter()
        self.started.set()
        stats.stop_reason = "eos"
        for i, token in enumerate(tokens):
            if cancel is not None and cancel.is_set():
                stats.stop_reason = "cancelled"
                break
            if self.delay_s:
                time.sleep(self.delay_s)
            if i == 0:
                stats.ttft_ms = (time.perf_counter() - started) * 1000
            stats.new_tokens += 1
            yield token
            if self.gate is not None and i + 1 == self.gate_after:
                self.gate.wait(30)
        elapsed = time.perf_counter() - started
        stats.tokens_per_s = stats.new_tokens / elapsed if elapsed > 0 else 0.0
        if self.fixed_stats:
            stats.ttft_ms, stats.tokens_per_s = 12.0, 42.0


class FakeRuntime:
    def __init__(self, engine: FakeEngine | None = None):
        self.engine = engine or FakeEngine()
        self.tokenizer = FakeTokenizer()
        self.loaded = SimpleNamespace(tokenizer=self.tokenizer, info=SimpleNamespace(name="fake-model", context_length=1 << 20))
        self.model_name = "fake-model"


PIRATE = """name = "pirate"
display_name = "Pirate"
description = "Talks like a pirate."
control_code = "Talk like a pirate."
color = "red"
"""


def make_settings(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    (data / "personas" / "pirate").mkdir(parents=True, exist_ok=True)
    (data / "personas" / "pirate" / "persona.toml").write_text(PIRATE)
    return Settings(data_dir=data, cache_dir=tmp_path / "cache", db=str(tmp_path / "chat.db"), temperature=0)


def make_app(
    tmp_path: Path,
    engine: FakeEngine | None = None,
    resume: str | None = None,
    persona: str = "assistant",
    runtime_gate: threading.Event | None = None,
    prefs: Preferences | None = None,
    settings: Settings | None = None,
    open_runtime=None,
    only: tuple[str, ...] | None = None,
    command_line_persona: str | None = None,
) -> ChatApp:
    from chatbot.store import Store

    settings = settings or make_settings(tmp_path)
    personas, _ = scan(settings.data_dir)
    if only is not None:  # shipped personas come and go: keep snapshots to known ones
        personas = {name: p for name, p in personas.items() if name in only}
    controller = ChatController(settings, personas, personas[persona])
    runtime = FakeRuntime(engine)

    def fake_open_runtime(progress):
        progress("pretending to load")
        if runtime_gate is not None:
            runtime_gate.wait(10)
        return runtime

    prefs = prefs or Preferences(tmp_path / "tui.toml")
    app = ChatApp(
        controller, lambda: Store.open(settings.database_url()), open_runtime or fake_open_runtime, prefs, resume,
        command_line_persona,
    )
    app.fake_runtime = runtime
    return app


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run until `predicate()` holds."""
    loop_time = 0.0
    while not predicate():
        if loop_time > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
        loop_time += 0.05


def idle(app) -> bool:
    """The model is loaded and no reply is streaming."""
    screen = app.get_screen("chat")
    return screen.controller.ready and not screen.busy and not screen.pending


def seed_conversation(settings: Settings, turns, title=None, stats=None) -> int:
    """Store a conversation directly: [(user, reply), ...]; returns its id."""
    from chatbot.personas.registry import find
    from chatbot.store import Store

    with Store.open(settings.database_url()) as store:
        persona = find("assistant", settings.data_dir).persona
        version = store.persona_version(persona.name, persona.kind, persona.definition())
        cid = store.new_conversation(title, "fake-model")
        parent = None
        for user, reply in turns:
            parent = store.add_user_message(cid, user, parent)
            rid = store.start_reply(cid, parent, version, {}, None, "fake-model")
            store.finish_reply(rid, reply, "complete", stats or {"new_tokens": 4, "tokens_per_s": 40.0, "ttft_ms": 50.0})
            parent = rid
    return cid
