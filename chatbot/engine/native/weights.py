"""The model's weights as the kernels read them: the GGUF's own blocks, unchanged.

Seven matrices a layer, each of its own type (Q and K rows already un-permuted from llama.cpp's
RoPE order, as the torch path has them; a Q4_K_M file mixes types even within Q/K/V), and the
output head (`output.weight`, or the tied `token_embd.weight`) where its type is one they take.
Built once from the GGUF file into `native-v<FORMAT>.safetensors` in the fast engine's cache
folder (the size of the file) and memory-mapped after that: nothing is converted at start. The
simple types' blocks are regrouped (`regroup`), not changed: in each group of 4 rows a block's
fp16 scales come first, so that the kernels load a group's scales as one vector.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = 4
# ggml type ids of the block formats the kernels read
BLOCK_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
SUPER_BLOCK = {"Q4_K": 256, "Q5_K": 256, "Q6_K": 256}  # the columns a row must be a multiple of (else 32)
# the kernels' matrices (library.LayerWeights) and the GGUF tensors they are
MATRICES = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up",
            "down": "ffn_down"}
HEAD = "head"  # the output head's key: absent where the file's head is of another type (F16...)
# the simple types: bytes of a block and of its leading fp16 fields (d, and m for Q4_1/Q5_1)
SIMPLE_BLOCKS = {"Q4_0": (18, 2), "Q4_1": (20, 4), "Q5_0": (22, 2), "Q5_1": (24, 4), "Q8_0": (34, 2)}
GROUP_ROWS = 4  # kernels.c's ROWS


def regroup(blocks: np.ndarray, kind: str) -> np.ndarray:
    """A matrix's blocks `[rows, bytes per row]` in the kernels' layout (kernels.c, simple_block):
    in each group of GROUP_ROWS rows, block b holds the rows' fields, then the rest of their
    blocks, row by row. Rows after the last whole group, and the K-quants, stay as they are."""
    if kind not in SIMPLE_BLOCKS:
        return np.array(blocks, copy=True)
    size, fields = SIMPLE_BLOCKS[kind]
    blocks = np.asarray(blocks)
    rows, width = blocks.shape
    whole = rows // GROUP_ROWS * GROUP_ROWS
    grouped = blocks[:whole].reshape(whole // GROUP_ROWS, GROUP_ROWS, width // size, size).transpose(0, 2, 1, 3)
    # written in place into one array: no intermediate copies (3x a 30 MB head at a first start)
    out = np.empty_like(blocks)
    into = out[:whole].reshape(whole // GROUP_ROWS, width // size, GROUP_ROWS * size)
    for part, (start, end) in ((grouped[..., :fields], (0, GROUP_ROWS * fields)),
                               (grouped[..., fields:], (GROUP_ROWS * fields, GROUP_ROWS * size))):
        target = into[..., start:end]
        target.shape = part.shape  # splits the last axis: a view (raises rather than copy)
        target[...] = part
    out[whole:] = blocks[whole:]
    return out


class NotNative(Exception):
    """A tensor the kernels cannot take (its type or shape): the torch path decodes instead."""


@dataclass
class NativeWeights:
    tensors: dict[str, torch.Tensor]  # "<layer>.<matrix>": uint8 [rows, bytes per row]
    types: dict[str, str]  # same keys: the block type
    cols: dict[str, int]


def path_in(folder: Path) -> Path:
    return Path(folder) / f"native-v{FORMAT}.safetensors"


def unreadable(raw) -> str | None:
    """Why the kernels cannot read a tensor as it is in the file, or None."""
    if raw.kind not in BLOCK_TYPES:
        return f"{raw.name.removesuffix('.weight')}: {raw.kind}"
    block = SUPER_BLOCK.get(raw.kind, 32)
    if raw.cols % block:
        return f"{raw.name.removesuffix('.weight')}: {raw.cols} columns (not whole blocks of {block})"
    return None


def build(gguf_path: Path, n_layers: int, progress=None) -> NativeWeights:
    """The kernels' matrices from the file, after checking that every one is a type they take."""
    from chatbot.engine.fast.gguf_weights import GGUFWeights

    weights = GGUFWeights(gguf_path)
    raws = {f"{i}.{matrix}": weights.layer(i, role) for i in range(n_layers) for matrix, role in MATRICES.items()}
    for raw in raws.values():
        why_not = unreadable(raw)
        if why_not:
            raise NotNative(why_not)
    head = weights.output()
    if unreadable(head) is None:  # else the kernels run the int8 head the model keeps
        raws[HEAD] = head
    if progress:
        progress(f"Laying out {Path(gguf_path).name} for the native decode kernels (once)...")
    tensors = {}
    for key, raw in raws.items():
        tensors[key] = torch.from_numpy(regroup(raw.data, raw.kind))
        weights.release(raw.name)  # the file's pages read for it: not held beside the copy
    return NativeWeights(tensors, {key: raw.kind for key, raw in raws.items()}, {key: raw.cols for key, raw in raws.items()})


def save(weights: NativeWeights, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    save_file(weights.tensors, str(partial), metadata={"types": json.dumps(weights.types), "cols": json.dumps(weights.cols)})
    partial.replace(path)


def load(path: Path) -> NativeWeights:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return NativeWeights(load_file(str(path)), json.loads(meta["types"]), json.loads(meta["cols"]))


def load_or_build(gguf_path: Path, folder: Path, n_layers: int, progress=None) -> NativeWeights:
    path = path_in(folder)
    if path.is_file():
        try:
            return load(path)
        except Exception:  # damaged or foreign: rebuilt whole below
            pass
    save(build(gguf_path, n_layers, progress), path)
    for stale in Path(folder).glob("native-v*.safetensors"):  # another format's layout: never read again
        if stale != path:
            stale.unlink(missing_ok=True)
    return load(path)  # mapped, as on every later start: the built copies are not kept
