"""The compiled kernels, loaded once per process, and the instruction set they run with.

`CHATBOT_NATIVE` chooses: `auto` (the best this CPU runs), `avx512vnni`, `avx2`, `generic`
(portable C) or `off` (decode through torch). Asking for an instruction set the CPU lacks is
refused with one line, not run into a SIGILL.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import lru_cache

from chatbot.engine.native import build
from chatbot.errors import UserError

ISAS = ("generic", "avx2", "avx512vnni")  # the kernels' ISA_* numbering
CHOICES = ("auto", "off", *ISAS)


class QMat(ctypes.Structure):
    _fields_ = [("w", ctypes.c_void_p), ("type", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32)]


class Q8Rows(ctypes.Structure):
    _fields_ = [("q", ctypes.c_void_p), ("d", ctypes.c_void_p), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32),
                ("per_row", ctypes.c_int32)]


class LayerWeights(ctypes.Structure):
    _fields_ = [("q", QMat), ("k", QMat), ("v", QMat), ("o", QMat), ("gate", QMat), ("up", QMat), ("down", QMat),
                ("attn_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p),
                ("qkv_bias", ctypes.c_void_p), ("q_norm", ctypes.c_void_p), ("k_norm", ctypes.c_void_p)]


class ModelWeights(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int32), ("dim", ctypes.c_int32), ("n_heads", ctypes.c_int32),
                ("n_kv_heads", ctypes.c_int32), ("head_dim", ctypes.c_int32), ("hidden", ctypes.c_int32),
                ("eps", ctypes.c_float), ("layers", ctypes.POINTER(LayerWeights)), ("final_norm", ctypes.c_void_p),
                ("output", QMat), ("head", Q8Rows)]


@dataclass(frozen=True)
class Kernels:
    lib: ctypes.CDLL
    isa: str

    @property
    def isa_id(self) -> int:
        return ISAS.index(self.isa)


def requested() -> str:
    choice = os.environ.get("CHATBOT_NATIVE", "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise UserError(f"CHATBOT_NATIVE={choice!r}: choose one of {', '.join(CHOICES)}")
    return choice


@lru_cache(maxsize=1)
def _open() -> ctypes.CDLL | None:
    if not build.is_current():
        return None
    lib = ctypes.CDLL(str(build.LIBRARY))  # read at call time: tests point it elsewhere
    lib.nd_cpu_isas.restype = ctypes.c_int
    lib.nd_forward.restype = ctypes.c_int
    lib.nd_forward.argtypes = [ctypes.POINTER(ModelWeights), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.nd_matmul.restype = ctypes.c_int
    lib.nd_matmul.argtypes = [ctypes.POINTER(QMat), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.nd_gemv.restype = ctypes.c_int
    lib.nd_gemv.argtypes = [ctypes.POINTER(QMat), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.nd_rows.restype = ctypes.c_int
    lib.nd_rows.argtypes = [ctypes.POINTER(QMat), ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.nd_head.restype = ctypes.c_int
    lib.nd_head.argtypes = [ctypes.POINTER(Q8Rows), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


def runnable_isas() -> list[str]:
    lib = _open()
    if lib is None:
        return []
    mask = lib.nd_cpu_isas()
    return [isa for i, isa in enumerate(ISAS) if mask & (1 << i)]


def kernels(choice: str | None = None) -> tuple[Kernels | None, str | None]:
    """The kernels to decode with, or None and why not (None: off by choice, say nothing)."""
    choice = choice or requested()
    if choice == "off":
        return None, None
    lib = _open()
    if lib is None:
        return None, "native decode kernels are not built (make builds them; no C compiler?): decoding through torch"
    runnable = runnable_isas()
    if choice == "auto":
        best = runnable[-1]
        if best == "generic":  # portable C is slower than torch's own kernels: only when asked for
            return None, "this CPU has no AVX2: decoding through torch"
        return Kernels(lib, best), None
    if choice not in runnable:
        raise UserError(f"CHATBOT_NATIVE={choice}: this CPU cannot run it (it runs {', '.join(runnable)})")
    return Kernels(lib, choice), None
