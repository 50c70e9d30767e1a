"""Giving back the pages of a memory-mapped tensor once a prefill has read it.

The dense prefill copies (4x an int4 layer in bf16) are mapped from the cache file: a long prompt
reads every layer's, and each page read stays in the process's RSS until the kernel needs the
memory, so one long prompt left the process at ~4x its GGUF file. Released after each use, only
the projection being multiplied is resident; the next long prompt faults the pages in again from
the page cache (the data is the file's: nothing is lost, nothing is written).

Only for file-backed mappings: MADV_DONTNEED on anonymous memory would zero it."""

from __future__ import annotations

import ctypes
import mmap
import sys

import torch

MADV_DONTNEED = 4
_madvise = _malloc_trim = _mallopt = None
if sys.platform.startswith("linux"):
    _libc = ctypes.CDLL(None, use_errno=True)
    _madvise = _libc.madvise
    _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    _malloc_trim = getattr(_libc, "malloc_trim", None)  # glibc's; musl has none
    _mallopt = getattr(_libc, "mallopt", None)
M_MMAP_THRESHOLD = -3


def release(tensor: torch.Tensor) -> None:
    """Drop the whole pages inside `tensor`'s storage from RSS (a tensor mapped from a file, never
    written). Pages it shares with a neighbour are kept: only those wholly inside it go."""
    if tensor.numel():
        release_span(tensor.data_ptr(), tensor.numel() * tensor.element_size())


def release_span(start: int, size: int) -> None:
    """`release` of the bytes start..start+size of a file-backed mapping (a GGUF file's blocks as
    gguf's reader maps them, read-only)."""
    if _madvise is None or size <= 0:
        return
    end = start + size
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _madvise(first, last - first, MADV_DONTNEED)  # advice: a failure only keeps the pages


def mapped_from(path, tensors: list[torch.Tensor]) -> list[bool]:
    """Whether each tensor's storage lies inside a mapping of the file `path` (/proc/self/maps;
    all False where that cannot be read): only those may be released."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return [False] * len(tensors)
    target = str(path)
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            low, high = (int(x, 16) for x in fields[0].split("-"))
            spans.append((low, high))
    found = []
    for t in tensors:
        start = t.data_ptr()
        end = start + t.numel() * t.element_size()
        found.append(any(low <= start and end <= high for low, high in spans))
    return found


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim). Opening a
    tokenizer.json parses it into ~15 MB of JSON values that are freed at once but stay in RSS
    (measured on the bundled model: 29 MB held, 15 MB after this): done before the weights load,
    it keeps them out of the peak too."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def map_large_allocations(threshold: int = 1 << 20) -> None:
    """Allocations from `threshold` bytes on get a mapping of their own, returned to the system
    when freed (glibc's M_MMAP_THRESHOLD; by default the threshold rises with the blocks freed, up
    to 32 MB, and everything under it comes from the heap, which cannot shrink past a block in
    use). Converting a model frees a few tensors of that size per weight while keeping others: on
    the heap they left the bundled model's first start at 5.7x its file, 1.7x with this.
    (Fixed for the rest of the process: glibc has no way back to the moving threshold.)"""
    if _mallopt is not None:
        _mallopt(M_MMAP_THRESHOLD, threshold)
