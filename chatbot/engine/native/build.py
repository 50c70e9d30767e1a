"""Compile `kernels.c` into a shared library beside it: `python -m chatbot.engine.native.build`.

A plain C library loaded with ctypes, not a torch C++ extension: it compiles in about a second
with any C compiler (a cpp_extension compiles against torch's headers for about a minute), does not
depend on torch's C++ ABI, and the kernels only need pointers. OpenMP comes from the runtime torch
has already loaded (same soname), so both share one thread pool. No compiler: one note, exit 0,
and the fast engine keeps decoding through torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "kernels.c"
LIBRARY = HERE / "_kernels.so"
FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-std=c11", "-Wall"]


def compiler() -> str | None:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


def _stamp(library: Path) -> Path:
    return library.with_name(f"{library.name}.source-sha256")


def _source_hash() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()


def is_current(library: Path | None = None) -> bool:
    """Built from today's source. By its content, not by times: a git checkout or rebase rewrites
    kernels.c's time without changing it, and the kernels then looked stale."""
    library = library or LIBRARY
    stamp = _stamp(library)
    return library.is_file() and stamp.is_file() and stamp.read_text().strip() == _source_hash()


def build(library: Path | None = None) -> str | None:
    """Compile if the library is missing or older than the source. Returns why not, or None."""
    library = library or LIBRARY
    if is_current(library):
        return None
    cc = compiler()
    if cc is None:
        return "no C compiler found (set CC)"
    partial = library.with_name(f".{library.name}.{os.getpid()}")
    source_hash = _source_hash()
    result = subprocess.run([cc, *FLAGS, "-o", str(partial), str(SOURCE), "-lm"], capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        first = (result.stderr.strip().splitlines() or ["unknown error"])[0]
        return f"{cc} failed: {first}"
    partial.replace(library)  # whole or not at all: a process loading it never sees half a file
    _stamp(library).write_text(source_hash + "\n")
    return None


def main() -> int:
    problem = build()
    if problem:
        print(f"note: native decode kernels not built ({problem}); the fast engine decodes through torch", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
