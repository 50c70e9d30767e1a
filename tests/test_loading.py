"""Finding the model and the GGUF conversion cache."""

import json
import shutil
from pathlib import Path

import pytest

from chatbot.engine.loading import (
    MARKER,
    bundled_gguf,
    cache_is_complete,
    converted_dir,
    end_token_ids,
    load_model,
    resolve_source,
)
from chatbot.errors import NotFoundError, UserError


def test_bundled_model_is_found():
    source = resolve_source("")
    assert source.kind == "gguf" and source.bundled
    assert source.location == str(bundled_gguf())


def test_model_spec_kinds(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert resolve_source(str(tmp_path / "hf")).kind == "directory"
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    assert resolve_source("gpt2").kind == "hub"
    with pytest.raises(NotFoundError):
        resolve_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(UserError, match="no config.json"):
        (tmp_path / "empty").mkdir()
        resolve_source(str(tmp_path / "empty"))
    with pytest.raises(NotFoundError):
        resolve_source("./no/such/thing/here")


def test_unreachable_hub_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("chatbot.engine.loading.hub_reachable", lambda *a, **k: False)
    with pytest.raises(UserError, match="not reachable"):
        load_model("nobody/no-such-model", tmp_path)


def test_cache_marker_detects_half_written_and_truncated_files(bundled_fp32, tmp_path):
    cached = Path(bundled_fp32.info.cache_path)
    assert cached == converted_dir(bundled_gguf(), cached.parents[1])
    assert cache_is_complete(cached)
    copy = tmp_path / "copy"
    shutil.copytree(cached, copy)
    assert cache_is_complete(copy)
    marker = json.loads((copy / MARKER).read_text())
    with open(copy / "model.safetensors", "r+b") as handle:
        handle.truncate(marker["files"]["model.safetensors"] // 2)
    assert not cache_is_complete(copy)
    (copy / MARKER).unlink()
    assert not cache_is_complete(copy)


def test_end_tokens_include_the_chat_templates_end_of_turn(bundled_fp32):
    tokenizer = bundled_fp32.tokenizer
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_token_ids(bundled_fp32.model, tokenizer)


def test_a_damaged_cache_is_rebuilt(tmp_path):
    """A cache whose files have the right sizes but do not load is rebuilt from the GGUF (the
    bundled one takes ~20 s: a tiny random file takes the same path)."""
    from gguf_tiny import DIM, write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", "llama", "Q8_0")
    cache_dir = tmp_path / "cache"
    target = Path(load_model(str(gguf), cache_dir, dtype="float32").info.cache_path)
    assert target == converted_dir(gguf, cache_dir)
    size = (target / "config.json").stat().st_size
    (target / "config.json").write_bytes(b"{" + b" " * (size - 1))  # same size, not JSON
    assert cache_is_complete(target)
    progress = []
    loaded = load_model(str(gguf), cache_dir, dtype="float32", progress=progress.append)
    assert any("damaged" in line for line in progress)
    assert cache_is_complete(target)
    assert loaded.model.config.hidden_size == DIM


@pytest.mark.parametrize("spec", ["gpt2", "openai-community/gpt2"])
def test_a_hub_id_offline_says_the_hub_is_unreachable(spec, tmp_path):
    """A bare hub id (the hub's top-level `gpt2`) is a hub id as much as `owner/name`: offline,
    both get the same honest line, not "no such model"."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "CHATBOT_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "--model", spec, "model", "info"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        f"chatbot: error: cannot fetch {spec}: the Hugging Face hub is not reachable (offline?); "
        "pass a local model directory or .gguf file with --model"
    ]
