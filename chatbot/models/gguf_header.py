"""The few facts a model list shows, read from a GGUF file's header: architecture, quantization,
context length. `gguf.GGUFReader` builds every metadata array (a 50k-token vocabulary takes it
seconds); this reads the scalars and seeks past the arrays, so listing many files stays quick.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (little-endian)."""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GGUF"
# value type id -> struct format of a scalar (8 = string, 9 = array)
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9


class NotGGUF(ValueError):
    pass


@dataclass
class GGUFHeader:
    metadata: dict  # scalar and string values (arrays left out)
    tensor_types: Counter  # ggml type name -> count of 2-D+ tensors

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "?"))

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def quantization(self) -> str:
        """general.file_type's name (Q4_K_M...), else the most common tensor type."""
        from gguf import LlamaFileType

        file_type = self.metadata.get("general.file_type")
        if file_type is not None:
            try:
                return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                pass
        return self.tensor_types.most_common(1)[0][0] if self.tensor_types else "?"


class _Cursor:
    """Reads from a memory map by offset (no per-value file calls: a vocabulary is ~100k strings)."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def read(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.at + size > len(self.data):
            raise NotGGUF("truncated header")
        value = struct.unpack_from("<" + fmt, self.data, self.at)[0]
        self.at += size
        return value

    def string(self) -> str:
        length = self.read("Q")
        if self.at + length > len(self.data):
            raise NotGGUF("truncated header")
        text = bytes(self.data[self.at : self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def value(self, kind: int):
        if kind in SCALARS:
            return self.read(SCALARS[kind])
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            item, count = self.read("I"), self.read("Q")
            if item == STRING:
                unpack, data, at = struct.Struct("<Q").unpack_from, self.data, self.at
                for _ in range(count):
                    at += 8 + unpack(data, at)[0]
                self.at = at
            elif item in SCALARS:
                self.at += count * struct.calcsize("<" + SCALARS[item])
            else:
                raise NotGGUF(f"nested array of type {item}")
            return None
        raise NotGGUF(f"unknown value type {kind}")


def read_header(path: Path) -> GGUFHeader:
    import mmap

    from gguf import GGMLQuantizationType

    with open(path, "rb") as handle:
        if handle.read(4) != MAGIC:
            raise NotGGUF(f"{path.name} is not a GGUF file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cursor = _Cursor(data)
            cursor.at = 4
            version = cursor.read("I")
            if version < 2:
                raise NotGGUF(f"GGUF version {version} (too old)")
            n_tensors, n_kv = cursor.read("Q"), cursor.read("Q")
            metadata = {}
            for _ in range(n_kv):
                key = cursor.string()
                value = cursor.value(cursor.read("I"))
                if value is not None:
                    metadata[key] = value
            types: Counter = Counter()
            for _ in range(n_tensors):
                cursor.string()
                dims = cursor.read("I")
                cursor.at += 8 * dims
                kind = cursor.read("I")
                cursor.read("Q")  # offset
                if dims >= 2:
                    try:
                        types[GGMLQuantizationType(kind).name] += 1
                    except ValueError:
                        types[f"type{kind}"] += 1
    return GGUFHeader(metadata, types)


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False
