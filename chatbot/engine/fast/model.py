"""A lean Llama forward for one sequence, with a static KV cache (gpt-fast style).

Activations are 2-D `[tokens, dim]` (batch 1 is implicit); positions continue from the cache's
length, so a prefill, a decode step and a soft-prompt prefix are the same `forward`. Per step there
is no mask building, no cache object to grow and no position bookkeeping: RoPE tables are computed
once, Q/K/V and gate/up are one matmul each, and grouped-query attention runs as one SDPA call with
the query heads of a KV head stacked as rows (no K/V repeat).

The same forward serves Mistral (a Llama), Qwen2 (a bias on Q/K/V), Qwen3 (an RMSNorm over each
head of Q and K before RoPE, and its own head size) and Llama 3.x (RoPE frequencies divided by
per-frequency factors): optional parts of `Block`, switched by `LlamaShape`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from chatbot.engine.fast.gguf_weights import LlamaShape

RESCORED_CANDIDATES = 64


@dataclass(frozen=True)
class Layout:
    """How the weights are stored. linear: "dense" | "int4"; head: "dense" | "int8" | "int4", optionally
    "+exact" (the top candidates' logits re-scored exactly from the tied embedding rows); embedding:
    "dense" | "q8" (Q8_0 rows in memory) | "file" (rows read from the GGUF file, exact, none in
    memory: file_rows.py); dense_prefill: int4 layers also keep a dense copy for prefill."""

    linear: str = "int4"
    head: str = "int8+exact"
    embedding: str = "file"
    dense_prefill: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


class UninitLinear(nn.Linear):
    """nn.Linear without weight initialisation: every weight here is assigned from a checkpoint,
    and initialising a meta tensor imports torch._dynamo (over a second of every start)."""

    def reset_parameters(self) -> None:
        pass


class UninitEmbedding(nn.Embedding):
    """nn.Embedding without weight initialisation (see UninitLinear)."""

    def reset_parameters(self) -> None:
        pass


class KVCache(nn.Module):
    """K and V for every layer, `[layers, kv_heads, capacity, head_dim]`, and how much is filled.
    `crop(-n)` drops the last n positions by moving the length; capacity grows by doubling."""

    def __init__(self, shape: LlamaShape, dtype: torch.dtype, capacity: int = 256):
        super().__init__()
        self.shape, self.dtype = shape, dtype
        self.length = 0
        self.register_buffer("k", self._empty(capacity), persistent=False)
        self.register_buffer("v", self._empty(capacity), persistent=False)

    def _empty(self, capacity: int) -> torch.Tensor:
        s = self.shape
        return torch.zeros(s.n_layers, s.n_kv_heads, capacity, s.head_dim, dtype=self.dtype)

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reserve(self, total: int) -> None:
        if total <= self.capacity:
            return
        if total > self.shape.max_seq_len:
            raise ValueError(f"{total} positions exceed the model's context ({self.shape.max_seq_len})")
        capacity = min(max(total, 2 * self.capacity), self.shape.max_seq_len)
        k, v = self._empty(capacity), self._empty(capacity)
        k[:, :, : self.length] = self.k[:, :, : self.length]
        v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = k, v

    def crop(self, count: int) -> None:
        """Like DynamicCache.crop: a negative count removes that many positions from the end."""
        self.length = max(self.length + count, 0) if count < 0 else min(count, self.length)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[:, :, : self.length].clone(), self.v[:, :, : self.length].clone()

    def restore(self, snapshot: tuple[torch.Tensor, torch.Tensor]) -> None:
        k, v = snapshot
        self.length = 0
        self.reserve(k.shape[2])
        self.k[:, :, : k.shape[2]] = k
        self.v[:, :, : v.shape[2]] = v
        self.length = k.shape[2]


def rope_tables(shape: LlamaShape, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sign-folded sin, `[max_seq_len, head_dim]`, computed as transformers does (fp32,
    then cast), so `x * cos + roll(x, half) * sin` equals `x * cos + rotate_half(x) * sin`."""
    dim = shape.head_dim
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if shape.rope_freq_factors:  # Llama 3.x rope scaling, as llama.cpp's rope_freqs applies it
        inv_freq = inv_freq / torch.tensor(shape.rope_freq_factors, dtype=torch.float32)
    freqs = torch.arange(shape.max_seq_len).float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    sign = torch.cat([-torch.ones(dim // 2), torch.ones(dim // 2)])
    return emb.cos().to(dtype), (emb.sin().to(dtype) * sign.to(dtype))


class Block(nn.Module):
    def __init__(self, shape: LlamaShape, dtype: torch.dtype):
        super().__init__()
        s = shape
        qkv_out = (s.n_heads + 2 * s.n_kv_heads) * s.head_dim
        self.wqkv = UninitLinear(s.dim, qkv_out, bias=False, dtype=dtype, device="meta")
        self.wo = UninitLinear(s.n_heads * s.head_dim, s.dim, bias=False, dtype=dtype, device="meta")
        self.w13 = UninitLinear(s.dim, 2 * s.hidden_dim, bias=False, dtype=dtype, device="meta")
        self.w2 = UninitLinear(s.hidden_dim, s.dim, bias=False, dtype=dtype, device="meta")
        self.register_buffer("attention_norm", torch.ones(s.dim, dtype=dtype))
        self.register_buffer("ffn_norm", torch.ones(s.dim, dtype=dtype))
        self.register_buffer("bqkv", torch.zeros(qkv_out, dtype=dtype) if s.qkv_bias else None)
        self.register_buffer("q_norm", torch.ones(s.head_dim, dtype=dtype) if s.qk_norm else None)
        self.register_buffer("k_norm", torch.ones(s.head_dim, dtype=dtype) if s.qk_norm else None)


class FastLlama(nn.Module):
    def __init__(self, shape: LlamaShape, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout()):
        super().__init__()
        self.shape, self.layout, self._dtype = shape, layout, dtype
        s = shape
        self.tok_embeddings = UninitEmbedding(s.vocab_size, s.dim, dtype=dtype, device="meta")
        self.layers = nn.ModuleList(Block(s, dtype) for _ in range(s.n_layers))
        self.register_buffer("norm", torch.ones(s.dim, dtype=dtype))
        self.output = UninitLinear(s.dim, s.vocab_size, bias=False, dtype=dtype, device="meta")
        # h (fp32) -> logits through the native kernels over the file's own head blocks, where they
        # read it (set by NativeDecoder, which then drops `output`): exact, nothing re-scored
        self.exact_head = None
        cos, sin = rope_tables(s, dtype)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.cache = KVCache(s, dtype)
        self._norm_shape = (s.dim,)
        self.config = None  # the HF config, where one exists (callers read hidden_size etc.)
        self.stop_token_ids: set[int] = set()  # what the GGUF metadata says ends a reply
        self.generation_config = None

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tok_embeddings(ids)

    def norms_to_float(self) -> "FastLlama":
        """RMSNorm weights in fp32, as the residual stream they scale."""
        for block in self.layers:
            block.attention_norm, block.ffn_norm = block.attention_norm.float(), block.ffn_norm.float()
            if block.q_norm is not None:
                block.q_norm, block.k_norm = block.q_norm.float(), block.k_norm.float()
        self.norm = self.norm.float()
        return self

    def embedding_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 rows of the (tied) embedding, exact."""
        emb = self.tok_embeddings
        return emb.rows(ids) if hasattr(emb, "rows") else emb.weight.index_select(0, ids).float()

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # The residual stream stays fp32 (576 numbers: free), only matmul inputs are rounded to
        # the activation dtype: closer to the fp32 reference than a bf16 stream.
        return F.rms_norm(x, self._norm_shape, weight, self.shape.norm_eps).to(self._dtype)

    def forward(self, x: torch.Tensor, logits: str = "last") -> torch.Tensor | None:
        """x: token ids `[T]` or input embeddings `[T, dim]`, placed after the cached positions.
        Returns logits `[1, vocab]` for the last position ("last"), `[T, vocab]` ("all"), or None."""
        s, cache = self.shape, self.cache
        if x.dtype == torch.long:
            x = self.embedding_rows(x)
        else:
            x = x.float()
        T, start = x.shape[0], cache.length
        end = start + T
        cache.reserve(end)
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        H, KV, D = s.n_heads, s.n_kv_heads, s.head_dim
        G, half, qk_heads = H // KV, D // 2, H + KV
        mask = None
        if T > 1:
            # Query row (g, t) sees the cached positions and its own prefix. Additive, not boolean:
            # SDPA on CPU is faster with it (measured ~20% for 21 rows over 1272 positions).
            causal = torch.ones(T, end, dtype=torch.bool).tril(diagonal=start).repeat(G, 1)
            mask = torch.zeros(causal.shape, dtype=cache.dtype).masked_fill_(~causal, float("-inf"))[None, None]
        # A decode step is ~20 small ops a layer, so per-op Python costs add up (measured: 0.75 ms of
        # a ~22 ms step): lookups hoisted out of the loop, and the projections' forward called
        # directly, without nn.Module's hook machinery (none are registered on them).
        cos, sin = cos[:, None], sin[:, None]
        norm = self._norm
        keys, values = cache.k, cache.v
        head_shape, eps = (D,), s.norm_eps
        for i, layer in enumerate(self.layers):
            h = norm(x, layer.attention_norm)
            qkv = layer.wqkv.forward(h)
            if layer.bqkv is not None:
                qkv = qkv + layer.bqkv
            qk = qkv[:, : qk_heads * D].view(T, qk_heads, D)
            if layer.q_norm is not None:  # Qwen3: each head of Q and K normed before RoPE
                qk = torch.cat([F.rms_norm(qk[:, :H].float(), head_shape, layer.q_norm, eps),
                                F.rms_norm(qk[:, H:].float(), head_shape, layer.k_norm, eps)], dim=1).to(qkv.dtype)
            qk = qk * cos + qk.roll(half, -1) * sin
            keys[i, :, start:end] = qk[:, H:].transpose(0, 1)
            values[i, :, start:end] = qkv[:, qk_heads * D :].view(T, KV, D).transpose(0, 1)
            # [T, H, D] -> [KV, G*T, D]: the query heads of one KV head are rows of one SDPA call
            q = qk[:, :H].view(T, KV, G, D).permute(1, 2, 0, 3).reshape(1, KV, G * T, D)
            attn = F.scaled_dot_product_attention(q, keys[i : i + 1, :, :end], values[i : i + 1, :, :end], attn_mask=mask)
            attn = attn.view(KV, G, T, D).permute(2, 0, 1, 3).reshape(T, H * D)
            x = x + layer.wo.forward(attn)  # fp32 + bf16 -> fp32
            h = norm(x, layer.ffn_norm)
            gate, up = layer.w13.forward(h).chunk(2, dim=-1)
            x = x + layer.w2.forward(F.silu(gate) * up)
        cache.length = end
        if logits == "none":
            return None
        if logits == "last":
            x = x[-1:]
        return self.logits(F.rms_norm(x, self._norm_shape, self.norm, self.shape.norm_eps))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h: the final normed hidden states in fp32 (the head's input is their bf16 rounding)."""
        if self.exact_head is not None:
            return self.exact_head(h)
        return self.rescored(h, self.output(h.to(self._dtype)))

    def rescored(self, h: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The head's logits for h, with the likeliest re-scored exactly where the layout says so."""
        if not self.layout.head.endswith("+exact"):
            return logits
        # The approximate head only nominates; the candidates' logits are recomputed from the
        # tied embedding rows and the fp32 hidden state, so the likely tokens (all that greedy,
        # top-k and top-p look at) score as with the unquantized head on unrounded input.
        T = h.shape[0]
        idx = logits.topk(RESCORED_CANDIDATES, dim=-1, sorted=False).indices  # [T, k]
        rows = self.embedding_rows(idx.reshape(-1)).view(T, RESCORED_CANDIDATES, -1)
        exact = torch.bmm(rows, h.float()[:, :, None]).squeeze(-1)
        return logits.float().scatter_(-1, idx, exact)
