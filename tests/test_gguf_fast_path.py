"""GGUF files on the fast path, every quant type and architecture, checked against transformers'
own GGUF loading of the same file (gguf's numpy dequantization: an independent reference). The
files are tiny random models the suite writes itself (tests/gguf_tiny.py): no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from gguf_tiny import LLAMA3_ROPE, random_blocks, vocabulary, write_tiny_gguf

from chatbot.engine.fast import loader
from chatbot.engine.fast import quantize as qz
from chatbot.engine.fast.file_rows import FileEmbedding
from chatbot.engine.fast.gguf_weights import INT4_PLANES, GGUFWeights, NotOnFastPath, RawTensor, planes_to_dense
from chatbot.engine.fast.model import Layout

FAST_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "F16", "BF16", "F32"]
ARCHS = ["llama", "mistral", "qwen2", "qwen3"]
# Every type on one of the architectures, in turn: each type and each architecture is covered
# without the full product (each file costs a transformers load).
ARCH_OF_TYPE = {kind: ARCHS[i % len(ARCHS)] for i, kind in enumerate(FAST_TYPES)}
# The fast path's own numerics (bf16 activations, the int8 head with exact re-scoring of its top
# 64) against the fp32 reference, max |logit error| on these models (logits of magnitude 2-11):
# measured 0.015-0.037 for every type, the weights themselves being exact or bf16-rounded. Set at
# about three times that, per type so a type's own loss would show.
TOLERANCE = {kind: 0.12 for kind in FAST_TYPES}
EXACT = 1e-3  # fp32 activations and a dense head: only float summation order differs (measured ~3e-6)
IDS = torch.tensor([5, 70, 100, 33, 200, 9, 250, 17, 261, 40])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


def reference(path, rope: dict | None = None):
    """transformers' own loading of the file, fp32 (rope: Llama 3 rope parameters to apply,
    which transformers' GGUF loader does not read)."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    if rope is not None:
        model.config.rope_parameters = {**rope, "rope_theta": model.config.rope_parameters["rope_theta"]}
        scaled = LlamaForCausalLM(model.config).eval()
        scaled.load_state_dict(model.state_dict())
        model = scaled
    return model


def greedy(step, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    for _ in range(n):
        out.append(int(step(out).argmax()))
    return out[len(ids):]


def fast_greedy(model, ids: list[int], n: int) -> list[int]:
    model.cache.length = 0
    logits, out = model(torch.tensor(ids)), []
    for _ in range(n):
        out.append(int(logits[-1].argmax()))
        logits = model(torch.tensor(out[-1:]))
    return out


# -- the blocks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in FAST_TYPES if k not in ("F16", "BF16", "F32")])
def test_every_quant_type_unpacks_exactly_and_the_kernel_computes_it(kind):
    """Random blocks (valid scales): the int4 planes sum to gguf's own dequantization bit for bit
    (Q6_K has no group-of-32 form and decodes through gguf), and the int4 kernel in fp32 gives
    x @ W.T of those weights."""
    rng = np.random.default_rng(1)
    rows, cols = 16, 512
    raw = RawTensor("blk.0.ffn_up.weight", kind, rows, cols, random_blocks(rng, kind, rows, cols))
    want = torch.from_numpy(dequantize(raw.data, GGMLQuantizationType[kind]).astype(np.float32))
    planes = raw.int4_planes()
    assert (planes is None) == (kind not in INT4_PLANES)
    if planes is None:
        assert torch.equal(raw.dequantize(), want)
        return
    assert len(planes) == INT4_PLANES[kind]
    assert torch.equal(planes_to_dense(planes), want)
    x = torch.randn(3, cols)
    linear = qz.int4_from_planes(planes, torch.float32, dense=False)
    torch.testing.assert_close(linear(x), x @ want.T, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


# -- whole models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FAST_TYPES)
def test_fast_logits_agree_with_transformers_loading_the_same_file(kind, files):
    arch = ARCH_OF_TYPE[kind]
    path = write_tiny_gguf(files / f"{arch}-{kind}.gguf", arch, kind, seed=FAST_TYPES.index(kind))
    with torch.inference_mode():
        want = reference(path)(IDS[None]).logits[0]
        got = loader.from_gguf(path)(IDS, logits="all").float()
    error = (got - want).abs().max().item()
    assert error <= TOLERANCE[kind], (kind, arch, error)
    # the same top token wherever the reference's top two are further apart than the error allows
    top2 = want.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * TOLERANCE[kind]
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_is_exact_in_fp32_and_greedy_agrees(arch, files):
    """fp32 activations and a dense head: the repacked model computes the reference's function
    (the int4 planes are exact), so greedy tokens agree too."""
    kinds = {"attn_v": "Q5_K", "ffn_down": "Q8_0", "token_embd": "Q8_0"}  # one file, three forms
    path = write_tiny_gguf(files / f"{arch}-exact.gguf", arch, "Q4_K", seed=7, kinds=kinds)
    ref = reference(path)
    fast = loader.from_gguf(path, torch.float32, Layout("int4", "dense", "dense", True))
    assert fast.shape.qkv_bias == (arch == "qwen2") and fast.shape.qk_norm == (arch == "qwen3")
    with torch.inference_mode():
        error = (fast(IDS, logits="all") - ref(IDS[None]).logits[0]).abs().max().item()
        assert error <= EXACT, (arch, error)
        ids = IDS.tolist()
        assert fast_greedy(fast, ids, 8) == greedy(lambda seq: ref(torch.tensor([seq])).logits[0, -1], ids, 8)


def test_llama3_rope_scaling_from_rope_freqs(files):
    """Llama 3.x: llama.cpp stores the rope scaling as `rope_freqs.weight`; the fast path applies
    it, and equals transformers' Llama with the same llama3 rope parameters (its GGUF loader
    ignores that tensor). From the transformers model, the fast path reads the same factors."""
    path = write_tiny_gguf(files / "llama3.gguf", "llama3", "Q4_0", seed=3)
    ref = reference(path, rope=LLAMA3_ROPE)
    fast = loader.from_gguf(path, torch.float32, Layout("int4", "dense", "dense", True))
    assert fast.shape.rope_freq_factors and max(fast.shape.rope_freq_factors) == pytest.approx(8.0)
    ids = torch.arange(0, 250, 3)  # positions far enough for the scaled frequencies to matter
    with torch.inference_mode():
        want = ref(ids[None]).logits[0]
        assert (fast(ids, logits="all") - want).abs().max().item() <= EXACT
        plain = reference(path)(ids[None]).logits[0]
        assert (plain - want).abs().max().item() > 10 * EXACT  # the scaling is not a no-op here (measured 0.08)
        via_hf = loader.from_hf(ref, torch.float32)
        assert (via_hf(ids, logits="all") - want).abs().max().item() <= EXACT


def test_a_mixed_file_keeps_each_tensor_in_its_own_form_and_caches(files, tmp_path):
    """A Q4_K_M-like file (Q4_K, Q5_0, Q6_K, Q8_0 side by side, as llama.cpp writes for small
    models): fused projections of different types are split, each in its own form; the cache
    round trip gives the same logits."""
    kinds = {"attn_q": "Q5_0", "attn_v": "Q6_K", "ffn_down": "Q6_K", "ffn_up": "Q8_0", "token_embd": "Q8_0"}
    path = write_tiny_gguf(files / "mixed.gguf", "llama", "Q4_K", seed=5, kinds=kinds)
    built = loader.load_or_build(path, tmp_path / "fast")
    block = built.layers[0]
    assert isinstance(block.wqkv, qz.SplitLinear) and [type(p).__name__ for p in block.wqkv.parts] == [
        "Int4Linear", "Int4Linear", "DenseLinear"]
    assert [p.planes for p in block.wqkv.parts[:2]] == [2, 1]  # Q5_0: two planes; Q4_K: one
    assert isinstance(block.w13, qz.SplitLinear) and isinstance(block.w2, torch.nn.Linear)
    assert isinstance(built.tok_embeddings, FileEmbedding)
    cached = loader.load_or_build(path, tmp_path / "fast")
    assert cached is not built and isinstance(cached.layers[0].wqkv, qz.SplitLinear)
    with torch.inference_mode():
        first = built(IDS, logits="all")
        built.cache.length = 0
        assert torch.equal(cached(IDS, logits="all"), first)
        want = reference(path)(IDS[None]).logits[0]
    assert (first.float() - want).abs().max().item() <= TOLERANCE["Q6_K"]


def test_a_conversion_writes_the_prefill_copies_as_it_makes_them(files, tmp_path):
    """The dense prefill copies (2x the GGUF file in bf16) go to their cache file one layer at a
    time: the model being built keeps none of them (meta placeholders), and the file holds exactly
    the copies a build holding them all makes, a mixed file's split projections included."""
    from safetensors.torch import load_file

    path = write_tiny_gguf(files / "streamed.gguf", "llama", "Q4_K", seed=12,
                           kinds={"attn_q": "Q5_0", "attn_v": "Q6_K", "ffn_up": "Q8_0"})
    held = {name: t for name, t in loader.from_gguf(path).state_dict().items() if name.endswith(".dense")}
    streamed = loader.from_gguf(path, dense_file=tmp_path / "copies.safetensors").state_dict()
    assert "layers.1.wqkv.parts.0.dense" in held and all(streamed[name].is_meta for name in held)
    written = load_file(str(tmp_path / "copies.safetensors"))
    assert written.keys() == held.keys() and all(torch.equal(written[name], held[name]) for name in held)
    assert [p.name for p in tmp_path.iterdir()] == ["copies.safetensors"]  # renamed into place, nothing left


@pytest.mark.parametrize("kind", ["Q8_0", "Q6_K", "F16"])
def test_the_int8_head_built_a_few_rows_at_a_time_is_the_whole_matrix_quantized(files, monkeypatch, kind):
    """The conversion quantizes the head in chunks of rows (the fp32 matrix is never whole in
    memory): the same int8 rows and scales as quantizing the dequantized embedding at once."""
    path = write_tiny_gguf(files / f"head-{kind}.gguf", "llama", "Q4_0", seed=11, kinds={"token_embd": kind})
    monkeypatch.setattr(loader, "HEAD_ROWS_AT_ONCE", 7)  # not a divisor of the vocabulary: a short last chunk
    model = loader.from_gguf(path)
    want = qz.int8_from_dense(GGUFWeights(path).embedding().dequantize(), model.dtype)
    assert model.shape.vocab_size % 7
    assert torch.equal(model.output.weight, want.weight) and torch.equal(model.output.scales, want.scales)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_1", "Q6_K", "F16", "BF16"])
def test_the_embedding_is_read_from_the_file_exactly_and_kept_nowhere_else(files, tmp_path, kind):
    """One copy of the tied embedding in memory (the int8 head's): lookups and the exact
    re-scoring read rows from the GGUF file, each equal to gguf's dequantize of the file's blocks;
    the cache holds no embedding tensor."""
    path = write_tiny_gguf(files / f"embed-{kind}.gguf", "llama", "Q4_0", seed=9, kinds={"token_embd": kind})
    model = loader.load_or_build(path, tmp_path / kind)
    want = GGUFWeights(path).embedding().dequantize()
    ids = torch.tensor([0, 5, 5, model.shape.vocab_size - 1, 17])
    assert isinstance(model.tok_embeddings, FileEmbedding)
    assert torch.equal(model.embedding_rows(ids), want[ids])
    assert torch.equal(model.embed(ids), want[ids].to(model.dtype))
    with pytest.raises(IndexError):
        model.embedding_rows(torch.tensor([model.shape.vocab_size]))
    (cache_file,) = (tmp_path / kind).glob("fast-v*-file-dp.safetensors")
    stored, _ = loader.read_safetensors(cache_file)
    assert not [name for name in stored if name.startswith("tok_embeddings")]
    assert isinstance(model.output, qz.Int8Linear)


def test_what_the_fast_path_cannot_take_is_named(files):
    path = write_tiny_gguf(files / "q3k.gguf", "llama", "Q4_K", kinds={"ffn_down": "Q3_K"})
    with pytest.raises(NotOnFastPath, match=r"^blk\.0\.ffn_down\.weight is Q3_K$"):
        loader.from_gguf(path)
    weights = GGUFWeights(path)
    assert weights.stop_token_ids() == {vocabulary()[0].index("<|im_end|>")}  # the file's EOS


@pytest.mark.parametrize("arch", ["mistral", "qwen2", "qwen3"])
def test_transformers_models_of_each_architecture_run_on_the_fast_forward(arch):
    """A transformers checkpoint (not GGUF) of each architecture: its own weights in the fast
    model give its logits (bias, Q/K norm, head size, sliding window read from the config)."""
    import transformers

    config_class, model_class = {
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[arch]
    torch.manual_seed(0)
    config = config_class(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=300, max_position_embeddings=256, head_dim=32,
                          sliding_window=128 if arch == "mistral" else None)
    model = model_class(config).eval()
    if arch == "qwen2":  # random biases: transformers starts them at zero
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.data.normal_(0, 0.5)
    assert loader.is_llama(model)
    fast = loader.from_hf(model, torch.float32)
    assert fast.shape.head_dim == 32 and fast.shape.max_seq_len == (128 if arch == "mistral" else 256)
    with torch.inference_mode():
        assert (fast(IDS, logits="all") - model(IDS[None]).logits[0]).abs().max().item() <= EXACT


def _resident_kib(path) -> int:
    """RSS of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) == 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_mapped_prefill_copy_gives_its_pages_back_and_reads_the_same(tmp_path):
    """The dense prefill copies are mapped from the cache file; after a prefill their pages leave
    RSS (pages.release) and read back the same; memory that is not mapped from the file is never
    released (it would read as zeros)."""
    from safetensors.torch import load_file, save_file

    from chatbot.engine.fast import pages

    path = (tmp_path / "dense.safetensors").resolve()
    save_file({"w": torch.randn(1024, 1024).to(torch.bfloat16)}, str(path))
    mapped = load_file(str(path))["w"]
    anonymous = mapped.clone()
    assert pages.mapped_from(path, [mapped, anonymous]) == [True, False]
    total = mapped.float().sum()
    assert _resident_kib(path) >= 1024  # 2 MiB read
    pages.release(mapped)
    assert _resident_kib(path) <= 16  # at most the pages it shares with the header
    assert torch.equal(mapped.float().sum(), total) and torch.equal(mapped, anonymous)


def test_a_long_prefill_through_released_copies_gives_the_same_logits(files, tmp_path):
    path = write_tiny_gguf(files / "prefill.gguf", "llama", "Q4_1", seed=3)
    model = loader.load_or_build(path, tmp_path / "fast")
    dense = [m for m in model.modules() if isinstance(m, qz.Int4Linear) and m.dense is not None]
    assert dense and all(m.dense_mapped for m in dense)
    ids = torch.arange(qz.DENSE_MIN_ROWS + 8) % model.shape.vocab_size
    with torch.inference_mode():
        first = model(ids, logits="all")
        model.cache.length = 0
        assert torch.equal(model(ids, logits="all"), first)
