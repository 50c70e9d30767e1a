"""The token embedding read from the GGUF file itself, a few rows at a time.

The embedding is needed one row per token (and 64 rows a step for the head's exact re-scoring),
never whole: keeping it in memory beside the int8 head (which has to be a matrix for its kernel)
held the same 28 MB twice. Rows are read with `pread` (the page cache keeps them, not this
process's memory: a memory map would count every touched page in RSS) and decoded by gguf's own
`dequantize`, so they are exact for every type the file may store them in.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class RowsAt:
    """Where a 2-D tensor's rows are in a GGUF file: its data offset, type and shape."""

    offset: int
    kind: str
    rows: int
    cols: int

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def row_bytes(self) -> int:
        from gguf import GGMLQuantizationType
        from gguf.constants import GGML_QUANT_SIZES

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.kind]]
        return self.cols // block * size


class FileEmbedding(nn.Module):
    """nn.Embedding's lookups (and `rows`, fp32) over the rows of a GGUF tensor on disk."""

    def __init__(self, path: str | Path, at: RowsAt, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        from gguf import GGMLQuantizationType

        self.path, self.at, self.dtype = Path(path), at, dtype
        self.num_embeddings, self.embedding_dim = at.rows, at.cols
        self._qtype = GGMLQuantizationType[at.kind]
        self._row_bytes = at.row_bytes
        self._fd = os.open(self.path, os.O_RDONLY)
        if os.fstat(self._fd).st_size < at.offset + at.rows * self._row_bytes:
            os.close(self._fd)
            raise ValueError(f"{self.path.name}: shorter than its token embedding")

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """float32 rows `[len(ids), dim]`, exact (gguf's dequantize of the file's blocks)."""
        from gguf.quants import dequantize

        wanted = ids.reshape(-1).tolist()
        if wanted and not 0 <= min(wanted) <= max(wanted) < self.num_embeddings:
            raise IndexError(f"token id out of range (vocabulary of {self.num_embeddings})")
        size, base = self._row_bytes, self.at.offset
        data = b"".join(os.pread(self._fd, size, base + i * size) for i in wanted)
        raw = np.frombuffer(data, dtype=np.uint8).reshape(len(wanted), size)
        if self.at.kind == "Q8_0":  # the common case, decoded here as gguf does (its generic path costs ~1 ms a step)
            blocks = raw.reshape(-1, 34)
            scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
            rows = (blocks[:, 2:].view(np.int8).astype(np.float32) * scales).reshape(len(wanted), self.embedding_dim)
        else:
            rows = np.asarray(dequantize(raw, self._qtype), dtype=np.float32).reshape(len(wanted), self.embedding_dim)
        return torch.from_numpy(rows.copy() if not rows.flags.writeable else rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows(ids).view(*ids.shape, self.embedding_dim).to(self.dtype)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def extra_repr(self) -> str:
        return f"{self.path.name}, {self.at.kind}, rows={self.num_embeddings}, dim={self.embedding_dim}"
