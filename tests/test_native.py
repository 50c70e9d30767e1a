"""The native decode kernels (chatbot/engine/native): each instruction set this CPU runs, forced,
against an independent reference; the quality guard on the real model per instruction set; the
shared KV cache with the torch path; and every way of not having them (a note, the torch path)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chatbot.engine.fast import closeness
from chatbot.engine.fast.engine import build_fast_engine
from chatbot.engine.native import build, library
from chatbot.engine.native.decoder import NativeDecoder
from chatbot.engine.native.library import ISAS, Kernels, QMat
from chatbot.engine.native.weights import BLOCK_TYPES, regroup
from chatbot.engine.threads import ThreadChoice
from chatbot.errors import UserError
from chatbot.memory.context import ContextBuilder
from chatbot.personas.schema import Persona

PROMPTS = (Path(__file__).parent / "fixtures" / "greedy_prompts.txt").read_text(encoding="utf-8").splitlines()
HELD_OUT = (
    "The old library at the end of the street kept its lamps lit long after the shops had closed. "
    "Students came with notebooks and thermos flasks, and the librarian, who knew every shelf by heart, "
    "would fetch atlases, novels and dusty almanacs for anyone who asked. In winter the radiators "
    "hissed and the windows fogged, and the reading room smelled of paper, wool and strong tea."
)
# The torch int4 path's guard (tests/test_fast.py): the same thresholds hold for every dispatch path.
SAME_TOP_MIN = 0.95
MARGIN_ERROR_MAX = 0.07
PERPLEXITY_RATIO_MAX_ERROR = 0.01


def runnable() -> list[str]:
    return library.runnable_isas()


def isa_params():
    return [pytest.param(isa, marks=pytest.mark.skipif(isa not in runnable(), reason=f"this CPU cannot run {isa}"))
            for isa in ISAS]


needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C compiler: the fast engine decodes through torch")


@pytest.fixture(scope="module")
def kernels_lib():
    if build.compiler() is None:
        pytest.skip("no C compiler: the fast engine decodes through torch")
    problem = build.build()
    assert problem is None, f"make builds the kernels on this machine: {problem}"
    lib = library._open()
    assert lib is not None
    return lib


@needs_compiler
def test_make_builds_the_kernels():
    # make test/run compile them first (Makefile); here they must be current
    assert build.is_current(), "chatbot/engine/native/_kernels.so missing or built from another kernels.c"


@needs_compiler
def test_the_kernels_are_current_by_content_not_by_time(tmp_path, monkeypatch):
    """A checkout that rewrites kernels.c's time leaves them current; a changed source does not."""
    source = tmp_path / "kernels.c"
    source.write_bytes(build.SOURCE.read_bytes())
    monkeypatch.setattr(build, "SOURCE", source)
    target = tmp_path / "_kernels.so"
    for built in (build.LIBRARY, build.LIBRARY.with_name(f"{build.LIBRARY.name}.source-sha256")):  # as make left them
        (tmp_path / built.name).write_bytes(built.read_bytes())
    assert build.is_current(target) and build.build(target) is None  # nothing to rebuild
    os.utime(source, (target.stat().st_mtime + 60,) * 2)
    assert build.is_current(target)
    source.write_bytes(source.read_bytes() + b"\n/* changed */\n")
    assert not build.is_current(target)


# -- kernels against an independent reference ---------------------------------------------------


def quantized_activation(x: np.ndarray) -> np.ndarray:
    """What the kernels multiply: x in runs of 32, each rounded to int16 with scale amax/32767."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(32767)
    q = np.rint(blocks / np.where(d > 0, d, 1))
    return (q * d).reshape(-1)


def blocks_and_weights(kind: str, rows: int, cols: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random blocks of `kind` (random bytes, valid fp16 scales; some subnormal, which are read
    exactly too) and the float32 weights the gguf package dequantizes them to (an independent
    reference)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from gguf_tiny import SCALES, random_blocks

    blocks = random_blocks(rng, kind, rows, cols)
    at = SCALES[kind][0][0]
    per_row = blocks.reshape(rows, cols // (256 if kind.endswith("_K") else 32), -1)
    per_row[:, ::5, at : at + 2] = np.full((2,), 3e-6, dtype=np.float16).view(np.uint8)[:2]
    blocks = np.ascontiguousarray(per_row.reshape(rows, -1))
    weights = dequantize(blocks, GGMLQuantizationType[kind]).reshape(rows, cols).astype(np.float32)
    return blocks, weights


@pytest.mark.parametrize("kind", list(BLOCK_TYPES))
def test_rows_read_from_the_kernels_layout_are_the_files_weights(kernels_lib, kind):
    """nd_rows (a tied embedding read from the head's blocks) gives gguf's own dequantization, for
    rows in a group of four and the row after the last group."""
    rows, cols = 37, 512
    blocks, weights = blocks_and_weights(kind, rows, cols, np.random.default_rng(3))
    packed = np.ascontiguousarray(regroup(blocks, kind))
    ids = np.array([0, 5, 36, 17, 2, 36], dtype=np.int32)
    out = np.zeros((len(ids), cols), dtype=np.float32)
    matrix = QMat(packed.ctypes.data, BLOCK_TYPES[kind], rows, cols)
    assert kernels_lib.nd_rows(ctypes.byref(matrix), ids.ctypes.data, len(ids), out.ctypes.data) == 0
    np.testing.assert_allclose(out, weights[ids], rtol=1e-6, atol=1e-6 * np.abs(weights).max())
    bad = np.array([37], dtype=np.int32)
    assert kernels_lib.nd_rows(ctypes.byref(matrix), bad.ctypes.data, 1, out.ctypes.data) == -1


def test_the_heads_logits_of_several_states_come_from_one_pass(fast_engine):
    """A long prefill's logits over the file's head (nd_matmul's tile kernel) are what one state at a
    time gives (the bundled Q8_0 head: bit for bit)."""
    native = fast_engine.native
    if native is None or not native.struct.output.w:
        pytest.skip("the kernels do not run the file's head here")
    h = torch.randn(9, native.model.shape.dim, generator=torch.Generator().manual_seed(0))
    together = native.head_logits(h)
    assert together.shape == (9, native.model.shape.vocab_size)
    assert torch.equal(together, torch.cat([native.head_logits(h[i : i + 1]) for i in range(9)]))


def test_a_tied_embedding_is_read_from_the_heads_blocks(fast_engine):
    native = fast_engine.native
    if native is None:
        pytest.skip("the kernels do not run here")
    assert native.embeds_from_head  # the bundled model ties its Q8_0 embedding to the head
    ids = torch.tensor([0, 1, 2, 3, 4, 49151, 1234])
    assert torch.equal(native.embedding_rows(ids), native.model.embedding_rows(ids))  # Q8_0: d * q, exact
    with pytest.raises(IndexError, match="token id out of range"):
        native.embedding_rows(torch.tensor([49152]))


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("kind", list(BLOCK_TYPES))
def test_gemv_matches_dequantize_then_matmul(kernels_lib, isa, kind):
    rng = np.random.default_rng(7)
    rows, cols = 37, 512
    type_id = BLOCK_TYPES[kind]
    blocks, weights = blocks_and_weights(kind, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    expected = weights.reshape(rows, cols).astype(np.float64) @ quantized_activation(x).astype(np.float64)
    blocks = np.ascontiguousarray(regroup(blocks, kind))  # the kernels' layout (37 rows: 9 groups and one after)
    y = np.zeros(rows, dtype=np.float32)
    matrix = QMat(blocks.ctypes.data, type_id, rows, cols)
    assert kernels_lib.nd_gemv(ctypes.byref(matrix), x.ctypes.data, y.ctypes.data, 2, ISAS.index(isa)) == 0
    scale = np.abs(expected).max()
    assert np.abs(y - expected).max() <= 1e-4 * scale, (isa, kind)
    # the int16 activation is within float rounding of W x itself (a block read wrongly is whole units off)
    exact = weights.astype(np.float64) @ x.astype(np.float64)
    assert np.abs(y - exact).max() <= 1e-3 * scale, (isa, kind)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_the_vnni_gemv_of_4_bit_groups_is_the_avx2_gemv_and_the_tile_bit_for_bit(kernels_lib, kind):
    """The VNNI GEMV multiplies Q4_0/Q4_1 groups byte by byte on 512-bit registers (the activation
    split into high and low bytes): the same integers as the 16-bit products of AVX2's, reduced to
    the same halves, so the same floats; and so the tile's (several tokens), which match AVX2's."""
    if "avx512vnni" not in runnable():
        pytest.skip("this CPU cannot run avx512vnni")
    rng = np.random.default_rng(11)
    rows, cols, T = 37, 1536, 4  # 9 groups and a row after them; 48 blocks a row
    blocks, _ = blocks_and_weights(kind, rows, cols, rng)
    blocks = np.ascontiguousarray(regroup(blocks, kind))
    matrix = QMat(blocks.ctypes.data, BLOCK_TYPES[kind], rows, cols)
    x = (rng.standard_normal((T, cols)) * rng.uniform(0.01, 30, (T, 1))).astype(np.float32)
    def gemv(isa, row):
        y = np.zeros(rows, dtype=np.float32)
        assert kernels_lib.nd_gemv(ctypes.byref(matrix), np.ascontiguousarray(row).ctypes.data, y.ctypes.data, 2,
                                   ISAS.index(isa)) == 0
        return y
    tiled = np.zeros((T, rows), dtype=np.float32)
    assert kernels_lib.nd_matmul(ctypes.byref(matrix), x.ctypes.data, T, tiled.ctypes.data, 2,
                                 ISAS.index("avx512vnni")) == 0
    for t in range(T):
        vnni = gemv("avx512vnni", x[t])
        assert np.array_equal(vnni, gemv("avx2", x[t])), (kind, t)
        assert np.array_equal(vnni, tiled[t]), (kind, t)


@pytest.mark.parametrize("isa", isa_params())
@pytest.mark.parametrize("per_row", [0, 1], ids=["q8_0-embedding", "int8-head"])
def test_head_matches_its_int8_rows_dequantized(kernels_lib, isa, per_row):
    """The native head reads the fast model's own int8 rows in place: a tied embedding's Q8_0 rows
    (a scale per 32) or the int8 head (a scale per row)."""
    rng = np.random.default_rng(11)
    rows, cols = 203, 576  # a vocabulary that is not a whole number of the kernel's chunks
    q = rng.integers(-127, 128, size=(rows, cols), dtype=np.int8)
    d = (rng.random((rows, 1 if per_row else cols // 32), dtype=np.float32) * 0.02).astype(np.float32)
    x = rng.standard_normal(cols).astype(np.float32)
    weights = (q.reshape(rows, d.shape[1], -1).astype(np.float64) * d[..., None]).reshape(rows, cols)
    expected = weights @ quantized_activation(x).astype(np.float64)
    y = np.zeros(rows, dtype=np.float32)
    head = library.Q8Rows(q.ctypes.data, d.ctypes.data, rows, cols, per_row)
    assert kernels_lib.nd_head(ctypes.byref(head), x.ctypes.data, y.ctypes.data, 2, ISAS.index(isa)) == 0
    assert np.abs(y - expected).max() <= 1e-4 * np.abs(expected).max(), isa


# -- the real model, per instruction set ----------------------------------------------------------


@pytest.fixture(scope="module")
def fast_engine(bundled_fp32, kernels_lib):
    engine = build_fast_engine(bundled_fp32)
    assert engine.native is not None or not runnable(), "the fast engine decodes natively where the kernels run"
    return engine


def with_isa(engine, isa: str):
    native = engine.native
    engine.native = NativeDecoder(engine.model, native.weights, Kernels(native.kernels.lib, isa))
    return engine


def guarded_isas():
    """The instruction sets the guard runs on: every one but portable C, whose integer sums are the
    same as AVX2's (checked against them below, in a fraction of the time); portable C itself where
    the CPU runs nothing else."""
    return [p for p in isa_params() if p.values[0] != "generic" or runnable() == ["generic"]]


@pytest.mark.slow
@pytest.mark.parametrize("isa", guarded_isas())
def test_native_decode_passes_the_quality_guard(fast_engine, bundled_fp32, isa):
    """Teacher-forced closeness to the fp32 reference (the prompts' reference continuations fed one
    token at a time: decode steps through the kernels after a torch prefill) and the perplexity of a
    held-out text decoded token by token, on the thresholds of the torch int4 path."""
    engine = with_isa(fast_engine, isa)
    tokenizer = bundled_fp32.tokenizer
    persona = Persona(name="assistant")
    count = 6
    prompts = [ContextBuilder(tokenizer).build(persona, [], text).prompt_ids for text in PROMPTS[:count]]
    positions = []
    for ids, reply in zip(prompts, closeness.reference_greedy(bundled_fp32, prompts, 24)):
        sequence = ids + reply
        with torch.inference_mode():
            reference_logits = bundled_fp32.model(torch.tensor([sequence])).logits[0]
        positions += closeness.teacher_forced(engine, reference_logits, sequence, len(ids) - 1)
    close = closeness.Closeness.of(positions)
    ratio = closeness.decode_perplexity_ratio(engine, bundled_fp32, tokenizer(HELD_OUT)["input_ids"])
    assert close.positions >= 16 * count
    assert close.same_top >= SAME_TOP_MIN, (isa, close)
    assert close.margin_error_mean <= MARGIN_ERROR_MAX, (isa, close)
    assert abs(ratio - 1) <= PERPLEXITY_RATIO_MAX_ERROR, (isa, ratio)


@pytest.mark.slow
@pytest.mark.skipif(len(runnable()) < 2, reason="portable C is the only instruction set here (the guard runs on it)")
def test_portable_c_computes_what_the_best_instruction_set_computes(fast_engine, bundled_fp32):
    tokenizer = bundled_fp32.tokenizer
    ids = ContextBuilder(tokenizer).build(Persona(name="assistant"), [], "Name a planet.").prompt_ids
    steps = {}
    for isa in ("generic", runnable()[-1]):
        engine = with_isa(fast_engine, isa)
        engine.reset()
        seq, logits = list(ids), []
        for _ in range(4):  # a kernel misreading a block shows at the first step; portable C is slow
            logits.append(engine.next_token_logits(seq))
            seq.append(int(logits[-1].argmax()))
        steps[isa] = torch.stack(logits)
    fast_engine.native = NativeDecoder(fast_engine.model, fast_engine.native.weights,
                                       Kernels(fast_engine.native.kernels.lib, runnable()[-1]))
    generic, best = steps.values()
    # The same integer sums, float sums in another order; last-bit differences then flip a few bf16
    # roundings of K/V and int8 roundings of activations along 30 layers (measured: 0.019 at most
    # on the ten likeliest tokens, which are re-scored in fp32; the rest are the int8 head's bf16
    # outputs). A kernel reading a block wrongly moves logits by whole units.
    top = best.topk(10, dim=-1).indices
    assert torch.equal(generic.argmax(-1), best.argmax(-1))
    assert (generic.gather(-1, top) - best.gather(-1, top)).abs().max().item() < 0.1


@pytest.mark.slow
def test_native_steps_and_torch_prefill_share_the_cache(fast_engine, bundled_fp32):
    """A reply decoded natively, then the next turn prefilled by torch over the kept cache, gives
    what one torch prefill of the whole sequence gives (the cache layouts agree both ways)."""
    tokenizer = bundled_fp32.tokenizer
    ids = ContextBuilder(tokenizer).build(Persona(name="assistant"), [], "Name three colours.").prompt_ids
    fast_engine.reset()
    seq = list(ids)
    for _ in range(12):  # native steps
        seq.append(int(fast_engine.next_token_logits(seq).argmax()))
    follow = seq + tokenizer.encode(" And two more?")
    reused = fast_engine.next_token_logits(follow)  # torch prefill of the new tokens on the native cache
    native = fast_engine.native
    fast_engine.native = None
    try:
        fresh = fast_engine.next_token_logits(follow, reuse=False)  # torch only
    finally:
        fast_engine.native = native
    assert (reused.softmax(-1) - fresh.softmax(-1)).abs().max() < 0.05
    assert reused.topk(3).indices.tolist() == fresh.topk(3).indices.tolist() or reused.argmax() == fresh.argmax()


@pytest.mark.slow
def test_native_steps_after_a_soft_prompt_prefix(fast_engine, bundled_fp32):
    """A soft prompt's KV (computed by torch from its embeddings) and then native steps: the same
    next-token distributions as torch alone over the same prefix."""
    from chatbot.engine.decoding import Prefix

    tokenizer = bundled_fp32.tokenizer
    embeddings = fast_engine.model.embedding_rows(torch.tensor(tokenizer.encode("You are a pirate."))).clone()
    prefix = Prefix("pirate-test", embeddings)
    ids = ContextBuilder(tokenizer).build(Persona(name="assistant"), [], "Who are you?").prompt_ids

    def steps(native) -> torch.Tensor:
        fast_engine.native = native
        fast_engine.reset()
        seq, out = list(ids), []
        for _ in range(6):
            out.append(fast_engine.next_token_logits(seq, prefix=prefix).softmax(-1))
            seq.append(int(out[-1].argmax()))
        return torch.stack(out)

    native = fast_engine.native
    try:
        ours, torch_only = steps(native), steps(None)
    finally:
        fast_engine.native = native
    assert (ours - torch_only).abs().max().item() < 0.05


# -- without the kernels -------------------------------------------------------------------------


def test_no_compiler_is_a_reason_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    target = tmp_path / "_kernels.so"
    assert build.build(target) == "no C compiler found (set CC)"
    assert not target.exists()


def test_head_sizes_the_kernels_take():
    """Q, K and V are chunked end to end in four-row groups: a head size that is not a multiple of 4
    (K/V rows of 2 mod 4 put V mid-group) stays on torch, as does one over 512."""
    from types import SimpleNamespace

    from chatbot.engine.native.decoder import _takes

    assert _takes(SimpleNamespace(head_dim=64)) and _takes(SimpleNamespace(head_dim=512))
    assert not _takes(SimpleNamespace(head_dim=34))
    assert not _takes(SimpleNamespace(head_dim=516))


def test_missing_library_leaves_torch_in_charge_with_one_note(tmp_path, monkeypatch, bundled_fp32):
    monkeypatch.setattr(build, "LIBRARY", tmp_path / "_kernels.so")
    library._open.cache_clear()
    notes: list[str] = []
    try:
        engine = build_fast_engine(bundled_fp32, notes.append)
    finally:
        library._open.cache_clear()
    assert engine.native is None and engine.kernels == "torch"
    assert [n for n in notes if n.startswith("note:")] == [
        "note: native decode kernels are not built (make builds them; no C compiler?): decoding through torch"
    ]


def test_choices_are_checked(monkeypatch, kernels_lib):
    monkeypatch.setenv("CHATBOT_NATIVE", "fastest")
    with pytest.raises(UserError, match="CHATBOT_NATIVE='fastest': choose one of auto, off, generic, avx2, avx512vnni"):
        library.kernels()
    monkeypatch.setenv("CHATBOT_NATIVE", "off")
    assert library.kernels() == (None, None)
    missing = [isa for isa in ISAS if isa not in runnable()]
    if missing:
        monkeypatch.setenv("CHATBOT_NATIVE", missing[0])
        with pytest.raises(UserError, match="this CPU cannot run it"):
            library.kernels()
    monkeypatch.setenv("CHATBOT_NATIVE", "generic")
    chosen, note = library.kernels()
    assert chosen.isa == "generic" and note is None


# -- a user's own GGUF (tiny random files the suite writes) ------------------------------------------


Q4_K_M = {"attn_q": "Q5_0", "attn_k": "Q5_0", "attn_v": "Q6_K", "ffn_down": "Q6_K", "ffn_gate": "Q4_K", "ffn_up": "Q4_K",
          "attn_output": "Q8_0"}  # the mix llama.cpp makes of a small model's Q4_K_M


@pytest.mark.parametrize("kind", ["Q4_K", "Q4_1", "Q5_K", "Q4_K_M"])
def test_a_users_gguf_decodes_natively_and_steps_agree_with_the_prefill(kernels_lib, tmp_path, kind):
    from gguf_tiny import stepped_and_prefilled, write_tiny_gguf

    from chatbot.config import Settings
    from chatbot.runtime import open_runtime

    mixed = kind == "Q4_K_M"
    path = write_tiny_gguf(tmp_path / f"tiny-{kind}.gguf", "llama", "Q4_K" if mixed else kind, seed=3,
                           kinds=Q4_K_M if mixed else None)
    engine = open_runtime(Settings(model=str(path), cache_dir=tmp_path / "cache")).engine
    best = runnable()[-1]
    assert engine.kernels == ("torch" if best == "generic" else f"native-{best}")  # auto never picks portable C
    ids = [5, 70, 100, 33, 200, 9, 41]
    stepped, prefilled = stepped_and_prefilled(engine, ids)  # native steps against one torch prefill
    assert (stepped - prefilled).abs().max().item() < 0.05
    if engine.native is not None:  # and a native prefill (4 tokens a tile, then the rest) against it
        engine.model.cache.length = 0
        with torch.inference_mode():
            native_prefill = engine.native.forward(torch.tensor(ids), logits="all")
        assert native_prefill.shape == prefilled.shape
        assert (native_prefill - prefilled).abs().max().item() < 0.05


def test_a_type_the_kernels_do_not_take_leaves_torch_with_one_note(kernels_lib, tmp_path):
    from gguf_tiny import write_tiny_gguf

    from chatbot.config import Settings
    from chatbot.runtime import open_runtime

    path = write_tiny_gguf(tmp_path / "mixed.gguf", "llama", "Q4_K", seed=4, kinds={"attn_v": "F16"})
    notes: list[str] = []
    engine = open_runtime(Settings(model=str(path), cache_dir=tmp_path / "cache"), notes.append).engine
    assert engine.kernels == "torch"
    assert [n for n in notes if "native" in n] == [
        "note: the native decode kernels do not take blk.0.attn_v: F16: decoding through torch"]


def test_where_the_kernels_run_the_torch_int4_weights_are_not_read(fast_engine, bundled_fp32, monkeypatch):
    """The kernels run every forward the int4 kernel would (under 64 tokens), so those weights stay
    on disk; with CHATBOT_NATIVE=off they are read. (A first start lays the blocks out for the
    kernels before the torch weights load, so it does not read them either: the mixed-file test
    below is one.)"""
    from chatbot.engine.fast.quantize import Int4Linear

    def packed(engine) -> set[bool]:
        return {m.weight is not None for m in engine.model.modules() if isinstance(m, Int4Linear)}

    if fast_engine.native is None:
        pytest.skip("the kernels do not run here")
    again = build_fast_engine(bundled_fp32)
    assert again.native is not None and packed(again) == {False}
    monkeypatch.setenv("CHATBOT_NATIVE", "off")
    assert packed(build_fast_engine(bundled_fp32)) == {True}


def test_laying_out_a_model_removes_another_formats_layout(tmp_path):
    from gguf_tiny import LAYERS, write_tiny_gguf

    from chatbot.engine.native import weights

    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama", "Q4_1", seed=5)
    folder = tmp_path / "fast"
    folder.mkdir()
    stale = folder / "native-v1.safetensors"
    stale.write_bytes(b"an older session's layout")
    built = weights.load_or_build(path, folder, LAYERS)
    assert weights.path_in(folder).is_file() and not stale.exists()
    assert set(built.types.values()) == {"Q4_1"}


def test_a_decode_step_runs_on_the_faster_thread_count_with_the_same_logits(fast_engine):
    """Each step runs on 1 or torch's thread count (engine.threads), torch's count is restored after,
    and the native step's logits do not depend on it: every row is summed by one thread."""
    if fast_engine.native is None:
        pytest.skip("the native kernels do not run on this CPU")
    ids = fast_engine.tokenizer("The sea is")["input_ids"]

    class Forced(ThreadChoice):
        def __init__(self, threads: int):
            super().__init__()
            self.threads = threads

        def pick(self, most: int) -> int:
            super().pick(most)
            return self.threads

    def steps(pick) -> list[torch.Tensor]:
        fast_engine.reset()
        fast_engine.step_threads = Forced(pick) if pick else ThreadChoice()
        seq, out = list(ids), []
        for _ in range(4):
            out.append(fast_engine.next_token_logits(seq))
            seq.append(int(out[-1].argmax()))
        return out

    most = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one, two = steps(1), steps(2)
        steps(None)
        assert torch.get_num_threads() == 2
        assert set(fast_engine.step_threads.seconds) == {1, 2}  # both tried
    finally:
        torch.set_num_threads(most)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def _held_in_memory(engine) -> dict[str, int]:
    """Bytes of each kind of tensor the engine keeps outside its cache files' memory maps (the
    mapped prefill copies and dense projections cost RSS only while a long prefill reads them),
    plus the native layer weights (mapped, but every step reads them all)."""
    from chatbot.engine.fast import quantize as qz

    held: dict[str, int] = {}
    for name, module in engine.model.named_modules():
        mapped = set()
        if isinstance(module, qz.Int4Linear) and module.dense_mapped:
            mapped.add("dense")
        if isinstance(module, qz.DenseLinear) and module.mapped:
            mapped.add("weight")
        for attr, tensor in list(module.named_buffers(recurse=False)) + list(module.named_parameters(recurse=False)):
            if tensor is not None and tensor.device.type != "meta" and attr not in mapped:
                kind = f"layers.{type(module).__name__}.{attr}" if name.startswith("layers.") else f"{name}.{attr}"
                held[kind] = held.get(kind, 0) + tensor.nbytes
    if engine.native is not None:
        held["native layers"] = sum(t.nbytes for t in engine.native.weights.tensors.values())
        held["native copies"] = sum(t.nbytes for t in engine.native._norms) + engine.native.cos.nbytes + engine.native.sin.nbytes
    return held


def test_where_the_kernels_run_a_mixed_file_keeps_no_torch_copy_of_its_layers(kernels_lib, tmp_path, monkeypatch):
    """A Q4_K_M file where the kernels decode: the layers' only weights in memory are the file's
    own blocks the kernels read (no int4 planes or scales, the Q6_K projections' dense weights
    mapped from the cache like the prefill copies); a long prefill through those mapped weights
    gives exactly the torch path's K/V, and gives their pages back."""
    from gguf_tiny import write_tiny_gguf

    from chatbot.config import Settings
    from chatbot.engine.fast import quantize as qz
    from chatbot.runtime import open_runtime

    if runnable()[-1] == "generic":
        pytest.skip("the kernels do not run here")
    path = write_tiny_gguf(tmp_path / "tiny-mixed.gguf", "llama", "Q4_K", seed=6, kinds=Q4_K_M)
    settings = Settings(model=str(path), cache_dir=tmp_path / "cache")
    engine = open_runtime(settings).engine
    assert engine.native is not None
    layers = {kind: size for kind, size in _held_in_memory(engine).items() if kind.startswith("layers.")}
    dense = [m for m in engine.model.layers.modules() if isinstance(m, qz.DenseLinear)]
    assert dense and all(m.mapped for m in dense)  # the Q6_K projections
    assert set(layers) <= {"layers.Block.attention_norm", "layers.Block.ffn_norm"}  # vectors only
    ids = torch.arange(qz.DENSE_MIN_ROWS + 9) % engine.model.shape.vocab_size
    with torch.inference_mode():
        engine.model.cache.length = 0
        native_side = engine.model(ids, logits="all")
    monkeypatch.setenv("CHATBOT_NATIVE", "off")
    torch_side = open_runtime(settings).engine
    assert torch_side.native is None and not any(m.mapped for m in torch_side.model.modules() if isinstance(m, qz.DenseLinear))
    with torch.inference_mode():
        torch_side.model.cache.length = 0
        torch_logits = torch_side.model(ids, logits="all")
    T = len(ids)  # the same layers exactly (every layer's K/V); the heads differ by the activation's
    assert torch.equal(torch_side.model.cache.k[:, :, :T], engine.model.cache.k[:, :, :T])  # rounding:
    assert torch.equal(torch_side.model.cache.v[:, :, :T], engine.model.cache.v[:, :, :T])  # the file's
    assert (torch_logits - native_side).abs().max() < 0.05  # blocks natively, against torch's int8 head


def test_where_the_kernels_run_the_files_own_head_the_int8_head_is_not_read(kernels_lib, tmp_path, monkeypatch):
    """The cache keeps the int8 head for the torch path; where the native layout holds the file's
    own head blocks it is not read at all (a first start and a second), and should the kernels
    then not take the model after all, the torch path gets it back and computes its own logits."""
    from gguf_tiny import write_tiny_gguf

    from chatbot.config import Settings
    from chatbot.engine.fast import loader
    from chatbot.engine.fast.quantize import Int8Linear
    from chatbot.engine.native import decoder
    from chatbot.runtime import open_runtime

    if runnable()[-1] == "generic":
        pytest.skip("the kernels do not run here")
    path = write_tiny_gguf(tmp_path / "tiny.gguf", "llama", "Q4_1", seed=7)
    settings = Settings(model=str(path), cache_dir=tmp_path / "cache")
    read: list[str] = []
    real_read = loader.read_safetensors

    def spy(file, skip=frozenset()):
        tensors, meta = real_read(file, skip)
        read.extend(tensors)
        return tensors, meta

    monkeypatch.setattr(loader, "read_safetensors", spy)
    for start in ("first", "second"):
        read.clear()
        engine = open_runtime(settings).engine
        assert engine.native is not None and engine.model.exact_head is not None and engine.model.output is None
        assert read and not [name for name in read if name.startswith("output.")], start
    monkeypatch.setattr(decoder, "decoder_for", lambda *args, **kwargs: None)
    fallen_back = open_runtime(settings).engine
    assert fallen_back.kernels == "torch" and isinstance(fallen_back.model.output, Int8Linear)
    monkeypatch.undo()
    monkeypatch.setenv("CHATBOT_NATIVE", "off")
    torch_path = open_runtime(settings).engine
    ids = torch.tensor([5, 70, 100, 33])
    with torch.inference_mode():
        assert torch.equal(fallen_back.model(ids), torch_path.model(ids))


def test_where_the_kernels_run_the_model_holds_about_its_file_in_memory(fast_engine, bundled_fp32):
    """What guards the RSS figures in docs/fast.md (1.43x the file on the bundled model, with the
    tokenizer and torch's own code): the tensors a native engine holds outside its memory-mapped
    prefill copies come to ~1.09x the GGUF file (its layer and head blocks, the KV cache,
    RoPE tables). Another copy of the layers (int4 planes: +0.7x; dense: +2x) would break it."""
    from chatbot.engine.loading import bundled_gguf

    if fast_engine.native is None:
        pytest.skip("the kernels do not run here")
    again = build_fast_engine(bundled_fp32)
    held = _held_in_memory(again)
    ratio = sum(held.values()) / bundled_gguf().stat().st_size
    assert ratio < 1.3, {kind: round(size / 2**20, 1) for kind, size in held.items()}


def test_the_bundled_models_head_is_read_from_its_own_q8_0_blocks(fast_engine):
    """The file's head (the tied token_embd, Q8_0) is laid out with the layers and read as the
    layers are: exact, so nothing is re-scored."""
    native = fast_engine.native
    if native is None:
        pytest.skip("the native kernels do not run on this CPU")
    head = native.weights.tensors["head"]
    assert native.weights.types["head"] == "Q8_0" and native.struct.output.w == head.data_ptr()
    assert head.shape == (fast_engine.model.shape.vocab_size, 576 // 32 * 34)
    assert native.has_native_head and not native.head_rescored
