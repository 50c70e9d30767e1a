"""`chatbot model list` finds the models a user has, in fake Hugging Face cache, Ollama, LM Studio
and models_dir layouts planted under a temporary HOME; `--model NAME` takes a listed name."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from cli_invoke import invoke_main
from gguf_tiny import write_tiny_gguf



@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME", "OLLAMA_MODELS", "CHATBOT_MODEL", "CHATBOT_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_MODELS_DIR", str(tmp_path / "my-models"))
    return home


@pytest.fixture
def cli(capsys):
    return lambda *args: invoke_main(capsys, *args)


def plant_hf(home, tmp_path):
    """As huggingface_hub lays a download out: blobs by hash, snapshots of links to them."""
    repo = home / ".cache" / "huggingface" / "hub" / "models--acme--Tiny-GGUF"
    blob = write_tiny_gguf(tmp_path / "hf.gguf", "qwen2", "Q4_K", kinds={"attn_v": "Q6_K"}, file_type=15)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    blob.rename(repo / "blobs" / digest)
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "tiny-Q4_K_M.gguf").symlink_to(os.path.relpath(repo / "blobs" / digest, snapshot))
    (snapshot / "README.md").write_text("not a model")


def plant_ollama(home, tmp_path, name, tag, namespace="library"):
    store = home / ".ollama" / "models"
    blob = write_tiny_gguf(tmp_path / f"{name}.gguf", "llama", "Q8_0")
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    blob.rename(store / "blobs" / f"sha256-{digest}")
    (store / "blobs" / "sha256-0000").write_text('{"stop": ["<|im_end|>"]}')  # the params layer: JSON
    manifest = store / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:0000", "size": 25},
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 1},
    ]}))


def plant_lmstudio_and_models_dir(home, tmp_path):
    folder = home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-Qwen3-GGUF"
    folder.mkdir(parents=True)
    write_tiny_gguf(folder / "Tiny-Qwen3-Q5_K.gguf", "qwen3", "Q5_K")
    (folder / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(20))  # a cut-off download
    mine = tmp_path / "my-models" / "sub"
    mine.mkdir(parents=True)
    write_tiny_gguf(mine / "house-model.gguf", "mistral", "Q4_0")


def test_model_list_finds_planted_models_in_every_layout(home, tmp_path, cli):
    plant_hf(home, tmp_path)
    plant_ollama(home, tmp_path, "tiny", "latest")
    plant_ollama(home, tmp_path, "other", "q8", namespace="someone")
    plant_lmstudio_and_models_dir(home, tmp_path)
    code, out, err = cli("model", "list", "--json")
    assert code == 0, err
    found = {e["name"]: e for e in json.loads(out) if e["source"] != "bundled"}
    assert {n: (e["source"], e["architecture"], e["quantization"], e["context_length"]) for n, e in found.items()} == {
        "hf:acme/Tiny-GGUF/tiny-Q4_K_M.gguf": ("hf-cache", "qwen2", "Q4_K_M", 1024),
        "ollama:tiny:latest": ("ollama", "llama", "Q8_0", 1024),
        "ollama:someone/other:q8": ("ollama", "llama", "Q8_0", 1024),
        "lmstudio:lmstudio-community/Tiny-Qwen3-GGUF/Tiny-Qwen3-Q5_K.gguf": ("lmstudio", "qwen3", "Q5_K", 1024),
        "house-model": ("models_dir", "llama", "Q4_0", 1024),
    }
    blob = found["ollama:tiny:latest"]["path"]
    assert blob.endswith(os.sep + "blobs" + os.sep + os.path.basename(blob)) and os.path.getsize(blob) == found["ollama:tiny:latest"]["size_bytes"]
    code, table, _ = cli("model", "list")
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "CONTEXT"]
    assert any(line.split()[:4] == ["ollama:tiny:latest", "ollama", "llama", "Q8_0"] for line in lines)


def test_model_takes_a_listed_name(home, tmp_path, cli):
    plant_ollama(home, tmp_path, "tiny", "latest")
    code, out, err = cli("model", "info", "--json", "--model", "ollama:tiny")  # tag latest by default
    assert code == 0, err
    info = json.loads(out)
    assert (info["name"], info["engine"], info["architecture"]) == ("ollama:tiny:latest", "fast", "LlamaForCausalLM")
    code, _, err = cli("ask", "hi", "--model", "ollama:absent:1b")
    assert (code, err.strip()) == (1, "chatbot: error: no model named ollama:absent:1b here (`chatbot model list` shows the models found)")


def test_nothing_planted_lists_only_what_is_installed(home, cli):
    code, out, _ = cli("model", "list", "--json")
    assert code == 0 and all(e["source"] == "bundled" for e in json.loads(out))
