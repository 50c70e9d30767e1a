"""A decode step (one token) through the native kernels, on the fast model's own KV cache.

Prefill, soft-prompt prefixes and prefix reuse stay on the torch path (batched kernels); both
write the same bf16 cache, so a step here continues what torch prefilled and the other way round.
The head runs natively too: over the file's own head blocks where the kernels take their type
(exact), else over int8 rows the model keeps anyway (a tied Q8_0 embedding, exact; else the torch
path's int8 head, whose likeliest tokens are then re-scored exactly, as there).
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
                setattr(layers[i], matrix, self._qmat(f"{i}.{matrix}"))
            layers[i].attn_norm = self._keep(block.attention_norm)
            layers[i].ffn_norm = self._keep(block.ffn_norm)
            # the architectures' optional parts (Qwen2's bias, Qwen3's Q/K norm): NULL when absent
            layers[i].qkv_bias = self._keep(getattr(block, "bqkv", None))
            layers[i].q_norm = self._keep(getattr(block, "q_norm", None))
            layers[i].k_norm = self._keep(getattr(block, "k_norm", None))
        self._layers = layers
        self.head_bytes = 0
        output, head = QMat(), None
        if native_head and native_weights.HEAD in weights.tensors:  # the file's own head: exact
            output = self._qmat(native_weights.HEAD)
            self.head_bytes = weights.tensors[native_weights.HEAD].nbytes
            model.exact_head, model.output = self.head_logits, None  # long prefills' head too: no int8 copy
        elif native_head:
            head = self._head(model)
        self.has_native_head = bool(output.w) or head is not None
        # a tied embedding is the head's own blocks: its rows are read from them, already mapped
        # and read every step, not with a read of the file per token
        self.embeds_from_head = bool(output.w) and s.tie_embeddings
        self.head_rescored = head is not None and head[1]
        self.struct = ModelWeights(s.n_layers, s.dim, s.n_heads, s.n_kv_heads, s.head_dim, s.hidden_dim,
                                   s.norm_eps, layers, self._keep(model.norm), output, head[0] if head else Q8Rows())

    def head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits `[T, vocab]` of final normed hidden states `[T, dim]`, over the file's head blocks."""
        h = h.float().contiguous()
        head = self.struct.output
        out = torch.empty(h.shape[0], head.rows)
        if self.kernels.lib.nd_matmul(ctypes.byref(head), h.data_ptr(), h.shape[0], out.data_ptr(),
                                      torch.get_num_threads(), self.kernels.isa_id):
            raise RuntimeError("native head failed")
        return out

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 rows of the token embedding `[len(ids), dim]`, as FastLlama.embedding_rows."""
        if not self.embeds_from_head:
            return self.model.embedding_rows(ids)
        wanted = ids.reshape(-1).to(torch.int32).contiguous()
        out = torch.empty(wanted.shape[0], self.model.shape.dim)
        if self.kernels.lib.nd_rows(ctypes.byref(self.struct.output), wanted.data_ptr(), wanted.shape[0], out.data_ptr()):
            raise IndexError(f"token id out of range (vocabulary of {self.struct.output.rows})")
        return out

    def _qmat(self, key: str) -> QMat:
        tensor, weights = self.weights.tensors[key], self.weights
        return QMat(tensor.data_ptr(), native_weights.BLOCK_TYPES[weights.types[key]], tensor.shape[0], weights.cols[key])

    def _head(self, model) -> tuple[Q8Rows, bool] | None:
        """The head the kernels run over int8 rows the model already keeps (read in place), and
        whether its logits are then re-scored as on the torch path: a tied Q8_0 embedding (exact),
        else the int8 head (it nominates, the likeliest are re-scored); None: the torch head."""
        from chatbot.engine.fast.quantize import Int8Linear, Q8Embedding

        emb, out = model.tok_embeddings, model.output
        if model.shape.tie_embeddings and isinstance(emb, Q8Embedding) and emb.weight.is_contiguous():
            rows, scales, rescored = emb.weight, emb.scales, False
        elif isinstance(out, Int8Linear) and out.weight.is_contiguous():
            rows, scales, rescored = out.weight, out.scales, True  # scales: bf16 in the model, fp32 here
        else:
            return None
        self.head_bytes = rows.nbytes + scales.numel() * 4  # what a step reads
        per_row = int(scales.dim() == 1)
        return Q8Rows(rows.data_ptr(), self._keep(scales), rows.shape[0], rows.shape[1], per_row), rescored

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
        return self.forward(torch.tensor([token_id]))

    def forward(self, x: torch.Tensor, logits: str = "last") -> torch.Tensor | None:
        """As FastLlama.forward: token ids `[T]` or input embeddings `[T, dim]` after the cached
        positions; logits `[1, vocab]` for the last ("last"), `[T, vocab]` ("all") or None ("none")."""
        model, cache = self.model, self.model.cache
        x = (self.embedding_rows(x) if x.dtype == torch.long else x).float().contiguous()
        T, pos = x.shape[0], cache.length
        cache.reserve(pos + T)
        rows = {"none": 0, "last": 1, "all": T}[logits]
        out = torch.empty(rows, model.shape.vocab_size) if rows and self.has_native_head else None
        rc = self.kernels.lib.nd_forward(
            ctypes.byref(self.struct), x.data_ptr(), T, out.data_ptr() if out is not None else None, rows if out is not None else 0,
            pos, cache.k.data_ptr(), cache.v.data_ptr(), cache.capacity, self.cos[pos].data_ptr(), self.sin[pos].data_ptr(),
            torch.get_num_threads(), self.kernels.isa_id,
        )
        if rc != 0:
            raise RuntimeError(f"native forward failed ({rc})")
        cache.length = pos + T
        if not rows:
            return None
        if out is None:
            return model.logits(x[-rows:])
        return model.rescored(x[-rows:], out) if self.head_rescored else out


def will_decode(gguf_path: Path, folder: Path | None, progress=None) -> bool:
    """The kernels will run the model of `gguf_path` cached in `folder`: they are there for this
    CPU, take its shape, and its blocks are laid out for them (types checked then). A first start
    lays them out here, before the torch weights load, so that it too reads no int4 weights the
    kernels replace; a file they cannot take says so later, in decoder_for's note."""
    if folder is None or kernels()[0] is None:
        return False
    if native_weights.path_in(Path(folder)).is_file():
        return True
    from chatbot.engine.fast.gguf_weights import GGUFWeights

    try:
        shape = GGUFWeights(gguf_path).shape
        if shape is not None and _takes(shape):
            native_weights.load_or_build(Path(gguf_path), Path(folder), shape.n_layers, progress)
    except (native_weights.NotNative, ValueError, OSError):
        return False
    return native_weights.path_in(Path(folder)).is_file()


NOT_THIS_SHAPE = ("the native decode kernels take bf16 caches and head sizes up to 512 that are a multiple of 4: "
                  "decoding through torch")


def _takes(shape) -> bool:
    # Q, K and V are one phase of rows end to end, cut at multiples of the kernels' four-row groups:
    # a K or V of heads x head_dim rows not a multiple of 4 would start V mid-group
    return shape.head_dim <= 512 and shape.head_dim % 4 == 0


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
    if model.cache.dtype != torch.bfloat16 or not _takes(model.shape):
        note(f"note: {NOT_THIS_SHAPE}")
        return None
    try:
        weights = native_weights.load_or_build(Path(gguf_path), Path(folder), model.shape.n_layers, progress)
    except native_weights.NotNative as exc:
        note(f"note: the native decode kernels do not take {exc}: decoding through torch")
        return None
    return NativeDecoder(model, weights, chosen)
