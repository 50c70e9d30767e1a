"""Raw GGUF tensors for the fast path: quantized blocks unpacked into int4 planes `(q, d, m)`
(w = sum over planes of `d * q + m`, q in 0..15, one d and m per group of 32) without
dequantizing, so they repack exactly into torch's int4 layout; every other type is decoded by the
`gguf` package's own dequantize.

Block formats (ggml, `ggml-common.h`); "nibbles" = 16 bytes whose low nibbles are weights 0..15
and high nibbles weights 16..31 of a group of 32:
- Q4_0 (18 B / 32): fp16 d, nibbles; w = d (q - 8).          -> one plane (q, d, -8d)
- Q4_1 (20 B / 32): fp16 d, fp16 m, nibbles; w = d q + m.     -> one plane (q, d, m)
- Q5_0 (22 B / 32): fp16 d, 32 high bits, nibbles; w = d (q - 16), q 5-bit.
- Q5_1 (24 B / 32): fp16 d, fp16 m, 32 high bits, nibbles; w = d q + m.
  -> two planes: the low 4 bits (lo, d, m or -16d) and the high bit (hi, 16d, 0): exact.
- Q8_0 (34 B / 32): fp16 d, 32 int8; q = 16 hi + lo (hi -8..7, lo 0..15)
  -> two planes (lo, d, 0) and (hi + 8, 16d, -128d): exact.
- Q4_K (144 B / 256): fp16 d, fp16 dmin, 12 bytes of 6-bit scales and mins for 8 groups of 32,
  128 bytes of nibbles (bytes 32c..32c+31: low nibbles group 2c, high nibbles group 2c+1);
  w = d sc q - dmin mn.                                        -> one plane (q, d sc, -dmin mn)
- Q5_K (176 B / 256): as Q4_K plus 32 bytes of high bits (bit j of byte l: group j, weight l).
  -> two planes, as Q5_1.
- Q6_K (210 B / 256): scales per 16 weights: no group-of-32 form; decoded and kept dense.
- F32 / F16 / BF16: decoded (dense).
llama.cpp's converter permutes the rows of attn_q / attn_k of Llama-architecture models for its
RoPE layout; `unpermute_order` undoes that (as transformers' GGUF loader does) so rows match the HF
layout. Qwen2/Qwen3 files are not permuted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

GROUP = 32
# general.architecture values the fast model runs (Mistral files say "llama"; newer ones "mistral").
FAST_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
PERMUTED_QK = ("llama", "mistral")
# Tensor types the fast path takes; others (Q2_K, Q3_K, IQ*, TQ*...) go to the reference path.
FAST_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "BF16", "F32")
# How each type reaches the int4 kernel: planes of (q, d, m); absent = decoded to a dense weight.
INT4_PLANES = {"Q4_0": 1, "Q4_1": 1, "Q4_K": 1, "Q5_0": 2, "Q5_1": 2, "Q5_K": 2, "Q8_0": 2}


class NotOnFastPath(ValueError):
    """A GGUF file the fast path cannot take; the message names the tensor and its type (or the
    architecture, or the rope scaling)."""


@dataclass(frozen=True)
class LlamaShape:
    """What the fast model needs to know about a Llama-family checkpoint (Llama, Mistral, Qwen2,
    Qwen3: the same decoder with optional QKV bias, per-head Q/K RMSNorm, RoPE frequency factors)."""

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
    head_size: int = 0  # 0: dim // n_heads (Qwen3 sets its own)
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3
    rope_freq_factors: tuple[float, ...] | None = None  # Llama 3.x: inv_freq divided by these
    architecture: str = "llama"

    @property
    def head_dim(self) -> int:
        return self.head_size or self.dim // self.n_heads

    @property
    def plain_llama(self) -> bool:
        """No bias, no Q/K norm, no frequency factors: what the original Llama forward computes."""
        return not (self.qkv_bias or self.qk_norm or self.rope_freq_factors)

    @classmethod
    def from_hf_config(cls, config, inv_freq: torch.Tensor | None = None) -> "LlamaShape":
        """`inv_freq`: the model's own RoPE frequencies (they carry Llama 3's rope scaling)."""
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float((rope.get("rope_theta") if isinstance(rope, dict) else None) or getattr(config, "rope_theta", 10000.0))
        model_type = getattr(config, "model_type", "llama")
        dim, n_heads = int(config.hidden_size), int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or dim // n_heads)
        factors = None
        if inv_freq is not None:
            plain = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
            ratio = (plain / inv_freq.float()).tolist()
            if any(abs(r - 1) > 1e-6 for r in ratio):
                factors = tuple(ratio)
        context = int(config.max_position_embeddings)
        window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
        if window:  # Mistral's sliding window: the fast forward attends to everything, so stop there
            context = min(context, int(window))
        return cls(
            vocab_size=int(config.vocab_size),
            dim=dim,
            n_layers=int(config.num_hidden_layers),
            n_heads=n_heads,
            n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
            hidden_dim=int(config.intermediate_size),
            norm_eps=float(config.rms_norm_eps),
            rope_theta=theta,
            max_seq_len=context,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            head_size=head_dim if head_dim != dim // n_heads else 0,
            qkv_bias=model_type == "qwen2",
            qk_norm=model_type == "qwen3",
            rope_freq_factors=factors,
            architecture=model_type,
        )


Plane = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # q uint8 [rows, cols], d, m float32 [rows, cols/32]


def _f16(two_bytes: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(two_bytes).view(np.float16)[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] values: low nibbles first, then high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins (llama.cpp get_scale_min_k4)."""
    s = scales.astype(np.uint8)
    sc = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)], axis=-1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


@dataclass
class RawTensor:
    name: str
    kind: str  # "Q4_1" | "Q8_0" | "F32" | "F16" | ...
    rows: int  # output features (ggml ne1)
    cols: int  # input features (ggml ne0)
    data: np.ndarray  # [rows, bytes per row] for quantized kinds, [rows, cols] otherwise

    def _blocks(self, size: int, per: int = GROUP) -> np.ndarray:
        return np.asarray(self.data).reshape(self.rows, self.cols // per, size)

    def int4_planes(self) -> list[Plane] | None:
        """The weight as planes of 4-bit values with a (d, m) per group of 32, exact, or None
        where the type has no such form (Q6_K, floats)."""
        kind, rows, cols = self.kind, self.rows, self.cols
        if kind in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
            size = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24}[kind]
            b = self._blocks(size)
            d = _f16(b[..., 0:2])
            has_m = kind.endswith("_1")
            m = _f16(b[..., 2:4]) if has_m else d * (-8 if kind == "Q4_0" else -16)
            head = 4 if has_m else 2
            hi = None
            if kind.startswith("Q5"):
                hi = np.unpackbits(b[..., head : head + 4], axis=-1, bitorder="little")  # bit j: weight j
                head += 4
            lo = _nibbles(b[..., head : head + 16])
            planes = [(lo, d, m)]
            if hi is not None:
                planes.append((hi, 16 * d, np.zeros_like(d)))
        elif kind == "Q8_0":
            b = self._blocks(34)
            d = _f16(b[..., 0:2])
            q = np.ascontiguousarray(b[..., 2:34]).view(np.int8)
            planes = [((q & 0x0F).astype(np.uint8), d, np.zeros_like(d)),
                      (((q >> 4) + 8).astype(np.uint8), 16 * d, -128 * d)]
        elif kind in ("Q4_K", "Q5_K"):
            b = np.asarray(self.data).reshape(rows, cols // 256, 144 if kind == "Q4_K" else 176)
            d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
            sc, mn = _k_scales(b[..., 4:16])
            scale = (d[..., None] * sc).reshape(rows, -1)
            zero = (-dmin[..., None] * mn).reshape(rows, -1)
            qs = b[..., -128:].reshape(rows, -1, 4, 32)
            lo = np.stack([qs & 0x0F, qs >> 4], axis=3).reshape(rows, -1, 32)  # [rows, groups, 32]
            planes = [(lo, scale, zero)]
            if kind == "Q5_K":
                qh = b[..., 16:48][..., None, :] >> np.arange(8, dtype=np.uint8)[:, None]  # [rows, sb, 8, 32]
                planes.append(((qh & 1).reshape(rows, -1, 32), 16 * scale, np.zeros_like(scale)))
        else:
            return None
        return [(torch.from_numpy(np.ascontiguousarray(q, dtype=np.uint8).reshape(rows, cols)),
                 torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32).reshape(rows, -1)),
                 torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32).reshape(rows, -1)))
                for q, d, m in planes]

    def q4_1(self) -> Plane:
        """(q uint8 [rows, cols] in 0..15, d float32 [rows, cols/32], m float32 [rows, cols/32])."""
        assert self.kind == "Q4_1", self.kind
        return self.int4_planes()[0]

    def q8_0(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q int8 [rows, cols], d float32 [rows, cols/32])."""
        assert self.kind == "Q8_0", self.kind
        blocks = self._blocks(34)
        d = _f16(blocks[..., 0:2])
        q = np.ascontiguousarray(blocks[..., 2:34]).view(np.int8).reshape(self.rows, self.cols)
        return torch.from_numpy(q.copy()), torch.from_numpy(d)

    def dequantize(self) -> torch.Tensor:
        """float32 [rows, cols] (or [cols] for a vector), decoded by gguf's own dequantize."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        if self.kind not in FAST_TYPES:
            raise NotOnFastPath(f"{self.name} is {self.kind}")
        array = dequantize(np.asarray(self.data), GGMLQuantizationType[self.kind])
        t = torch.from_numpy(np.array(array, dtype=np.float32))  # a copy: the file is memory-mapped read-only
        return t.reshape(self.rows, self.cols) if self.rows > 1 else t.reshape(self.cols)

    def row_slice(self, start: int, end: int) -> "RawTensor":
        """Rows start:end (a view of the file's blocks)."""
        data = np.asarray(self.data).reshape(self.rows, -1)[start:end]
        return RawTensor(self.name, self.kind, len(data), self.cols, data)

    def take_rows(self, order: torch.Tensor) -> "RawTensor":
        data = np.asarray(self.data).reshape(self.rows, -1)[order.numpy()]
        return RawTensor(self.name, self.kind, self.rows, self.cols, data)


def planes_to_dense(planes: list[Plane]) -> torch.Tensor:
    """float32 [rows, cols]: sum over planes of d q + m (per group of 32)."""
    rows, cols = planes[0][0].shape
    total = torch.zeros(rows, cols // GROUP, GROUP)
    for q, d, m in planes:
        total += q.view(rows, -1, GROUP).float() * d[..., None] + m[..., None]
    return total.view(rows, cols)


def unpermute_order(rows: int, n_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's Q/K permutation: hf[i] = gguf[order[i]]."""
    head_dim = rows // n_heads
    return torch.arange(rows).view(n_heads, head_dim // 2, 2).transpose(1, 2).reshape(-1)


class GGUFWeights:
    """A Llama-family GGUF file: its shape and its tensors by role, Q/K rows already un-permuted.
    `check()` says (NotOnFastPath) why the fast path cannot take it, before anything is built."""

    def __init__(self, path: str | Path):
        from gguf import GGUFReader

        self.path = Path(path)
        self.reader = GGUFReader(str(self.path))
        self._drop_arrays()
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.architecture = str(self._field("general.architecture"))
        arch = self.architecture
        if arch not in FAST_ARCHITECTURES:
            self.shape = None
            return
        n_heads = int(self._field(f"{arch}.attention.head_count"))
        dim = int(self._field(f"{arch}.embedding_length"))
        key_length = int(self._field(f"{arch}.attention.key_length", dim // n_heads))
        embed = self.tensors["token_embd.weight"]
        self.shape = LlamaShape(
            vocab_size=int(embed.shape[1]),
            dim=dim,
            n_layers=int(self._field(f"{arch}.block_count")),
            n_heads=n_heads,
            n_kv_heads=int(self._field(f"{arch}.attention.head_count_kv", n_heads)),
            hidden_dim=int(self._field(f"{arch}.feed_forward_length")),
            norm_eps=float(self._field(f"{arch}.attention.layer_norm_rms_epsilon")),
            rope_theta=float(self._field(f"{arch}.rope.freq_base", 10000.0)),
            max_seq_len=int(self._field(f"{arch}.context_length")),
            tie_embeddings="output.weight" not in self.tensors,
            head_size=key_length if key_length != dim // n_heads else 0,
            qkv_bias="blk.0.attn_q.bias" in self.tensors,
            qk_norm="blk.0.attn_q_norm.weight" in self.tensors,
            rope_freq_factors=self._rope_factors(arch, key_length),
            architecture=arch,
        )

    def _drop_arrays(self) -> None:
        """gguf's reader keeps a numpy view for every element of each metadata array: the
        tokenizer's vocabulary and merges took 158 MB for the bundled model's 94 MB file, held
        through a conversion. Only scalar fields are read here (the tokenizer is read apart)."""
        from gguf import GGUFValueType

        from chatbot.engine.fast.pages import trim_heap

        fields = self.reader.fields
        for key in [key for key, field in fields.items() if field.types and field.types[0] == GGUFValueType.ARRAY]:
            del fields[key]
        trim_heap()  # those views are many small blocks: freed, they would stay in RSS

    def _field(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise NotOnFastPath(f"no {key} in the GGUF metadata")
            return default
        return field.contents()

    def _rope_factors(self, arch: str, head_dim: int) -> tuple[float, ...] | None:
        """Llama 3.x: llama.cpp stores its rope scaling as the tensor `rope_freqs.weight` (one
        divisor per frequency); linear scaling as metadata. Others (YaRN...) are refused."""
        kind = str(self._field(f"{arch}.rope.scaling.type", "none"))
        if "rope_freqs.weight" in self.tensors:
            if kind not in ("none", "llama3"):
                raise NotOnFastPath(f"rope scaling {kind!r} with frequency factors")
            return tuple(float(f) for f in np.asarray(self.tensors["rope_freqs.weight"].data, dtype=np.float32).reshape(-1))
        if kind == "none":
            return None
        if kind == "linear":
            factor = float(self._field(f"{arch}.rope.scaling.factor", 1.0))
            return None if factor == 1.0 else (factor,) * (head_dim // 2)
        raise NotOnFastPath(f"rope scaling {kind!r}")

    def check(self) -> None:
        """Raise NotOnFastPath naming the first thing the fast path cannot take."""
        if self.shape is None:
            raise NotOnFastPath(f"architecture {self.architecture!r}")
        for t in self.reader.tensors:
            if t.tensor_type.name not in FAST_TYPES:
                raise NotOnFastPath(f"{t.name} is {t.tensor_type.name}")
            if t.name.startswith("blk.") and t.name.endswith(".weight") and len(t.shape) == 2 and int(t.shape[0]) % GROUP:
                raise NotOnFastPath(f"{t.name} has {int(t.shape[0])} columns (not groups of 32)")

    def stop_token_ids(self) -> set[int]:
        """The ids the file's metadata says end a reply: EOS, end of turn, end of message."""
        ids = set()
        for key in ("eos", "eot", "eom"):
            value = self.reader.fields.get(f"tokenizer.ggml.{key}_token_id")
            if value is not None:
                ids.add(int(value.contents()))
        return ids

    def raw(self, name: str) -> RawTensor:
        t = self.tensors[name]
        cols = int(t.shape[0])
        rows = int(t.n_elements // cols)
        raw = RawTensor(name, t.tensor_type.name, rows, cols, np.asarray(t.data).reshape(rows, -1))
        if self.architecture in PERMUTED_QK and rows > 1:
            if name.endswith("attn_q.weight"):
                raw = raw.take_rows(unpermute_order(rows, self.shape.n_heads))
            elif name.endswith("attn_k.weight"):
                raw = raw.take_rows(unpermute_order(rows, self.shape.n_kv_heads))
        return raw

    def release(self, prefix: str) -> None:
        """The file's pages read for the tensors whose names start with `prefix`, given back: gguf's
        reader maps the file read-only, and a conversion reads every block once (without this, the
        whole file stays in RSS beside what is built from it)."""
        from chatbot.engine.fast.pages import release_span

        for name, t in self.tensors.items():
            if name.startswith(prefix):
                release_span(t.data.ctypes.data, t.data.nbytes)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def layer(self, i: int, role: str, kind: str = "weight") -> RawTensor:
        """role: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, attn_norm, ffn_norm,
        attn_q_norm, attn_k_norm; kind: "weight" or "bias"."""
        return self.raw(f"blk.{i}.{role}.{kind}")

    def embedding(self) -> RawTensor:
        return self.raw("token_embd.weight")

    def embedding_at(self):
        """Where the token embedding's rows are in the file (file_rows.RowsAt)."""
        from chatbot.engine.fast.file_rows import RowsAt

        t = self.tensors["token_embd.weight"]
        cols = int(t.shape[0])
        return RowsAt(int(t.data_offset), t.tensor_type.name, int(t.n_elements // cols), cols)

    def output(self) -> RawTensor:
        return self.raw("output.weight" if "output.weight" in self.tensors else "token_embd.weight")

    def output_norm(self) -> RawTensor:
        return self.raw("output_norm.weight")
