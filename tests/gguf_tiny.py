"""Tiny random GGUF models written by the test suite (no downloads, no quantizer): gguf.GGUFWriter
with a byte-level BPE tokenizer, a chat template, and every weight's blocks made from random
bytes whose fp16 scales are overwritten with valid, small values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]

# Where each block's fp16 scales sit, and a magnitude for them that keeps weights ~0.1.
SCALES = {
    "Q4_0": ([0], 0.012), "Q4_1": ([0, 2], 0.012), "Q5_0": ([0], 0.006), "Q5_1": ([0, 2], 0.006),
    "Q8_0": ([0], 0.0008), "Q4_K": ([0, 2], 0.00015), "Q5_K": ([0, 2], 0.00007), "Q6_K": ([208], 0.00003),
    "Q2_K": ([80, 82], 0.002), "Q3_K": ([108], 0.0005),
}
MINUS_MIN = {"Q4_1", "Q5_1"}  # m fields: negative, about half the range, so weights centre on 0


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode alphabet (what a byte-level GGUF vocabulary is spelled in)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for _, c in sorted(zip(printable, codes))]


def vocabulary() -> tuple[list[str], list[int]]:
    tokens = byte_alphabet() + [m.replace(" ", "") for m in MERGES] + SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    return tokens, types


def random_blocks(rng: np.random.Generator, kind: str, rows: int, cols: int) -> np.ndarray:
    """[rows, bytes] of `kind` blocks: random bytes, the fp16 scale fields made valid."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    data = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
    offsets, magnitude = SCALES[kind]
    for n, at in enumerate(offsets):
        value = rng.uniform(0.5, 1.0, (rows, cols // block)) * magnitude
        if n == 1 and kind in MINUS_MIN:
            value = -value * 8
        data[..., at : at + 2] = value.astype(np.float16).view(np.uint8).reshape(rows, cols // block, 2)
    return data.reshape(rows, -1)


def float_weight(rng, kind: str, rows: int, cols: int) -> np.ndarray:
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    if kind == "F16":
        return w.astype(np.float16)
    if kind == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16)  # truncated: a valid bf16 bit pattern
    return w


ARCHS = {
    # arch: (n_heads, n_kv_heads, head_dim, extras)
    "llama": (4, 2, 64, ()),
    "mistral": (4, 1, 64, ("untied",)),  # a llama file (as llama.cpp writes Mistral): 4:1 GQA, own output head, theta 1e6
    "qwen2": (4, 2, 64, ("bias",)),
    "qwen3": (2, 1, 128, ("qk_norm",)),  # transformers reads Qwen3's head size as its default, 128
    "llama3": (4, 2, 64, ("rope_freqs",)),
}
DIM, HIDDEN, LAYERS = 256, 512, 2  # K-quants need rows of 256


def llama3_freq_factors(head_dim: int, theta: float, factor=8.0, low=1.0, high=4.0, original=64) -> np.ndarray:
    """llama.cpp's rope_freqs for Llama 3 rope scaling (as its converter computes them)."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    low_wavelen, high_wavelen = original / low, original / high
    factors = []
    for f in freqs:
        wavelen = 2 * np.pi / f
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def write_tiny_gguf(path: Path, arch: str = "llama", kind: str = "Q4_K", seed: int = 0, kinds: dict | None = None,
                    template: bool = True, tied: bool = True, eot: bool = False, rope_theta: float = 10000.0,
                    file_type: int | None = None) -> Path:
    """A 2-layer random model; every 2-D weight of type `kind`, or `kinds[role]` (e.g.
    {"attn_v": "Q6_K"}) to mix types per tensor as a Q4_K_M file does."""
    rng = np.random.default_rng(seed)
    n_heads, n_kv, head_dim, extras = ARCHS[arch]
    if "untied" in extras:
        tied, rope_theta = False, 1e6
    file_arch = "llama" if arch in ("mistral", "llama3") else arch
    tokens, types = vocabulary()
    vocab = len(tokens)
    writer = GGUFWriter(str(path), file_arch)
    # llama.cpp writes Mistral as a llama; transformers reads a file named exactly "mistral" as
    # Mistral, and then fails in this version (no such gguf-py architecture): named otherwise.
    writer.add_name("Mistral-tiny" if arch == "mistral" else f"tiny-{arch}")
    writer.add_context_length(1024)
    if file_type is not None:
        writer.add_file_type(file_type)  # general.file_type: llama.cpp's name for the mix (15 = Q4_K_M)
    writer.add_embedding_length(DIM)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(HIDDEN)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(rope_theta)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>" if template else "<|endoftext|>"))
    if eot:
        writer.add_eot_token_id(tokens.index("<|im_start|>"))  # an odd choice, so a test can see it is read
    writer.add_add_bos_token(False)
    if template:
        writer.add_chat_template(CHATML)

    def matrix(name: str, role: str, rows: int, cols: int) -> None:
        t = (kinds or {}).get(role, kind)
        if t in ("F32", "F16", "BF16"):
            data = float_weight(rng, t, rows, cols)
            if t == "BF16":
                writer.add_tensor(name, data, raw_dtype=GGMLQuantizationType.BF16)
            else:
                writer.add_tensor(name, data)
        else:
            writer.add_tensor(name, random_blocks(rng, t, rows, cols), raw_dtype=GGMLQuantizationType[t])

    def vector(name: str, size: int, around: float = 1.0) -> None:
        writer.add_tensor(name, (around + rng.standard_normal(size) * 0.1).astype(np.float32))

    matrix("token_embd.weight", "token_embd", vocab, DIM)
    if not tied:
        matrix("output.weight", "output", vocab, DIM)
    vector("output_norm.weight", DIM)
    if "rope_freqs" in extras:
        writer.add_tensor("rope_freqs.weight", llama3_freq_factors(head_dim, rope_theta))
    q_out, kv_out = n_heads * head_dim, n_kv * head_dim
    for i in range(LAYERS):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", DIM)
        vector(p + "ffn_norm.weight", DIM)
        matrix(p + "attn_q.weight", "attn_q", q_out, DIM)
        matrix(p + "attn_k.weight", "attn_k", kv_out, DIM)
        matrix(p + "attn_v.weight", "attn_v", kv_out, DIM)
        matrix(p + "attn_output.weight", "attn_output", DIM, q_out)
        matrix(p + "ffn_gate.weight", "ffn_gate", HIDDEN, DIM)
        matrix(p + "ffn_up.weight", "ffn_up", HIDDEN, DIM)
        matrix(p + "ffn_down.weight", "ffn_down", DIM, HIDDEN)
        if "bias" in extras:
            for role, size in (("attn_q", q_out), ("attn_k", kv_out), ("attn_v", kv_out)):
                vector(p + f"{role}.bias", size, around=0.0)
        if "qk_norm" in extras:
            vector(p + "attn_q_norm.weight", head_dim)
            vector(p + "attn_k_norm.weight", head_dim)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def stepped_and_prefilled(engine, ids: list[int]):
    """The engine's logits for `ids` fed one token at a time (decode steps, through whatever runs a
    step) and from one prefill of them all: `[len(ids), vocab]` each, float32."""
    import torch

    with torch.inference_mode():
        engine.reset()
        stepped = torch.stack([engine.next_token_logits(ids[: p + 1]).float().view(-1) for p in range(len(ids))])
        engine.model.cache.length = 0
        prefilled = engine.model(torch.tensor(ids), logits="all").float()
    return stepped, prefilled
