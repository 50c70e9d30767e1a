"""Shared fixtures: the real bundled model (loaded once), tiny random models, isolated dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """The real user cache, so the bundled model is converted once per machine, not per run."""
    from chatbot.config import Settings

    return Settings().cache_dir


@pytest.fixture(scope="session")
def bundled_fp32(model_cache_dir):
    """The real bundled SmolLM2-135M-Instruct in fp32 (exact comparisons)."""
    from chatbot.engine.loading import load_model

    return load_model("", model_cache_dir, dtype="float32")


@pytest.fixture(scope="session")
def bundled_settings(model_cache_dir):
    """What a command opens the bundled model from by default."""
    from chatbot.config import Settings

    return Settings(model="", engine="auto", dtype="auto", cache_dir=model_cache_dir)


@pytest.fixture(scope="session")
def bundled_runtime(bundled_settings):
    """The bundled model on the default engine, opened once."""
    from chatbot.runtime import open_runtime

    return open_runtime(bundled_settings)


@pytest.fixture
def bundled_cli(request, monkeypatch, capsys, bundled_settings):
    """`chatbot ARGS` run in this process: (exit code, stdout, stderr). A command that opens the
    bundled model gets the session's `bundled_runtime` (opened at the first such command), not a
    fresh load; set the CHATBOT_* dirs with monkeypatch first."""
    from cli_invoke import invoke_main, share_runtime

    share_runtime(monkeypatch, bundled_settings, lambda: request.getfixturevalue("bundled_runtime"))
    return lambda *args, stdin=None: invoke_main(capsys, *args, stdin=stdin)


@pytest.fixture(scope="session")
def smol_tokenizer(bundled_fp32):
    return bundled_fp32.tokenizer


@pytest.fixture(scope="session")
def tiny_llama():
    """A randomly initialised Llama with the bundled model's vocabulary size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny_runtime(tiny_llama, smol_tokenizer):
    """The tiny random Llama behind the real engine, with the bundled model's tokenizer."""
    from chatbot.engine.decoding import Engine
    from chatbot.engine.loading import LoadedModel, ModelInfo
    from chatbot.runtime import Runtime

    info = ModelInfo("tiny", "memory", "test", "float32", 1024, None, "LlamaForCausalLM", True)
    loaded = LoadedModel(tiny_llama, smol_tokenizer, info, eos_token_ids={-1})
    return Runtime(loaded, Engine(tiny_llama, smol_tokenizer, {-1}, 1024))


@pytest.fixture(scope="session")
def tiny_bpe_tokenizer():
    """A small byte-level BPE tokenizer with no chat template (as GPT-2 and CTRL have)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [
        "User: hello there\nAssistant: hi, how can I help you today?\n",
        "Horror: the night was dark and the house was silent.",
        "Wikipedia: Paris is the capital of France. 東京は日本の首都です。 🙂",
    ] * 20
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


@pytest.fixture
def isolated_settings(tmp_path, monkeypatch, model_cache_dir):
    """Settings whose data dir and database live in tmp_path (the model cache stays shared)."""
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(model_cache_dir))
    monkeypatch.setenv("CHATBOT_DB", str(tmp_path / "chat.db"))
    from chatbot.config import Settings

    return Settings()
