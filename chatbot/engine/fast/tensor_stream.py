"""A safetensors file written one tensor at a time, as each is made, so that a conversion never
holds all of them (the dense prefill copies are ~2x the GGUF file in bf16).

safetensors puts its JSON header (names, dtypes, shapes, offsets) before the data; the header's
size is known only once every tensor is written, so room for it is reserved up front and the JSON
padded with spaces to fill it (the format allows trailing whitespace in the header; safetensors
itself pads it to a multiple of 8). Written beside the target and renamed into place at `close`:
a reader sees the old file or the whole new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

# generous: an entry is ~110 bytes ("layers.29.w13.parts.1.dense", dtype, shape, two offsets)
ROOM_PER_TENSOR = 192
_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.uint8: "U8", torch.int8: "I8",
           torch.int32: "I32", torch.int64: "I64"}


class TensorStream:
    def __init__(self, path: Path, most_tensors: int):
        self.path = Path(path)
        self.room = 1024 + ROOM_PER_TENSOR * most_tensors
        self.room += -self.room % 8  # the data starts 8-aligned
        fd, self._tmp = tempfile.mkstemp(prefix=".fast-", suffix=".safetensors", dir=self.path.parent)
        self._file = os.fdopen(fd, "wb")
        self._file.seek(8 + self.room)
        self._entries: dict[str, dict] = {}
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        data = tensor.detach().contiguous()
        size = data.numel() * data.element_size()
        if size:
            self._file.write(memoryview(data.view(-1).view(torch.uint8).numpy()))
        self._entries[name] = {"dtype": _DTYPES[data.dtype], "shape": list(data.shape),
                               "data_offsets": [self._offset, self._offset + size]}
        self._offset += size

    def close(self, metadata: dict[str, str] | None = None) -> None:
        header = dict(self._entries)
        if metadata:
            header["__metadata__"] = metadata
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) > self.room:
            self.abort()
            raise ValueError(f"{self.path.name}: header of {len(text)} bytes, room for {self.room}")
        self._file.seek(0)
        self._file.write(self.room.to_bytes(8, "little") + text + b" " * (self.room - len(text)))
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        Path(self._tmp).unlink(missing_ok=True)
