"""Opening the openai engine (`--engine openai`): the server from settings, and the local model's
tokenizer and config only (no weights), which the context builder, the budget and the soft-prompt
checks need. Token counts are therefore the local model's; they match the server's where it
serves the same model (the usual case: the bundled SmolLM2 on vLLM or llama.cpp)."""

from __future__ import annotations

import os
from pathlib import Path

from chatbot.config import Settings
from chatbot.engine.loading import (
    LoadedModel,
    ModelInfo,
    Progress,
    cache_is_complete,
    convert_gguf,
    converted_dir,
    load_model,
    open_tokenizer_and_config,
    resolve_source,
)
from chatbot.engine.openai_engine import OpenAIEngine
from chatbot.errors import UsageError, UserError


def local_model_folder(settings: Settings, progress: Progress) -> Path | None:
    """A folder holding the local model's tokenizer, config and safetensors; None for a hub id."""
    source = resolve_source(settings.model)
    if source.kind == "directory":
        return Path(source.location)
    if source.kind == "gguf":
        folder = converted_dir(Path(source.location), settings.cache_dir)
        if not cache_is_complete(folder):
            convert_gguf(Path(source.location), folder, progress)
        return folder
    return None


def api_key(settings: Settings) -> str | None:
    """The key from the environment variable the settings name (never from settings themselves)."""
    return os.environ.get(settings.api_key_env) if settings.api_key_env else None


def open_openai_runtime(settings: Settings, progress: Progress | None = None):
    from chatbot.engine.remote import ModelElsewhere
    from chatbot.runtime import Runtime

    progress = progress or (lambda message: None)
    if not settings.base_url:
        raise UsageError("--engine openai needs --base-url URL (or CHATBOT_BASE_URL), e.g. http://127.0.0.1:8000/v1")
    folder = local_model_folder(settings, progress)
    if folder is not None:
        tokenizer, config, generation_config = open_tokenizer_and_config(folder)
    else:  # a hub id: its tokenizer and config come with the model
        loaded = load_model(settings.model, settings.cache_dir, progress=progress)
        tokenizer, config, generation_config = loaded.tokenizer, loaded.model.config, loaded.model.generation_config
    context = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048)
    embedder = None
    if settings.remote_prompt_embeds:
        if folder is None:
            raise UserError("prompt embeddings need a local model folder or .gguf (--model), not a hub id")
        from chatbot.engine.prompt_embeds import PromptEmbedder

        embedder = PromptEmbedder.from_folder(folder)
    engine = OpenAIEngine(settings.base_url.rstrip("/"), settings.remote_model, api_key(settings),
                          settings.remote_timeout_s, context, embedder)
    if not engine.model:
        models = engine.list_models()
        if not models:
            raise UserError(f"the model server at {engine.base_url} lists no models: pass --remote-model NAME")
        engine.model = models[0]
    architecture = (getattr(config, "architectures", None) or ["remote"])[0]
    info = ModelInfo(engine.model, engine.base_url, "openai", "remote", context, str(folder) if folder else None,
                     architecture, bool(getattr(tokenizer, "chat_template", None)), engine="openai")
    eos = {int(i) for i in _as_list(getattr(generation_config, "eos_token_id", None))}
    loaded = LoadedModel(ModelElsewhere(config, generation_config), tokenizer, info, eos)
    return Runtime(loaded=loaded, engine=engine)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
