"""The fast engine's cache of repacked weights: safetensors only (nothing unpickled)."""

from __future__ import annotations

import torch

from chatbot.engine.fast import loader
from chatbot.engine.fast.model import Layout

TINY_INT4 = Layout("int4", "int8", "dense", True)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.cache.length = 0
    with torch.inference_mode():
        return model(ids, logits="all")


def test_the_cache_is_safetensors_only_and_loads_without_unpickling(tiny_llama, tmp_path, monkeypatch):
    model = loader.from_hf(tiny_llama, torch.bfloat16, TINY_INT4)
    loader.save(model, tmp_path, "tiny")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("tiny.int4-")) == [
        "tiny.dense.safetensors", "tiny.safetensors"]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called: the cache must not be unpickled")

    monkeypatch.setattr(torch, "load", no_unpickling)
    again = loader.load(tmp_path / "tiny.safetensors")
    assert again.layers[0].w13.dense is not None
    ids = torch.arange(300, 400)  # over DENSE_MIN_ROWS: the prefill goes through the dense copies
    assert torch.equal(_logits(model, ids), _logits(again, ids))
