"""The fast engine (chatbot/engine/fast): exact GGUF repack, equality with the reference path
where the weights are the same, the quality guard where int4 changes numerics, and the engine
semantics (prefix reuse, soft-prompt prefixes, cancel) on the static KV cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from chatbot.engine.decoding import Engine, Prefix
from chatbot.engine.fast import closeness, loader
from chatbot.engine.fast import quantize as qz
from chatbot.engine.fast.engine import FastEngine, build_fast_engine
from chatbot.engine.fast.gguf_weights import GGUFWeights
from chatbot.engine.fast.model import Layout
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.personas.schema import Persona

pytestmark = pytest.mark.slow

ASSISTANT = Persona(name="assistant")
# The quality guard's fixed prompts (benchmarks/agreement.py runs them and twenty more).
PROMPTS = (Path(__file__).parent / "fixtures" / "greedy_prompts.txt").read_text(encoding="utf-8").splitlines()
HELD_OUT = (
    "The lighthouse stood at the edge of the cliff, its white paint peeling after decades of salt and "
    "wind. Every evening the keeper climbed the spiral stairs, trimmed the wick and polished the great "
    "lens until it shone. Ships passing in the night relied on its steady beam to steer clear of the "
    "rocks below. One stormy autumn, a small fishing boat lost its way in the fog, and the keeper rang "
    "the bell for hours until the crew found the harbour. The villagers never forgot his kindness, and "
    "when he retired they gathered on the shore to thank him with songs and a feast of fresh bread."
)


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=n)


def prompt_ids(tokenizer, text: str) -> list[int]:
    return ContextBuilder(tokenizer).build(ASSISTANT, [], text).prompt_ids


@pytest.fixture(scope="module")
def gguf(bundled_fp32):
    return GGUFWeights(bundled_fp32.info.source)


@pytest.fixture(scope="module")
def dense_fast(bundled_fp32):
    """The reference model's own fp32 weights in the fast model: same weights, lean forward."""
    return loader.from_hf(bundled_fp32.model)


@pytest.fixture(scope="module")
def int4_engine(bundled_fp32):
    """The torch int4 path: the GGUF repacked (cached beside the converted model), its packed
    weights read (CHATBOT_NATIVE=off). The native kernels have their own guard (tests/test_native.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHATBOT_NATIVE", "off")
        engine = build_fast_engine(bundled_fp32)
    assert engine.native is None
    return engine


@pytest.fixture
def ref_engine(bundled_fp32):
    loaded = bundled_fp32
    return Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, loaded.info.context_length)


# -- the repack ---------------------------------------------------------------------------------


def test_gguf_blocks_dequantize_to_the_reference_weights(gguf, bundled_fp32):
    """Q/K rows un-permuted as transformers does; every kind (Q4_1, Q8_0, F32) bit-exact."""
    sd = bundled_fp32.model.state_dict()
    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "ffn_down": "mlp.down_proj",
             "attn_norm": "input_layernorm"}
    for i in (0, gguf.shape.n_layers - 1):
        for role, hf in names.items():
            assert torch.equal(gguf.layer(i, role).dequantize(), sd[f"model.layers.{i}.{hf}.weight"]), (i, role)
    assert gguf.embedding().kind == "Q8_0"
    assert torch.equal(gguf.embedding().dequantize(), sd["model.embed_tokens.weight"])
    assert gguf.layer(0, "attn_q").kind == "Q4_1"


def test_q4_1_repacks_exactly_into_the_int4_kernel(gguf):
    raw = gguf.layer(3, "ffn_gate")
    q, d, m = raw.q4_1()
    packed, scales_and_zeros = qz.q4_1_to_int4(q, d, m, torch.float32)
    x = torch.randn(2, raw.cols)
    out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, qz.GROUP, scales_and_zeros)
    assert torch.allclose(out, x @ raw.dequantize().t(), atol=1e-4, rtol=1e-5)


# -- same weights: same replies -------------------------------------------------------------------


def test_a_long_prefill_multiplies_the_bf16_dense_copy_in_fp32_where_bf16_matmul_is_slow(monkeypatch):
    torch.manual_seed(0)
    layer = qz.Int4Linear(64, 48, torch.bfloat16, dense=True)
    layer.dense = torch.randn(48, 64).to(torch.bfloat16)
    x = torch.randn(qz.DENSE_MIN_ROWS, 64).to(torch.bfloat16)
    in_fp32 = torch.nn.functional.linear(x.float(), layer.dense.float()).to(torch.bfloat16)
    monkeypatch.setattr(qz, "bf16_matmul_is_slow", lambda: True)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and torch.equal(y, in_fp32)
    monkeypatch.setattr(qz, "bf16_matmul_is_slow", lambda: False)  # bf16 hardware: torch's own bf16 matmul
    torch.testing.assert_close(layer(x), in_fp32, rtol=0.02, atol=0.05)


def test_same_weights_give_the_reference_greedy_replies(dense_fast, bundled_fp32, ref_engine):
    tokenizer = bundled_fp32.tokenizer
    fast = FastEngine(dense_fast, tokenizer, bundled_fp32.eos_token_ids, bundled_fp32.info.context_length)
    for text in PROMPTS[:3]:
        ids = prompt_ids(tokenizer, text)
        ours, theirs = fast.generate(ids, greedy(16)), ref_engine.generate(ids, greedy(16))
        assert ours.run() == theirs.run(), text
        assert ours.token_ids == theirs.token_ids
        assert ours.stats.stop_reason == theirs.stats.stop_reason


def test_soft_prompt_prefix_and_reuse_match_the_reference(dense_fast, bundled_fp32, ref_engine):
    tokenizer = bundled_fp32.tokenizer
    fast = FastEngine(dense_fast, tokenizer, bundled_fp32.eos_token_ids, bundled_fp32.info.context_length)
    torch.manual_seed(0)
    embed = bundled_fp32.model.get_input_embeddings().weight
    prefix = Prefix("test:pirate", embed[tokenizer("Talk like a pirate, matey! Arr.")["input_ids"]].detach().clone())
    first = prompt_ids(tokenizer, "What is the capital of Italy?")
    for engine in (fast, ref_engine):
        engine.generate(first, greedy(4), prefix=prefix).run()  # fills the cache: the next call reuses it
    second = first + prompt_ids(tokenizer, "And of Spain?")[5:]
    ours_logits = fast.next_token_logits(second, prefix=prefix)
    theirs_logits = ref_engine.next_token_logits(second, prefix=prefix)
    assert torch.allclose(ours_logits, theirs_logits, atol=2e-3)
    ours, theirs = fast.generate(second, greedy(8), prefix=prefix), ref_engine.generate(second, greedy(8), prefix=prefix)
    assert ours.run() == theirs.run()
    assert ours.stats.reused_tokens == theirs.stats.reused_tokens > 0
    assert ours.stats.prefix_tokens == theirs.stats.prefix_tokens == prefix.embeddings.shape[0]
    # the prefix's KV is kept per key: a fresh conversation with it restores the copy
    fast.reset()
    again = fast.next_token_logits(second, prefix=prefix, reuse=False)
    assert torch.allclose(again, ours_logits, atol=1e-4)


# -- int4: the quality guard ------------------------------------------------------------------------


def _nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    return torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:]).item()


def test_int4_perplexity_within_one_percent_of_the_reference(int4_engine, bundled_fp32):
    """One prefill of the whole text: over DENSE_MIN_ROWS, so the dense prefill copies."""
    ids = torch.tensor(bundled_fp32.tokenizer(HELD_OUT)["input_ids"])
    with torch.inference_mode():
        reference = _nll(bundled_fp32.model(ids[None]).logits[0], ids)
        model = int4_engine.model
        int4_engine.reset()
        model.cache.length = 0
        ours = _nll(model(ids, logits="all"), ids)
        int4_engine.reset()
    ratio = torch.tensor(ours - reference).exp().item()  # perplexity ratio
    assert abs(ratio - 1) <= 0.01, (reference, ours)


# Set from measurements under every kernel path torch has on the machines it ran on (docs/fast.md,
# "Quality guard"), each with a clear margin; an int8 head without its exact re-scoring fails the
# margin (0.10), an int4 head all three.
SAME_TOP_MIN = 0.95
MARGIN_ERROR_MAX = 0.07
PERPLEXITY_RATIO_MAX_ERROR = 0.01


def test_int4_decode_path_stays_close_to_the_reference(int4_engine, bundled_fp32):
    """The int4 kernel's path (decode steps; the held-out text in 32-row chunks), measured in ways
    that hold across CPUs: the fp32 reference's greedy continuations of the ten prompts fed back
    one token at a time (the share of positions whose top token is the reference's, and the error of
    the margin between the reference's top two logits), and the held-out perplexity ratio. Greedy
    identity over 32 tokens is not one of them: one near-tie decides a whole reply, and kernel paths
    round differently (8 or 9 prompts of 10, depending on the CPU)."""
    tokenizer = bundled_fp32.tokenizer
    prompts = [prompt_ids(tokenizer, text) for text in PROMPTS]
    figures = closeness.guard_figures(int4_engine, bundled_fp32, prompts, tokenizer(HELD_OUT)["input_ids"])
    close = figures["closeness"]
    assert close.positions >= 200, figures
    assert close.same_top >= SAME_TOP_MIN, figures
    assert close.margin_error_mean <= MARGIN_ERROR_MAX, figures
    assert abs(figures["perplexity_ratio"] - 1) <= PERPLEXITY_RATIO_MAX_ERROR, figures


# -- engine semantics on the static cache -----------------------------------------------------------


def test_reuse_crops_the_static_cache_and_keeps_logits(int4_engine, bundled_fp32):
    tokenizer = bundled_fp32.tokenizer
    ids = prompt_ids(tokenizer, "Tell me about the moon.")
    reply = int4_engine.generate(ids, greedy(12))
    reply.run()
    follow = ids + reply.token_ids + prompt_ids(tokenizer, "And the sun?")[3:]
    reused = int4_engine.next_token_logits(follow)
    length = int4_engine.model.cache.length
    branch = int4_engine.next_token_logits(ids[:-2] + [ids[-1]])  # a shorter branch: crop, no copy
    assert int4_engine.model.cache.length == len(ids) - 1
    assert length == len(follow)
    fresh = int4_engine.next_token_logits(follow, reuse=False)
    # bf16 activations: steps and one prefill round differently, so compare distributions
    assert (reused.softmax(-1) - fresh.softmax(-1)).abs().max() < 0.02
    assert reused.argmax() == fresh.argmax()
    assert branch.shape == fresh.shape


def test_cancel_and_stats(int4_engine, bundled_fp32):
    cancel = threading.Event()
    generation = int4_engine.generate(prompt_ids(bundled_fp32.tokenizer, "Count to fifty."), greedy(64), cancel=cancel)
    for i, _ in enumerate(generation):
        if i == 3:
            cancel.set()
    assert generation.stats.stop_reason == "cancelled"
    assert 3 <= generation.stats.new_tokens <= 5
    assert generation.stats.ttft_ms > 0


def test_cache_grows_and_round_trips(tiny_llama, tmp_path):
    """A tiny random Llama quantized to int4: a saved and reloaded model gives the same logits,
    and a cache that grows past its first capacity matches one prefill."""
    model = loader.from_hf(tiny_llama, torch.bfloat16, Layout("int4", "int8", "dense", True))
    loader.save(model, tmp_path, "tiny")
    again = loader.load(tmp_path / "tiny.safetensors")
    ids = torch.arange(300, 700)
    with torch.inference_mode():
        one = model(ids, logits="all")
        model.cache.length = 0
        for chunk in ids.split(97):
            model(chunk)
        step = model(torch.tensor([9]))
        again.cache.length = 0
        two = again(ids, logits="all")
    assert torch.equal(one, two)
    assert model.cache.capacity >= 401 and model.cache.length == 401
    assert step.shape == (1, tiny_llama.config.vocab_size)


def test_build_engine_picks_fast_for_llama_only(bundled_fp32, tiny_bpe_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    from chatbot.engine.loading import LoadedModel, ModelInfo
    from chatbot.errors import UserError
    from chatbot.runtime import build_engine

    assert build_engine(bundled_fp32, "reference").name == "reference"
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=400)).eval()
    info = ModelInfo("tiny", "x", "directory", "float32", 1024, None, "GPT2LMHeadModel", False)
    other = LoadedModel(gpt2, tiny_bpe_tokenizer, info, {0})
    assert build_engine(other, "auto").name == "reference"
    with pytest.raises(UserError):
        build_engine(other, "fast")
