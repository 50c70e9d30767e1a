"""Shared helpers for the persona tests: a tiny random Llama with the bundled model's tokenizer
(chat template included), saved as a model folder the CLI can load with --model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chatbot.config import Settings


def bundled_tokenizer():
    from transformers import AutoTokenizer

    from chatbot.engine.loading import bundled_gguf, cache_is_complete, converted_dir, load_model

    settings = Settings()
    try:
        folder = converted_dir(bundled_gguf(), settings.cache_dir)
    except Exception as exc:  # no bundled model installed
        pytest.skip(f"bundled model not available: {exc}")
    if not cache_is_complete(folder):
        return load_model("", settings.cache_dir, dtype="float32").tokenizer
    return AutoTokenizer.from_pretrained(str(folder))


def tiny_model(tokenizer, seed: int = 0, hidden: int = 32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).float().eval()
    model.requires_grad_(False)
    return model


def loaded_tiny(tokenizer, model, name: str = "tiny-llama"):
    from chatbot.engine.loading import LoadedModel, ModelInfo, end_token_ids

    info = ModelInfo(name=name, source=name, source_kind="directory", dtype="float32", context_length=1024,
                     cache_path=None, architecture="LlamaForCausalLM", has_chat_template=True)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, eos_token_ids=end_token_ids(model, tokenizer))


def save_tiny(tokenizer, model, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}) + "\n"
                            for u, a in pairs))
    return path


PIRATE_PAIRS = [
    (f"Question number {i}: how are you?", f"Arrr matey, number {i} be a fine question for a pirate!") for i in range(12)
]


@pytest.fixture(scope="session")
def tokenizer():
    return bundled_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tokenizer, tmp_path_factory):
    return save_tiny(tokenizer, tiny_model(tokenizer), tmp_path_factory.mktemp("tiny-llama"))


def run_cli(argv: list[str]) -> int:
    from chatbot.cli.app import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
