"""Building a FastLlama: from a GGUF file (exact repack of its quantized blocks), from a loaded
transformers Llama (its dense weights), and a safetensors cache of the repacked weights so a start
does not repack (nor load the transformers model at all).

The cache of one model is up to three files: `<key>.safetensors` (everything whose layout is the
same on every CPU: scales and zeros, int8 head, Q8_0 embedding, norms), `<key>.dense.safetensors`
(the prefill copies) and `<key>.int4-<kernel path>.safetensors`, the packed int4 weights, whose
layout is the one `_convert_weight_to_int4pack_for_cpu` gives on this CPU kernel path: a file
packed under another path reads as garbage with no error, so it is never read there."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from chatbot.engine.fast import quantize as qz
from chatbot.engine.fast.gguf_weights import GGUFWeights, LlamaShape
from chatbot.engine.fast.model import FastLlama, Layout, UninitEmbedding, UninitLinear

# bump when the cached files' names or tensors' meaning change (4: dense copies in safetensors;
# 5: packed int4 weights in a file of their own, per CPU kernel path)
FORMAT = 5
LLAMA_ARCHITECTURES = {"LlamaForCausalLM"}


def is_llama(hf_model) -> bool:
    return type(hf_model).__name__ in LLAMA_ARCHITECTURES and getattr(hf_model.config, "model_type", "") == "llama"


def _dense_linear(weight: torch.Tensor, dtype) -> nn.Linear:
    linear = UninitLinear(weight.shape[1], weight.shape[0], bias=False, device="meta", dtype=dtype)
    linear.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    return linear


def _dense_embedding(weight: torch.Tensor, dtype) -> nn.Embedding:
    emb = UninitEmbedding(weight.shape[0], weight.shape[1], device="meta", dtype=dtype)
    emb.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
    return emb


def _head(model: FastLlama, embedding: torch.Tensor, head: torch.Tensor | None, dtype) -> None:
    """embedding/head: dense fp32 (or dtype) weights; head None = tied."""
    layout = model.layout
    if layout.embedding == "dense":
        model.tok_embeddings = _dense_embedding(embedding, dtype)
    weight = embedding if head is None else head
    if layout.head.endswith("+exact") and head is not None:
        raise ValueError("re-scoring the head needs tied embeddings")
    if layout.head.startswith("int8"):
        model.output = qz.int8_from_dense(weight, dtype)
    elif layout.head.startswith("int4"):
        model.output = qz.int4_head_from_dense(weight, dtype)
    elif head is None and layout.embedding == "dense":
        model.output = UninitLinear(embedding.shape[1], embedding.shape[0], bias=False, device="meta", dtype=dtype)
        model.output.weight = model.tok_embeddings.weight  # tied: one tensor
    else:
        model.output = _dense_linear(weight, dtype)


def from_gguf(path: str | Path, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout()) -> FastLlama:
    weights = GGUFWeights(path)
    if weights.architecture != "llama":
        raise ValueError(f"{Path(path).name}: architecture {weights.architecture!r} is not Llama")
    shape = weights.shape
    model = FastLlama(shape, dtype, layout)

    def linear(roles: list[str], i: int):
        raws = [weights.layer(i, r) for r in roles]
        if layout.linear == "int4" and all(r.kind == "Q4_1" for r in raws):
            parts = [r.q4_1() for r in raws]
            stacked = tuple(torch.cat([p[j] for p in parts]) for j in range(3))
            return qz.int4_from_q4_1(stacked, dtype, layout.dense_prefill)
        dense = torch.cat([r.dequantize() for r in raws])
        if layout.linear == "int4":
            return qz.int4_from_dense(dense, dtype, layout.dense_prefill)
        return _dense_linear(dense, dtype)

    for i, block in enumerate(model.layers):
        block.wqkv = linear(["attn_q", "attn_k", "attn_v"], i)
        block.wo = linear(["attn_output"], i)
        block.w13 = linear(["ffn_gate", "ffn_up"], i)
        block.w2 = linear(["ffn_down"], i)
        block.attention_norm = weights.layer(i, "attn_norm").dequantize().to(dtype)
        block.ffn_norm = weights.layer(i, "ffn_norm").dequantize().to(dtype)
    model.norm = weights.output_norm().dequantize().to(dtype)
    embed = weights.embedding()
    if layout.embedding == "q8" and embed.kind == "Q8_0":
        model.tok_embeddings = qz.q8_embedding(*embed.q8_0(), dtype)
    elif layout.embedding == "q8":
        model.layout = layout = Layout(layout.linear, layout.head, "dense", layout.dense_prefill)
    dense_embed = embed.dequantize()
    _head(model, dense_embed, None if shape.tie_embeddings else weights.output().dequantize(), dtype)
    return model.norms_to_float().eval()


def from_hf(hf_model, dtype: torch.dtype | None = None, layout: Layout = Layout("dense", "dense", "dense", False)) -> FastLlama:
    """The same weights as a transformers Llama (for exact comparisons, and for Llama checkpoints
    that are not GGUF); `layout.linear == "int4"` quantizes them (min/max, groups of 32)."""
    if layout.embedding == "q8":
        layout = Layout(layout.linear, layout.head, "dense", layout.dense_prefill)
    dtype = dtype or hf_model.dtype
    shape = LlamaShape.from_hf_config(hf_model.config)
    model = FastLlama(shape, dtype, layout)
    sd = hf_model.state_dict()
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        groups = {
            "wqkv": [p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"],
            "wo": [p + "self_attn.o_proj.weight"],
            "w13": [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
            "w2": [p + "mlp.down_proj.weight"],
        }
        for attr, names in groups.items():
            dense = torch.cat([sd[n] for n in names]) if len(names) > 1 else sd[names[0]]
            if layout.linear == "int4":
                setattr(block, attr, qz.int4_from_dense(dense, dtype, layout.dense_prefill))
            else:
                setattr(block, attr, _dense_linear(dense.detach().clone() if len(names) == 1 else dense, dtype))
        block.attention_norm = sd[p + "input_layernorm.weight"].to(dtype).clone()
        block.ffn_norm = sd[p + "post_attention_layernorm.weight"].to(dtype).clone()
    model.norm = sd["model.norm.weight"].to(dtype).clone()
    head = None if shape.tie_embeddings else sd["lm_head.weight"]
    _head(model, sd["model.embed_tokens.weight"].detach().clone(), head, dtype)
    model.config = hf_model.config
    model.generation_config = getattr(hf_model, "generation_config", None)
    return model.norms_to_float().eval()


# -- the cache of repacked weights ------------------------------------------------------------------


def _skeleton(shape: LlamaShape, dtype: torch.dtype, layout: Layout) -> FastLlama:
    """A FastLlama whose modules have the cached layout's types (storage filled by load)."""
    model = FastLlama(shape, dtype, layout)
    s = shape
    dims = {
        "wqkv": (s.dim, (s.n_heads + 2 * s.n_kv_heads) * s.head_dim),
        "wo": (s.n_heads * s.head_dim, s.dim),
        "w13": (s.dim, 2 * s.hidden_dim),
        "w2": (s.hidden_dim, s.dim),
    }
    for block in model.layers:
        for attr, (k, n) in dims.items():
            if layout.linear == "int4":
                setattr(block, attr, qz.Int4Linear(k, n, dtype, dense=layout.dense_prefill))
            else:
                setattr(block, attr, UninitLinear(k, n, bias=False, dtype=dtype, device="meta"))
    if layout.embedding == "q8":
        model.tok_embeddings = qz.Q8Embedding(s.vocab_size, s.dim, dtype)
    else:
        model.tok_embeddings = UninitEmbedding(s.vocab_size, s.dim, dtype=dtype, device="meta")
    if layout.head.startswith("int8"):
        model.output = qz.Int8Linear(s.dim, s.vocab_size, dtype)
    elif layout.head.startswith("int4"):
        model.output = qz.Int4Linear(s.dim, s.vocab_size, dtype)
    elif s.tie_embeddings and layout.embedding == "dense":
        model.output = UninitLinear(s.dim, s.vocab_size, bias=False, dtype=dtype, device="meta")
        model.output.weight = model.tok_embeddings.weight
    else:
        model.output = UninitLinear(s.dim, s.vocab_size, bias=False, dtype=dtype, device="meta")
    return model


def cache_key(dtype: torch.dtype, layout: Layout) -> str:
    tag = f"{layout.linear}-{layout.head}-{layout.embedding}{'-dp' if layout.dense_prefill else ''}"
    return f"fast-v{FORMAT}-{str(dtype).removeprefix('torch.')}-{tag}"


def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Written beside `path` and renamed into place: a reader sees the old file or the new one."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=".fast-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dense_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".safetensors") + ".dense.safetensors")


def kernel_path() -> str:
    """What the packed int4 layout depends on: ATen's CPU kernel path in this process (the best the
    CPU has, or what `ATEN_CPU_CAPABILITY` asks for) and the torch build that packed it."""
    return f"{torch.backends.cpu.get_cpu_capability().lower()}-torch{torch.__version__}"


def _packed_path(path: Path) -> Path:
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.int4-{kernel_path()}.safetensors")


def _packing_stamp() -> dict[str, str]:
    return {"kernel_path": kernel_path(), "torch_git": torch.version.git_version}


def _packed_names(model: FastLlama) -> list[str]:
    return [f"{name}.weight" for name, module in model.named_modules() if isinstance(module, qz.Int4Linear)]


def save(model: FastLlama, folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "output.weight" or not _tied(model)}
    dense = {k: state.pop(k) for k in [k for k in state if k.endswith(".dense")]}
    packed = {k: state.pop(k) for k in _packed_names(model)}
    path = folder / f"{key}.safetensors"
    if packed:  # laid out for this process's kernel path: named and stamped with it
        _write_safetensors(packed, _packed_path(path), _packing_stamp())
    if dense:  # the prefill copies: a file of their own, mapped lazily (see load)
        _write_safetensors(dense, _dense_path(path))
    meta = {"shape": json.dumps(model.shape.__dict__), "layout": json.dumps(model.layout.as_dict()),
            "dtype": str(model.dtype).removeprefix("torch.")}
    _write_safetensors(state, path, meta)


def _tied(model: FastLlama) -> bool:
    out = getattr(model.output, "weight", None)
    emb = getattr(model.tok_embeddings, "weight", None)
    return out is not None and emb is not None and out is emb


_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "U8": torch.uint8,
                       "I8": torch.int8, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read straight into freshly allocated (aligned) tensors: no memory map, no second copy, so
    the peak memory holds each weight once. (Views of a memory map would not be aligned as the
    int8/int4 kernels need.)"""
    tensors = {}
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        meta = header.pop("__metadata__", {}) or {}
        base = 8 + size
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = entry["data_offsets"]
            tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
            if end > start:
                handle.seek(base + start)
                view = tensor.view(-1).view(torch.uint8).numpy()
                if handle.readinto(memoryview(view)) != end - start:
                    raise ValueError(f"{path.name}: truncated at {name}")
            tensors[name] = tensor
    return tensors, meta


def load(path: Path) -> FastLlama:
    state, meta = read_safetensors(path)
    shape = LlamaShape(**json.loads(meta["shape"]))
    layout = Layout(**json.loads(meta["layout"]))
    dtype = getattr(torch, meta["dtype"])
    model = _skeleton(shape, dtype, layout)
    if _packed_names(model):
        packed, stamp = read_safetensors(_packed_path(path))
        if stamp != _packing_stamp():
            raise ValueError(f"{path.name}: int4 weights packed for {stamp}, this process runs {_packing_stamp()}")
        state.update(packed)
    if layout.dense_prefill:
        from safetensors.torch import load_file

        # Memory-mapped: pages are read (and count in RSS) only once a long prefill touches them.
        state.update(load_file(_dense_path(path)))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (m == "output.weight" and _tied(model))]
    if missing or unexpected:
        raise ValueError(f"{path.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if _tied(model) is False and layout.head == "dense" and shape.tie_embeddings and layout.embedding == "dense":
        model.output.weight = model.tok_embeddings.weight
    return model.norms_to_float().eval()


def load_or_build(gguf_path: Path, folder: Path, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout(),
                  progress=None) -> FastLlama:
    """The repacked model from `folder` (a cache keyed by the GGUF file), building it once."""
    key = cache_key(dtype, layout)
    path = folder / f"{key}.safetensors"
    if path.is_file():
        try:
            return load(path)
        except Exception:  # a file missing (another kernel path: none packed for this one), damaged or foreign
            pass  # rebuilt below: every file is replaced whole
    if progress:
        progress(f"Repacking {Path(gguf_path).name} for the fast engine (once per CPU kernel path)...")
    model = from_gguf(gguf_path, dtype, layout)
    save(model, folder, key)
    _remove_stale(folder)
    return model


def _remove_stale(folder: Path) -> None:
    """Files of an older format, and int4 weights packed by another torch build. Those of another
    kernel path of this build stay: a cache shared between machines keeps one packing for each."""
    for stale in folder.glob("fast-v*"):
        other_format = not stale.name.startswith(f"fast-v{FORMAT}-")
        other_torch = ".int4-" in stale.name and not stale.name.endswith(f"-torch{torch.__version__}.safetensors")
        if other_format or other_torch:
            stale.unlink(missing_ok=True)
