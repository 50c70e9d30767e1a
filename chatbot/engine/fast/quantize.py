"""Weight-only quantized linear layers on torch's native CPU kernels, and handlers that swap a
model's `nn.Linear`s for them (gpt-fast style).

- `Int4Linear`: groups of 32, `_weight_int4pack_mm_for_cpu`, which dequantizes `(q - 8) * scale +
  zero`. GGUF Q4_1 stores `d * q + m`, so scale = d and zero = m + 8 d repack it exactly (up to
  rounding d and m to the activation dtype, as a bf16 copy of the weights also rounds). Q4_0 and
  Q4_K map the same way; 5- and 8-bit types (Q5_0, Q5_1, Q5_K, Q8_0) add a second int4 plane
  (their high bits times 16 d), summed by a second kernel call: exact as well.
- `DenseLinear`: a projection with no int4 form (Q6_K, float types), dense; mapped from the cache
  file where the native kernels decode (only long prefills then read it).
- `SplitLinear`: projections of one fused matmul (Q/K/V, gate/up) whose GGUF types differ (a
  Q4_K_M file mixes them), each in its own form, outputs concatenated.
- `Int8Linear`: one scale per output row, `_weight_int8pack_mm` (used for the Q8_0 output head,
  re-quantized per row; or any dense weight).
- `Q8Embedding`: Q8_0 rows looked up exactly (int8 + one fp32 scale per 32).

The int4/int8 kernels cost the same per row of input, so they pay at decode (one row) and for short
prefills; a prefill of many tokens goes through a dense copy of the weights when the layer has one
(`dense=True`), else through the same kernel. The bf16 copy is multiplied in fp32 where the CPU has
no bf16 matmul (`dense_linear`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from chatbot.engine.fast.model import UninitLinear
from chatbot.engine.fast.pages import release

GROUP = 32
# The weight-only kernels cost the same per input row, a dense matmul mostly per weight read: from
# this many rows on, a layer with a dense copy uses it. Below it the copy (memory-mapped) is never
# touched; a long prompt (a resumed conversation) reads it one projection at a time, each one's
# pages given back after its matmul (pages.py), so the copies never stay in RSS.
DENSE_MIN_ROWS = 64


@functools.cache
def bf16_matmul_is_slow() -> bool:
    """torch multiplies bf16 matrices through oneDNN only where the CPU has bf16 support (AVX-512
    BW and up); elsewhere through a generic kernel: measured 6.5 GFLOPS against fp32's 58 on the
    AMD EPYC Zen 3 (AVX2), 1 thread, for a prefill-sized [1500, 576] x [576, 3072]."""
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch without the query: fp32 is never the slow one
        return True


def dense_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight.T; bf16 operands are multiplied in fp32 where bf16 matmul is slow (the result
    rounded back: the same numbers up to the summation order, as bf16 matmul accumulates in fp32)."""
    if weight.dtype == torch.bfloat16 and bf16_matmul_is_slow():
        return F.linear(x.float(), weight.float()).to(x.dtype)
    return F.linear(x, weight)


def pack_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype):
    """q uint8/int [N, K] in 0..15, scale/zero [N, K/32] -> (packed, scales_and_zeros [K/32, N, 2])."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
    scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()
    return packed, scales_and_zeros


def plane_to_int4(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor, dtype: torch.dtype):
    """GGUF Q4_1 (w = d q + m) -> int4 kernel form (w = (q - 8) scale + zero)."""
    return pack_int4(q, d, m + 8 * d, dtype)


def quantize_int4(weight: torch.Tensor, dtype: torch.dtype):
    """Min/max int4 quantization of a dense weight (for checkpoints that are not GGUF Q4_1)."""
    n, k = weight.shape
    groups = weight.float().view(n, k // GROUP, GROUP)
    lo, hi = groups.amin(-1), groups.amax(-1)
    d = ((hi - lo) / 15).clamp(min=1e-8)
    q = ((groups - lo[..., None]) / d[..., None]).round().clamp(0, 15).to(torch.uint8).view(n, k)
    return plane_to_int4(q, d, lo, dtype)


q4_1_to_int4 = plane_to_int4  # the Q4_1 form is the plane form


def quantize_int8_rows(weight: torch.Tensor, dtype: torch.dtype):
    """Symmetric int8 with one scale per output row."""
    w = weight.float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    return q, scale.to(dtype)


class Int4Linear(nn.Module):
    """planes=2: a second packed weight (`weight_hi`, `scales_and_zeros_hi`) added to the first."""

    def __init__(self, in_features: int, out_features: int, dtype=torch.bfloat16, dense: bool = False, planes: int = 1):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // GROUP, out_features, 2, dtype=dtype))
        hi = planes > 1
        self.register_buffer("weight_hi", torch.empty(out_features, in_features // 2, dtype=torch.uint8) if hi else None)
        self.register_buffer("scales_and_zeros_hi", torch.empty(in_features // GROUP, out_features, 2, dtype=dtype) if hi else None)
        self.register_buffer("dense", torch.empty(out_features, in_features, dtype=dtype) if dense else None)
        self.dense_mapped = False  # `dense` is mapped from the cache file: its pages go back after use

    @property
    def planes(self) -> int:
        return 1 if self.weight_hi is None else 2

    def drop_packed(self) -> None:
        """Keep only the dense copy (the packed weights never read: the native kernels run the
        forwards they would serve)."""
        self.weight = self.weight_hi = self.scales_and_zeros = self.scales_and_zeros_hi = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and (self.weight is None or x.shape[0] >= DENSE_MIN_ROWS):
            return mapped_linear(x, self.dense, self.dense_mapped)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight, GROUP, self.scales_and_zeros)
        if self.weight_hi is not None:
            y = y + torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.weight_hi, GROUP, self.scales_and_zeros_hi)
        return y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, planes={self.planes}, dense={self.dense is not None}"


def mapped_linear(x: torch.Tensor, weight: torch.Tensor, mapped: bool) -> torch.Tensor:
    """dense_linear; a weight mapped from the cache file gives its pages back after (pages.py)."""
    y = dense_linear(x, weight)
    if mapped:
        release(weight)
    return y


class DenseLinear(UninitLinear):
    """A projection kept dense (a type with no int4 form, Q6_K or a float type). Where the native
    kernels decode they read the file's own blocks, so only long prefills read this weight: it is
    then mapped from the cache file and its pages go back after each use (`mapped`), as the
    Int4Linear prefill copies do; on the torch path it is read into memory (every step reads it)."""

    mapped = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mapped or x.shape[0] >= DENSE_MIN_ROWS:  # a long prefill: as the prefill copies
            return mapped_linear(x, self.weight, self.mapped)
        return F.linear(x, self.weight)


class SplitLinear(nn.Module):
    """Several projections of the same input, each in its own form, outputs concatenated."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part.forward(x) for part in self.parts], dim=-1)


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype=torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales)


class Q8Embedding(nn.Module):
    """GGUF Q8_0 rows (int8 + a scale per 32), dequantized on lookup: exact."""

    def __init__(self, num: int, dim: int, dtype=torch.bfloat16):
        super().__init__()
        self.dtype = dtype
        self.register_buffer("weight", torch.empty(num, dim, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(num, dim // GROUP, dtype=torch.float32))

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 rows, exact."""
        q = self.weight.index_select(0, ids).float().view(len(ids), -1, GROUP)
        return (q * self.scales.index_select(0, ids)[..., None]).view(len(ids), -1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids).to(self.dtype)


# -- handlers: swap nn.Linear / nn.Embedding for packed modules -----------------------------------


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def int4_from_planes(planes, dtype, dense: bool) -> Int4Linear:
    """planes: one or two (q, d, m) of GGUF blocks (gguf_weights.RawTensor.int4_planes), exact."""
    from chatbot.engine.fast.gguf_weights import planes_to_dense

    q = planes[0][0]
    module = Int4Linear(q.shape[1], q.shape[0], dtype, dense=dense, planes=len(planes))
    module.weight, module.scales_and_zeros = plane_to_int4(*planes[0], dtype)
    if len(planes) > 1:
        module.weight_hi, module.scales_and_zeros_hi = plane_to_int4(*planes[1], dtype)
    if dense:
        module.dense = planes_to_dense(planes).to(dtype)
    return module


def int4_from_dense(weight: torch.Tensor, dtype, dense: bool) -> Int4Linear:
    module = Int4Linear(weight.shape[1], weight.shape[0], dtype, dense=dense)
    module.weight, module.scales_and_zeros = quantize_int4(weight, dtype)
    if dense:
        module.dense = weight.to(dtype)
    return module


def int4_head_from_dense(weight: torch.Tensor, dtype) -> Int4Linear:
    return int4_from_dense(weight, dtype, dense=False)


def int8_from_dense(weight: torch.Tensor, dtype) -> Int8Linear:
    module = Int8Linear(weight.shape[1], weight.shape[0], dtype)
    module.weight, module.scales = quantize_int8_rows(weight, dtype)
    return module


def q8_embedding(q: torch.Tensor, d: torch.Tensor, dtype) -> Q8Embedding:
    module = Q8Embedding(q.shape[0], q.shape[1], dtype)
    module.weight, module.scales = q, d
    return module


class WeightOnlyInt4Handler:
    """Swap every `nn.Linear` of the decoder layers (not the output head) for an `Int4Linear`,
    quantizing its dense weight (min/max per group of 32)."""

    def __init__(self, model: nn.Module, dense_prefill: bool = True):
        self.model, self.dense_prefill = model, dense_prefill

    def convert(self) -> nn.Module:
        dtype = self.model.dtype
        for name, module in list(self.model.named_modules()):
            if isinstance(module, nn.Linear) and name.startswith("layers."):
                _set(self.model, name, int4_from_dense(module.weight.data, dtype, self.dense_prefill))
        return self.model


class WeightOnlyInt8HeadHandler:
    """Swap the output head for an `Int8Linear` (one scale per vocabulary row)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def convert(self) -> nn.Module:
        head = self.model.output
        if isinstance(head, nn.Linear):
            self.model.output = int8_from_dense(head.weight.data, self.model.dtype)
        return self.model
