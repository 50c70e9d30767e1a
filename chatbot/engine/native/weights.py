"""The decoder layers' weights as the kernels read them: the GGUF's own blocks, unchanged.

Per layer, Q/K/V are one matrix (rows stacked; Q and K rows already un-permuted from llama.cpp's
RoPE order, as the torch path has them) and gate/up another, so a layer is four GEMVs. Built once
from the GGUF file into `native-v<FORMAT>.safetensors` in the fast engine's cache folder (about
the size of the file's layer tensors) and memory-mapped after that: nothing is converted at start.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
# ggml type ids of the block formats the kernels read
BLOCK_TYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q4_K": 12}
SUPER_BLOCK = {"Q4_K": 256}  # the columns a row must be a multiple of (else 32)
MATRICES = {"qkv": ("attn_q", "attn_k", "attn_v"), "o": ("attn_output",), "gate_up": ("ffn_gate", "ffn_up"),
            "down": ("ffn_down",)}


class NotNative(Exception):
    """A tensor the kernels cannot take (its type or shape): the torch path decodes instead."""


@dataclass
class NativeWeights:
    tensors: dict[str, torch.Tensor]  # "<layer>.<matrix>": uint8 [rows, bytes per row]
    types: dict[str, str]  # same keys: the block type
    cols: dict[str, int]


def path_in(folder: Path) -> Path:
    return Path(folder) / f"native-v{FORMAT}.safetensors"


def build(gguf_path: Path, n_layers: int, progress=None) -> NativeWeights:
    """The kernels' matrices from the file, after checking that every one is a type they take."""
    from chatbot.engine.fast.gguf_weights import GGUFWeights

    weights = GGUFWeights(gguf_path)
    parts = {f"{i}.{matrix}": [weights.layer(i, role) for role in roles]
             for i in range(n_layers) for matrix, roles in MATRICES.items()}
    for key, raws in parts.items():
        kinds = sorted({raw.kind for raw in raws})
        where = f"blk.{key.split('.')[0]}.{'/'.join(raw.name.split('.')[2] for raw in raws)}"
        if len(kinds) != 1 or kinds[0] not in BLOCK_TYPES:
            raise NotNative(f"{where}: {'/'.join(kinds)}")
        block = SUPER_BLOCK.get(kinds[0], 32)
        if raws[0].cols % block:
            raise NotNative(f"{where}: {raws[0].cols} columns (not whole blocks of {block})")
    if progress:
        progress(f"Laying out {Path(gguf_path).name} for the native decode kernels (once)...")
    tensors = {key: torch.from_numpy(np.ascontiguousarray(np.concatenate([np.asarray(r.data) for r in raws])))
               for key, raws in parts.items()}
    return NativeWeights(tensors, {key: raws[0].kind for key, raws in parts.items()},
                         {key: raws[0].cols for key, raws in parts.items()})


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
    weights = build(gguf_path, n_layers, progress)
    save(weights, path)
    return weights
