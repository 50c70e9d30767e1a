"""Raw GGUF tensors for the fast path: quantized blocks unpacked into (q, scale, offset) arrays,
without dequantizing, so they can be repacked exactly into torch's int4 layout.

Block formats (ggml): Q4_1 = 32 weights as `d * q + m` (fp16 d, fp16 m, 16 bytes of nibbles: the
low nibble of byte j is weight j, the high nibble weight j + 16); Q8_0 = 32 weights as `d * q`
(fp16 d, 32 int8). llama.cpp's converter permutes the rows of attn_q / attn_k for its RoPE layout;
`unpermute_rows` undoes that (as transformers' GGUF loader does) so rows match the HF layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GROUP = 32


@dataclass(frozen=True)
class LlamaShape:
    """What the fast model needs to know about a Llama-family checkpoint."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    norm_eps: float
    rope_theta: float
    max_seq_len: int
    tie_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @classmethod
    def from_hf_config(cls, config) -> "LlamaShape":
        rope = getattr(config, "rope_parameters", None) or {}
        theta = rope.get("rope_theta") if isinstance(rope, dict) else None
        return cls(
            vocab_size=int(config.vocab_size),
            dim=int(config.hidden_size),
            n_layers=int(config.num_hidden_layers),
            n_heads=int(config.num_attention_heads),
            n_kv_heads=int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads),
            hidden_dim=int(config.intermediate_size),
            norm_eps=float(config.rms_norm_eps),
            rope_theta=float(theta or getattr(config, "rope_theta", 10000.0)),
            max_seq_len=int(config.max_position_embeddings),
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


@dataclass
class RawTensor:
    name: str
    kind: str  # "Q4_1" | "Q8_0" | "F32" | "F16" | ...
    rows: int  # output features (ggml ne1)
    cols: int  # input features (ggml ne0)
    data: np.ndarray  # [rows, bytes per row] for quantized kinds, [rows, cols] otherwise

    def q4_1(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q uint8 [rows, cols] in 0..15, d float32 [rows, cols/32], m float32 [rows, cols/32])."""
        assert self.kind == "Q4_1", self.kind
        blocks = self.data.reshape(self.rows, self.cols // GROUP, 20)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0]
        nibbles = blocks[..., 4:20]
        q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(self.rows, self.cols)
        return torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(d.astype(np.float32)), torch.from_numpy(m.astype(np.float32))

    def q8_0(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q int8 [rows, cols], d float32 [rows, cols/32])."""
        assert self.kind == "Q8_0", self.kind
        blocks = self.data.reshape(self.rows, self.cols // GROUP, 34)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0]
        q = np.ascontiguousarray(blocks[..., 2:34]).view(np.int8).reshape(self.rows, self.cols)
        return torch.from_numpy(q.copy()), torch.from_numpy(d.astype(np.float32))

    def dequantize(self) -> torch.Tensor:
        """float32 [rows, cols] (or [cols] for a vector), exactly as ggml dequantizes."""
        if self.kind == "Q4_1":
            q, d, m = self.q4_1()
            g = q.view(self.rows, -1, GROUP).float()
            return (g * d[..., None] + m[..., None]).view(self.rows, self.cols)
        if self.kind == "Q8_0":
            q, d = self.q8_0()
            return (q.view(self.rows, -1, GROUP).float() * d[..., None]).view(self.rows, self.cols)
        if self.kind in ("F32", "F16", "BF16"):
            array = np.asarray(self.data)
            if self.kind == "BF16":
                array = array.view(np.uint16).astype(np.uint32) << 16
                array = array.view(np.float32)
            t = torch.from_numpy(array.astype(np.float32))
            return t.reshape(self.rows, self.cols) if self.rows > 1 else t.reshape(self.cols)
        raise ValueError(f"{self.name}: GGUF type {self.kind} is not supported by the fast path")

    def take_rows(self, order: torch.Tensor) -> "RawTensor":
        data = np.asarray(self.data).reshape(self.rows, -1)[order.numpy()]
        return RawTensor(self.name, self.kind, self.rows, self.cols, data)


def unpermute_order(rows: int, n_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's Q/K permutation: hf[i] = gguf[order[i]]."""
    head_dim = rows // n_heads
    return torch.arange(rows).view(n_heads, head_dim // 2, 2).transpose(1, 2).reshape(-1)


class GGUFWeights:
    """A Llama GGUF file: its shape and its tensors by HF-like role, rows already un-permuted."""

    def __init__(self, path: str | Path):
        from gguf import GGUFReader

        self.path = Path(path)
        self.reader = GGUFReader(str(self.path))
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.architecture = self._field("general.architecture")
        arch = self.architecture
        n_heads = int(self._field(f"{arch}.attention.head_count"))
        embed = self.tensors["token_embd.weight"]
        self.shape = LlamaShape(
            vocab_size=int(embed.shape[1]),
            dim=int(self._field(f"{arch}.embedding_length")),
            n_layers=int(self._field(f"{arch}.block_count")),
            n_heads=n_heads,
            n_kv_heads=int(self._field(f"{arch}.attention.head_count_kv", n_heads)),
            hidden_dim=int(self._field(f"{arch}.feed_forward_length")),
            norm_eps=float(self._field(f"{arch}.attention.layer_norm_rms_epsilon")),
            rope_theta=float(self._field(f"{arch}.rope.freq_base", 10000.0)),
            max_seq_len=int(self._field(f"{arch}.context_length")),
            tie_embeddings="output.weight" not in self.tensors,
        )

    def _field(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise KeyError(f"{self.path.name}: no {key} in the GGUF metadata")
            return default
        value = field.contents()
        return value

    def raw(self, name: str) -> RawTensor:
        t = self.tensors[name]
        cols = int(t.shape[0])
        rows = int(t.n_elements // cols)
        raw = RawTensor(name, t.tensor_type.name, rows, cols, np.asarray(t.data).reshape(rows, -1))
        if name.endswith("attn_q.weight"):
            raw = raw.take_rows(unpermute_order(rows, self.shape.n_heads))
        elif name.endswith("attn_k.weight"):
            raw = raw.take_rows(unpermute_order(rows, self.shape.n_kv_heads))
        return raw

    def layer(self, i: int, role: str) -> RawTensor:
        """role: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, attn_norm, ffn_norm."""
        return self.raw(f"blk.{i}.{role}.weight")

    def embedding(self) -> RawTensor:
        return self.raw("token_embd.weight")

    def output(self) -> RawTensor:
        return self.raw("output.weight" if "output.weight" in self.tensors else "token_embd.weight")

    def output_norm(self) -> RawTensor:
        return self.raw("output_norm.weight")
