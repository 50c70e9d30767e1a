"""A decode step (one token) through the native kernels, on the fast model's own KV cache.

Prefill, soft-prompt prefixes and prefix reuse stay on the torch path (batched kernels); both
write the same bf16 cache, so a step here continues what torch prefilled and the other way round.
The output head stays the torch path's (int8 nominates, the top candidates re-scored exactly).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from chatbot.engine.native import weights as native_weights
from chatbot.engine.native.library import Kernels, LayerWeights, ModelWeights, QMat, kernels


# Bits of the kernels' `precise` (PRECISE_QKV, _O, _GATE_UP, _DOWN): which matmul inputs also get a
# second int8 pass for what the first one's rounding lost. One int8 pass (a scale per 16 values)
# measured a mean top-two margin error of 0.069 against the fp32 reference, at the guard's limit
# (0.07; the torch int4 path: 0.044); both passes on every matmul 0.026 (docs/fast.md).
PRECISE_ALL = 0b1111


class NativeDecoder:
    def __init__(self, model, weights: native_weights.NativeWeights, chosen: Kernels, precise: int = PRECISE_ALL):
        from chatbot.engine.fast.model import rope_tables

        s = model.shape
        self.model, self.kernels, self.weights, self.precise = model, chosen, weights, precise
        self.cos, self.sin = (t.contiguous() for t in rope_tables(s, torch.float32))
        self._norms = []  # fp32 copies the struct points at (kept alive here)
        layers = (LayerWeights * s.n_layers)()
        for i, block in enumerate(model.layers):
            for matrix in native_weights.MATRICES:
                key = f"{i}.{matrix}"
                tensor = weights.tensors[key]
                setattr(layers[i], matrix, QMat(tensor.data_ptr(), native_weights.BLOCK_TYPES[weights.types[key]],
                                                tensor.shape[0], weights.cols[key]))
            layers[i].attn_norm = self._keep(block.attention_norm)
            layers[i].ffn_norm = self._keep(block.ffn_norm)
            # the architectures' optional parts (Qwen2's bias, Qwen3's Q/K norm): NULL when absent
            layers[i].qkv_bias = self._keep(getattr(block, "bqkv", None))
            layers[i].q_norm = self._keep(getattr(block, "q_norm", None))
            layers[i].k_norm = self._keep(getattr(block, "k_norm", None))
        self._layers = layers
        self.struct = ModelWeights(s.n_layers, s.dim, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden_dim,
                                   s.norm_eps, layers, self._keep(model.norm), precise)

    def _keep(self, tensor: torch.Tensor | None) -> int | None:
        if tensor is None:
            return None
        t = tensor.detach().float().contiguous()
        self._norms.append(t)
        return t.data_ptr()

    @property
    def isa(self) -> str:
        return self.kernels.isa

    def step(self, token_id: int) -> torch.Tensor:
        """The next token's logits `[1, vocab]`, the token's K/V written at the cache's end."""
        model, cache = self.model, self.model.cache
        pos = cache.length
        cache.reserve(pos + 1)
        x = model.embedding_rows(torch.tensor([token_id])).reshape(-1).float().contiguous()
        rc = self.kernels.lib.nd_decode(
            ctypes.byref(self.struct), x.data_ptr(), pos, cache.k.data_ptr(), cache.v.data_ptr(), cache.capacity,
            self.cos[pos].data_ptr(), self.sin[pos].data_ptr(), torch.get_num_threads(), self.kernels.isa_id,
        )
        if rc != 0:
            raise RuntimeError(f"native decode step failed ({rc})")
        cache.length = pos + 1
        return model.logits(x[None])


def decoder_for(model, gguf_path: Path | None, folder: Path | None, progress=None) -> NativeDecoder | None:
    """The native decoder for a fast model built from a GGUF file, or None (with one note through
    `progress` saying why) where the torch path must decode."""
    note = progress or (lambda message: None)
    if gguf_path is None or folder is None:
        return None  # a transformers checkpoint: no GGUF blocks to read
    chosen, why_not = kernels()
    if chosen is None:
        if why_not:
            note(f"note: {why_not}")
        return None
    if model.cache.dtype != torch.bfloat16 or model.shape.head_dim > 512 or model.shape.head_dim % 2:
        note("note: the native decode kernels take bf16 caches and even head sizes up to 512: decoding through torch")
        return None
    try:
        weights = native_weights.load_or_build(Path(gguf_path), Path(folder), model.shape.n_layers, progress)
    except native_weights.NotNative as exc:
        note(f"note: the native decode kernels do not take {exc}: decoding through torch")
        return None
    return NativeDecoder(model, weights, chosen)
