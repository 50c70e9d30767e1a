"""Opening the model and its engine once per process, from settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.config import Settings
from chatbot.engine.decoding import Engine
from chatbot.engine.loading import LoadedModel, Progress, load_model
from chatbot.errors import UserError


@dataclass
class Runtime:
    loaded: LoadedModel
    engine: Engine

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def model_name(self) -> str:
        return self.loaded.info.name

    def close(self) -> None:
        """Let go of the engine's resources (a child process, for the remote engine)."""
        self.engine.close()


def build_engine(loaded: LoadedModel, kind: str = "auto", progress: Progress | None = None) -> Engine:
    """kind: "auto" (the fast engine for Llama-family models, else the reference), "reference"
    or "fast" (refused for other architectures)."""
    from chatbot.engine.fast import engine as fast

    if kind not in ("auto", "reference", "fast"):  # "openai" has no local engine: open_runtime
        raise UserError(f"unknown engine {kind!r}: choose auto, reference or fast")
    if kind == "fast" and not fast.supports(loaded):
        raise UserError(f"the fast engine serves Llama-family models; {loaded.info.architecture} needs --engine reference")
    engine: Engine | None = None
    if kind != "reference" and fast.supports(loaded):
        from chatbot.engine.fast.fallback import FastPathAttempt

        with FastPathAttempt(kind, loaded.info.name, progress):  # a type/rope it cannot take: a note, or one line
            engine = fast.build_fast_engine(loaded, progress)
    if engine is None:
        engine = Engine(
            loaded.model,
            loaded.tokenizer,
            eos_token_ids=loaded.eos_token_ids,
            max_context=loaded.info.context_length,
        )
    loaded.info.engine = engine.name
    return engine


def open_runtime(settings: Settings, progress: Progress | None = None) -> Runtime:
    if settings.engine == "openai":
        from chatbot.engine.openai_runtime import open_openai_runtime

        return open_openai_runtime(settings, progress)
    loaded, kind = None, settings.engine
    if settings.engine != "reference":
        # A Llama-family GGUF model opens on the fast path without loading the transformers model.
        from chatbot.engine.fast.engine import load_fast
        from chatbot.engine.fast.fallback import FastPathAttempt

        with FastPathAttempt(kind, model_label(settings.model), progress) as attempt:
            loaded = load_fast(settings.model, settings.cache_dir, progress)
        if attempt.refused:
            kind = "reference"
    if loaded is None:
        loaded = load_model(settings.model, settings.cache_dir, dtype=settings.dtype, progress=progress)
    return Runtime(loaded=loaded, engine=build_engine(loaded, kind, progress))


def model_label(spec: str) -> str:
    """How a message names the model `--model` gave."""
    from pathlib import Path

    return Path(spec).name if spec else "the bundled model"
