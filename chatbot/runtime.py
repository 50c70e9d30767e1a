"""Opening the model and its engine once per process, from settings."""

from __future__ import annotations

from dataclasses import dataclass

from chatbot.config import Settings
from chatbot.engine.decoding import Engine
from chatbot.engine.loading import LoadedModel, Progress, load_model


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


def build_engine(loaded: LoadedModel, kind: str = "auto") -> Engine:
    engine = Engine(
        loaded.model,
        loaded.tokenizer,
        eos_token_ids=loaded.eos_token_ids,
        max_context=loaded.info.context_length,
    )
    loaded.info.engine = engine.name
    return engine


def open_runtime(settings: Settings, progress: Progress | None = None) -> Runtime:
    loaded = load_model(settings.model, settings.cache_dir, dtype=settings.dtype, progress=progress)
    return Runtime(loaded=loaded, engine=build_engine(loaded, settings.engine))
