"""A decode step (one token) through the native kernels, on the fast model's own KV cache.

Prefill, soft-prompt prefixes and prefix reuse stay on the torch path (batched kernels); both
write the same bf16 cache, so a step here continues what torch prefilled and the other way round.
A tied head over a Q8_0 embedding (the bundled model's) is part of the native step, reading the
embedding's own int8 rows and scales; any other head stays the torch path's.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from chatbot.engine.native import weights as native_weights
from chatbot.engine.native.library import Kernels, LayerWeights, ModelWeights, Q8Rows, QMat, kernels


class NativeDecoder:
    def __init__(self, model, weights: native_weights.NativeWeights, chosen: Kernels, native_head: bool = True):
        from chatbot.engine.fast.model import rope_tables

        s = model.shape
        self.model, self.kernels, self.weights = model, chosen, weights
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
        head = self._head(model) if native_head else None
        self.has_native_head = head is not None
        self.struct = ModelWeights(s.n_layers, s.dim, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden_dim,
                                   s.norm_eps, layers, self._keep(model.norm), head or Q8Rows())

    @staticmethod
    def _head(model) -> Q8Rows | None:
        """The tied head over the embedding's Q8_0 rows (in place), or None where the torch head stays."""
        from chatbot.engine.fast.quantize import Q8Embedding

        emb = model.tok_embeddings
        if not (model.shape.tie_embeddings and isinstance(emb, Q8Embedding)):
            return None
        if emb.weight.dtype != torch.int8 or emb.scales.dtype != torch.float32 or not (
                emb.weight.is_contiguous() and emb.scales.is_contiguous()):
            return None
        return Q8Rows(emb.weight.data_ptr(), emb.scales.data_ptr(), emb.weight.shape[0], emb.weight.shape[1])

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
        logits = torch.empty(1, model.shape.vocab_size) if self.has_native_head else None
        rc = self.kernels.lib.nd_decode(
            ctypes.byref(self.struct), x.data_ptr(), logits.data_ptr() if logits is not None else None, pos,
            cache.k.data_ptr(), cache.v.data_ptr(), cache.capacity, self.cos[pos].data_ptr(), self.sin[pos].data_ptr(),
            torch.get_num_threads(), self.kernels.isa_id,
        )
        if rc != 0:
            raise RuntimeError(f"native decode step failed ({rc})")
        cache.length = pos + 1
        return logits if logits is not None else model.logits(x[None])


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
