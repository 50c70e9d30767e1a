"""The fast engine's cache of repacked weights: safetensors only (nothing unpickled), and never read
under a CPU kernel path other than the one that packed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
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



def test_packed_weights_stamped_with_another_kernel_path_are_refused_even_renamed(tiny_llama, tmp_path, monkeypatch):
    """The file name says the kernel path, and so does the stamp inside (a renamed or copied file)."""
    model = loader.from_hf(tiny_llama, torch.bfloat16, TINY_INT4)
    here = loader.kernel_path()
    with monkeypatch.context() as elsewhere:
        elsewhere.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ELSEWHERE")
        loader.save(model, tmp_path, "tiny")
    (packed,) = tmp_path.glob("tiny.int4-*")
    assert packed.name == f"tiny.int4-elsewhere-torch{torch.__version__}.safetensors"
    with pytest.raises(FileNotFoundError):
        loader.load(tmp_path / "tiny.safetensors")
    packed.rename(tmp_path / f"tiny.int4-{here}.safetensors")
    with pytest.raises(ValueError, match="packed for"):
        loader.load(tmp_path / "tiny.safetensors")


# -- the packed int4 layout depends on the CPU kernel path -------------------------------------------
# `_convert_weight_to_int4pack_for_cpu` lays the weights out for the kernel path the process runs
# (ATen's CPU capability: `ATEN_CPU_CAPABILITY`, else the best the CPU has). A cache shared between
# machines (a synced home, an image, a moved VM) must never be read under another path. A tiny random
# Q4_1 file (the bundled model's type) goes through the same repack as the bundled one, in a
# fraction of the time each child takes to convert it.

KERNEL_PATHS = ("default", "avx2", "avx512")  # x86-64, lowest first: a CPU runs those up to its best
CHILD = """
import functools, json, sys, torch
from pathlib import Path
from chatbot.engine.fast import loader
from chatbot.engine.fast.model import Layout

folder, ids, gguf = Path(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])), Path(sys.argv[4])
loader.GGUFWeights = functools.cache(loader.GGUFWeights)  # a repack and a fresh build: one parse of the file
layout = Layout(dense_prefill=False)  # the packed layers are the point; the copies only cost time
repacked = []
cached = loader.load_or_build(gguf, folder, layout=layout, progress=repacked.append)
result = {"capability": torch.backends.cpu.get_cpu_capability(), "repacked": bool(repacked)}
if sys.argv[3] == "check":
    fresh = loader.from_gguf(gguf, layout=layout)
    with torch.inference_mode():
        ours, theirs = cached(ids, logits="all"), fresh(ids, logits="all")
    result.update(same=torch.equal(ours, theirs), max_diff=(ours - theirs).abs().max().item(),
                  same_top=(ours.argmax(-1) == theirs.argmax(-1)).float().mean().item())
print(json.dumps(result))
"""


def _child(capability: str | None, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def native_kernel_path() -> str:
    if "ATEN_CPU_CAPABILITY" not in os.environ:  # this process runs the CPU's best path
        return torch.backends.cpu.get_cpu_capability().lower()
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability().lower())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def tiny_q4_1(tmp_path_factory):
    from gguf_tiny import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q4_1.gguf", "llama", "Q4_1")


@pytest.mark.parametrize("writer, reader", [(w, r) for w in KERNEL_PATHS for r in KERNEL_PATHS if w != r])
def test_a_cache_packed_under_one_kernel_path_is_never_misread_under_another(
        writer, reader, native_kernel_path, tiny_q4_1, tmp_path):
    if native_kernel_path not in KERNEL_PATHS:
        pytest.skip(f"not an x86-64 kernel path: {native_kernel_path}")
    runnable = KERNEL_PATHS[: KERNEL_PATHS.index(native_kernel_path) + 1]
    if writer not in runnable or reader not in runnable:
        pytest.skip(f"this CPU runs {', '.join(runnable)} only")
    if native_kernel_path not in (writer, reader):
        pytest.skip("covered by the pairs with this CPU's own path")
    ids = list(range(40, 52))  # few rows: the default path's kernel is slow
    folder = tmp_path / "model.fast"
    folder.mkdir()
    old = [folder / "fast-v3-bfloat16-int4-int8+exact-q8.safetensors", folder / "fast-v3-bfloat16-int4-int8+exact-q8-dp.dense.pt"]
    for path in old:  # an older format's files: removed, never read
        path.write_bytes(b"not a cache")
    assert _child(writer, str(folder), json.dumps(ids), "write", str(tiny_q4_1))["capability"] == writer.upper()
    assert not any(path.exists() for path in old)
    read = _child(reader, str(folder), json.dumps(ids), "check", str(tiny_q4_1))
    assert read["capability"] == reader.upper()
    assert read["same"], read  # the cached model is the one a fresh build gives under this path
    assert read["repacked"]
    # back on the first path: its own packing is still there, beside the files the second rewrote
    again = _child(writer, str(folder), json.dumps(ids), "check", str(tiny_q4_1))
    assert again["same"] and not again["repacked"], again
