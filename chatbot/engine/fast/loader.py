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
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from chatbot.engine.fast import quantize as qz
from chatbot.engine.fast.file_rows import FileEmbedding, RowsAt
from chatbot.engine.fast.gguf_weights import GGUFWeights, LlamaShape, NotOnFastPath
from chatbot.engine.fast.model import FastLlama, Layout, UninitEmbedding, UninitLinear
from chatbot.engine.fast.pages import map_large_allocations
from chatbot.engine.fast.tensor_stream import TensorStream

# bump when the cached files' names or tensors' meaning change (4: dense copies in safetensors;
# 5: packed int4 weights in a file of their own, per CPU kernel path). A FORMAT 5 cache without a
# "modules" entry is the uniform layout of then (all int4 or all dense), read as such.
# 6: the embedding read from the GGUF file, not kept in the cache (layout embedding "file").
FORMAT = 6
# transformers classes the fast model runs, with their model_type
FAST_HF_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                         "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}
LLAMA_ARCHITECTURES = set(FAST_HF_ARCHITECTURES)


def is_llama(hf_model) -> bool:
    """A Llama-family transformers model the fast forward runs (Llama, Mistral, Qwen2, Qwen3)."""
    model_type = FAST_HF_ARCHITECTURES.get(type(hf_model).__name__)
    return model_type is not None and getattr(hf_model.config, "model_type", "") == model_type


def _dense_linear(weight: torch.Tensor, dtype) -> nn.Linear:
    linear = qz.DenseLinear(weight.shape[1], weight.shape[0], bias=False, device="meta", dtype=dtype)
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


HEAD_ROWS_AT_ONCE = 1024  # 2.4 MB of fp32 rows (and a few times that in temporaries) at a time


def _int8_head(raw, dtype, after_rows=lambda: None) -> qz.Int8Linear:
    """The int8 head (one scale per row) quantized a few thousand rows at a time: the whole matrix
    in fp32 (4x its int8 form, and as much again in temporaries) is never in memory; `after_rows`
    is called after each chunk (the file's pages read for it given back)."""
    head = qz.Int8Linear(raw.cols, raw.rows, dtype)
    for start in range(0, raw.rows, HEAD_ROWS_AT_ONCE):
        rows = raw.row_slice(start, start + HEAD_ROWS_AT_ONCE).dequantize().view(-1, raw.cols)
        head.weight[start : start + len(rows)], head.scales[start : start + len(rows)] = qz.quantize_int8_rows(rows, dtype)
        after_rows()
    return head


def _stack_planes(all_planes: list[list]) -> list:
    """The planes of several tensors (same plane count) stacked by rows: one fused matmul."""
    return [tuple(torch.cat([planes[p][j] for planes in all_planes]) for j in range(3)) for p in range(len(all_planes[0]))]


# the prefill copies one layer can have: Q, K, V, O, gate, up, down each its own (a mixed file)
MOST_COPIES_A_LAYER = 7


def from_gguf(path: str | Path, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout(),
              dense_file: Path | None = None) -> FastLlama:
    """Each tensor by its own GGUF type: 4-bit types as one int4 plane, 5/8-bit as two (exact),
    the rest (Q6_K, floats) decoded to dense weights. NotOnFastPath where a type or the
    architecture has no fast form. `dense_file`: the dense prefill copies are written there as
    each layer makes them (safetensors, renamed into place once whole) and the model keeps meta
    placeholders of them: a conversion never holds them all (~2x the file in bf16)."""
    weights = GGUFWeights(path)
    weights.check()
    shape = weights.shape
    if not shape.tie_embeddings and layout.head != "dense":
        # an untied head has no embedding rows to re-score from: kept dense (exact up to bf16)
        layout = replace(layout, head="dense")
    model = FastLlama(shape, dtype, layout)
    copies = TensorStream(dense_file, MOST_COPIES_A_LAYER * shape.n_layers) if dense_file and layout.dense_prefill else None
    try:
        _layers_from_gguf(model, weights, copies)
    except BaseException:
        if copies is not None:
            copies.abort()
        raise
    if copies is not None:
        copies.close()
    return _head_from_gguf(model, weights, path, layout)


def _layers_from_gguf(model: FastLlama, weights: GGUFWeights, copies: TensorStream | None) -> None:
    shape, dtype, layout = model.shape, model.dtype, model.layout

    def part(raw):
        planes = raw.int4_planes() if layout.linear == "int4" else None
        if planes is None:
            return _dense_linear(raw.dequantize(), dtype)
        return qz.int4_from_planes(planes, dtype, layout.dense_prefill)

    def linear(roles: list[str], i: int):
        raws = [weights.layer(i, r) for r in roles]
        if len(raws) == 1:
            return part(raws[0])
        planes = [r.int4_planes() if layout.linear == "int4" else None for r in raws]
        if all(p is not None for p in planes) and len({len(p) for p in planes}) == 1:
            return qz.int4_from_planes(_stack_planes(planes), dtype, layout.dense_prefill)
        if all(p is None for p in planes):
            return _dense_linear(torch.cat([r.dequantize() for r in raws]), dtype)
        return qz.SplitLinear([part(r) for r in raws])  # a mixed file (Q4_K_M): each as it is

    def vector(i: int, role: str, kind: str = "weight") -> torch.Tensor:
        return weights.layer(i, role, kind).dequantize().to(dtype)

    for i, block in enumerate(model.layers):
        block.wqkv = linear(["attn_q", "attn_k", "attn_v"], i)
        block.wo = linear(["attn_output"], i)
        block.w13 = linear(["ffn_gate", "ffn_up"], i)
        block.w2 = linear(["ffn_down"], i)
        block.attention_norm = vector(i, "attn_norm")
        block.ffn_norm = vector(i, "ffn_norm")
        if shape.qkv_bias:
            block.bqkv = torch.cat([vector(i, r, "bias") for r in ("attn_q", "attn_k", "attn_v")])
        if shape.qk_norm:
            block.q_norm, block.k_norm = vector(i, "attn_q_norm"), vector(i, "attn_k_norm")
        if copies is not None:
            _stream_copies(block, f"layers.{i}.", copies)
        weights.release(f"blk.{i}.")


def _stream_copies(block: nn.Module, prefix: str, copies: TensorStream) -> None:
    """A layer's prefill copies written out now, a meta placeholder of each left in its place."""
    for name, module in block.named_modules():
        if isinstance(module, qz.Int4Linear) and module.dense is not None and not module.dense.is_meta:
            copies.add(f"{prefix}{name}.dense", module.dense)
            module.dense = torch.empty(module.dense.shape, dtype=module.dense.dtype, device="meta")


def _head_from_gguf(model: FastLlama, weights: GGUFWeights, path: str | Path, layout: Layout) -> FastLlama:
    shape, dtype = model.shape, model.dtype
    model.norm = weights.output_norm().dequantize().to(dtype)
    embed = weights.embedding()
    if layout.embedding == "file":
        model.tok_embeddings = FileEmbedding(path, weights.embedding_at(), dtype)
    elif layout.embedding == "q8" and embed.kind == "Q8_0":
        model.tok_embeddings = qz.q8_embedding(*embed.q8_0(), dtype)
    elif layout.embedding == "q8":
        model.layout = layout = replace(layout, embedding="dense")
    if layout.embedding != "dense" and layout.head.startswith("int8"):
        head = weights.output()  # the tied embedding's blocks
        model.output = _int8_head(head, dtype, after_rows=lambda: weights.release(head.name))
    else:
        dense_embed = embed.dequantize()
        _head(model, dense_embed, None if shape.tie_embeddings else weights.output().dequantize(), dtype)
    model.stop_token_ids = weights.stop_token_ids()
    return model.norms_to_float().eval()


def from_hf(hf_model, dtype: torch.dtype | None = None, layout: Layout = Layout("dense", "dense", "dense", False)) -> FastLlama:
    """The same weights as a transformers Llama (for exact comparisons, and for Llama checkpoints
    that are not GGUF); `layout.linear == "int4"` quantizes them (min/max, groups of 32)."""
    if layout.embedding != "dense":  # no GGUF file, no Q8_0 rows: the checkpoint's own
        layout = Layout(layout.linear, layout.head, "dense", layout.dense_prefill)
    dtype = dtype or hf_model.dtype
    rotary = getattr(hf_model.model, "rotary_emb", None)
    if rotary is not None and float(getattr(rotary, "attention_scaling", 1.0)) != 1.0:
        raise NotOnFastPath(f"rope scaling {getattr(rotary, 'rope_type', '?')!r} with attention scaling")
    shape = LlamaShape.from_hf_config(hf_model.config, getattr(rotary, "inv_freq", None))
    model = FastLlama(shape, dtype, layout)
    sd = hf_model.state_dict()
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        if shape.qkv_bias:
            block.bqkv = torch.cat([sd[p + f"self_attn.{x}_proj.bias"] for x in "qkv"]).to(dtype).clone()
        if shape.qk_norm:
            block.q_norm = sd[p + "self_attn.q_norm.weight"].to(dtype).clone()
            block.k_norm = sd[p + "self_attn.k_norm.weight"].to(dtype).clone()
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


def module_spec(module: nn.Module) -> dict:
    """What a projection is, for the cache: enough to make an empty one of the same form."""
    if isinstance(module, qz.SplitLinear):
        return {"kind": "split", "parts": [module_spec(part) for part in module.parts]}
    if isinstance(module, qz.Int4Linear):
        return {"kind": "int4", "planes": module.planes, "out": module.out_features, "dense": module.dense is not None}
    return {"kind": "dense", "out": module.out_features}


def module_from_spec(spec: dict, in_features: int, dtype: torch.dtype) -> nn.Module:
    if spec["kind"] == "split":
        return qz.SplitLinear([module_from_spec(part, in_features, dtype) for part in spec["parts"]])
    if spec["kind"] == "int4":
        return qz.Int4Linear(in_features, spec["out"], dtype, dense=spec["dense"], planes=spec["planes"])
    return qz.DenseLinear(in_features, spec["out"], bias=False, dtype=dtype, device="meta")


PROJECTIONS = ("wqkv", "wo", "w13", "w2")


def _skeleton(shape: LlamaShape, dtype: torch.dtype, layout: Layout, modules: dict | None = None) -> FastLlama:
    """A FastLlama whose modules have the cached layout's types (storage filled by load);
    `modules`: each projection's spec (a file mixing types), else uniform by `layout`."""
    model = FastLlama(shape, dtype, layout)
    s = shape
    dims = {
        "wqkv": (s.dim, (s.n_heads + 2 * s.n_kv_heads) * s.head_dim),
        "wo": (s.n_heads * s.head_dim, s.dim),
        "w13": (s.dim, 2 * s.hidden_dim),
        "w2": (s.hidden_dim, s.dim),
    }
    for i, block in enumerate(model.layers):
        for attr, (k, n) in dims.items():
            if modules is not None:
                setattr(block, attr, module_from_spec(modules[f"layers.{i}.{attr}"], k, dtype))
            elif layout.linear == "int4":
                setattr(block, attr, qz.Int4Linear(k, n, dtype, dense=layout.dense_prefill))
            else:
                setattr(block, attr, qz.DenseLinear(k, n, bias=False, dtype=dtype, device="meta"))
    if layout.embedding == "q8":
        model.tok_embeddings = qz.Q8Embedding(s.vocab_size, s.dim, dtype)
    elif layout.embedding == "file":
        model.tok_embeddings = None  # attached by load, from the GGUF file
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
    names = []
    for name, module in model.named_modules():
        if isinstance(module, qz.Int4Linear):
            names += [f"{name}.weight"] + ([f"{name}.weight_hi"] if module.planes > 1 else [])
    return names


def save(model: FastLlama, folder: Path, key: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "output.weight" or not _tied(model)}
    dense = {k: state.pop(k) for k in [k for k in state if k.endswith(".dense")]}
    packed = {k: state.pop(k) for k in _packed_names(model)}
    path = folder / f"{key}.safetensors"
    if packed:  # laid out for this process's kernel path: named and stamped with it
        _write_safetensors(packed, _packed_path(path), _packing_stamp())
    if dense and not any(t.is_meta for t in dense.values()):  # the prefill copies: a file of their
        _write_safetensors(dense, _dense_path(path))  # own, mapped lazily (see load); else written as made
    modules = {f"layers.{i}.{attr}": module_spec(getattr(block, attr))
               for i, block in enumerate(model.layers) for attr in PROJECTIONS}
    meta = {"shape": json.dumps(model.shape.__dict__), "layout": json.dumps(model.layout.as_dict()),
            "dtype": str(model.dtype).removeprefix("torch."), "modules": json.dumps(modules),
            "stop_token_ids": json.dumps(sorted(getattr(model, "stop_token_ids", ()) or ()))}
    if isinstance(model.tok_embeddings, FileEmbedding):
        meta["embedding_at"] = json.dumps(model.tok_embeddings.at.as_dict())
    _write_safetensors(state, path, meta)


def _tied(model: FastLlama) -> bool:
    out = getattr(model.output, "weight", None)
    emb = getattr(model.tok_embeddings, "weight", None)
    return out is not None and emb is not None and out is emb


_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "U8": torch.uint8,
                       "I8": torch.int8, "I32": torch.int32, "I64": torch.int64}


def _header(handle) -> tuple[dict, dict[str, str], int]:
    """A safetensors file's tensor entries, its metadata and where its data starts."""
    size = int.from_bytes(handle.read(8), "little")
    header = json.loads(handle.read(size))
    return header, header.pop("__metadata__", {}) or {}, 8 + size


def read_metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as handle:
        return _header(handle)[1]


def read_safetensors(path: Path, skip=frozenset()) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read straight into freshly allocated (aligned) tensors: no memory map, no second copy, so
    the peak memory holds each weight once. (Views of a memory map would not be aligned as the
    int8/int4 kernels need.) Tensors named in `skip` are not read."""
    tensors = {}
    with open(path, "rb") as handle:
        header, meta, base = _header(handle)
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if name in skip:
                continue
            start, end = entry["data_offsets"]
            tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
            if end > start:
                handle.seek(base + start)
                view = tensor.view(-1).view(torch.uint8).numpy()
                if handle.readinto(memoryview(view)) != end - start:
                    raise ValueError(f"{path.name}: truncated at {name}")
            tensors[name] = tensor
    return tensors, meta


def load(path: Path, gguf_path: Path | None = None, packed: bool = True, head: bool = True) -> FastLlama:
    """The cached model at `path`; `gguf_path`: the file it was built from (a layout whose
    embedding is read from the file needs it). packed=False: the native kernels run every forward
    under 64 tokens (what the int4 kernels would), so only long prefills read torch weights: none
    is read into memory where each int4 layer has its dense copy. The int4 weights and their
    scales stay on disk, the dense projections (Q6_K, float types) are mapped from this file and
    give their pages back after each use, as the prefill copies do. head=False: the output head
    is not read (`model.output` is None): the native kernels run the file's own head blocks
    (NativeDecoder sets `model.exact_head`), so the int8 head would be read only to be dropped."""
    meta = read_metadata(path)
    shape = json.loads(meta["shape"])
    if shape.get("rope_freq_factors"):
        shape["rope_freq_factors"] = tuple(shape["rope_freq_factors"])
    shape = LlamaShape(**shape)
    layout = Layout(**json.loads(meta["layout"]))
    dtype = getattr(torch, meta["dtype"])
    model = _skeleton(shape, dtype, layout, json.loads(meta["modules"]) if "modules" in meta else None)
    model.stop_token_ids = set(json.loads(meta.get("stop_token_ids", "[]")))
    if layout.embedding == "file":
        if gguf_path is None:
            raise ValueError(f"{path.name}: its embedding is read from the GGUF file, and none was given")
        model.tok_embeddings = FileEmbedding(gguf_path, RowsAt(**json.loads(meta["embedding_at"])), dtype)
    int4 = {name: m for name, m in model.named_modules() if isinstance(m, qz.Int4Linear)}
    dense = [name for name, m in model.named_modules() if isinstance(m, qz.DenseLinear) and name.startswith("layers.")]
    prefill_only = not packed and all(m.dense is not None for m in int4.values())
    skip = set()
    if prefill_only:
        for name, module in int4.items():
            module.drop_packed()
            skip |= {f"{name}.scales_and_zeros", f"{name}.scales_and_zeros_hi"}  # 4 bytes per 32 weights
        skip |= {f"{name}.weight" for name in dense}
    if not head:
        skip |= {f"output.{name}" for name in model.output.state_dict()}
        model.output = None
    state, _ = read_safetensors(path, skip)
    # Memory-mapped: pages are read (and count in RSS) only while a long prefill uses them. Mapping
    # reads around each tensor's start: given back before the int4 weights add to the peak.
    copies = layout.dense_prefill and any(m.dense is not None for m in int4.values())
    if copies:
        from safetensors.torch import load_file

        mapped = load_file(_dense_path(path))
        _release_mapped(_dense_path(path), list(mapped.values()))
        state.update(mapped)
    if int4 and not prefill_only:
        weights, stamp = read_safetensors(_packed_path(path))
        if stamp != _packing_stamp():
            raise ValueError(f"{path.name}: int4 weights packed for {stamp}, this process runs {_packing_stamp()}")
        state.update(weights)
    if prefill_only and dense:
        state.update(_mapped_tensors(path, [f"{name}.weight" for name in dense]))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if copies:
        _mark_mapped(_dense_path(path), [(m, m.dense, "dense_mapped") for m in int4.values() if m.dense is not None])
    if prefill_only and dense:
        _mark_mapped(path, [(m, m.weight, "mapped") for m in map(model.get_submodule, dense)])
    missing = [m for m in missing if not (m == "output.weight" and _tied(model))]
    if missing or unexpected:
        raise ValueError(f"{path.name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if head and _tied(model) is False and layout.head == "dense" and shape.tie_embeddings and layout.embedding == "dense":
        model.output.weight = model.tok_embeddings.weight
    return model.norms_to_float().eval()


def _mapped_tensors(path: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """Those tensors of a safetensors file as views of its memory map (mapping each tensor reads
    around its first page: only the ones asked for)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return {name: handle.get_tensor(name) for name in names}


def _release_mapped(mapped_path: Path, tensors: list[torch.Tensor]) -> None:
    """The pages read so far of those tensors that are mapped from `mapped_path`, given back."""
    from chatbot.engine.fast.pages import mapped_from, release

    for tensor, mapped in zip(tensors, mapped_from(mapped_path.resolve(), tensors)):
        if mapped:
            release(tensor)


def _mark_mapped(mapped_path: Path, held: list[tuple[nn.Module, torch.Tensor, str]]) -> None:
    """Let the weights mapped from `mapped_path` give their pages back after use: `held` is
    (module, weight, the module's flag saying so), each verified to be mapped from the file
    (released anonymous memory would read as zeros). The pages loading touched (a read-around
    at each tensor's start: ~4% of the prefill copies) go back now."""
    from chatbot.engine.fast.pages import mapped_from, release

    for (module, tensor, flag), mapped in zip(held, mapped_from(mapped_path.resolve(), [t for _, t, _ in held])):
        setattr(module, flag, mapped)
        if mapped:
            release(tensor)


def is_cached(folder: Path, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout()) -> bool:
    """A repacked model is in `folder` (built, so the file was checked then)."""
    return (Path(folder) / f"{cache_key(dtype, layout)}.safetensors").is_file()


def load_or_build(gguf_path: Path, folder: Path, dtype: torch.dtype = torch.bfloat16, layout: Layout = Layout(),
                  progress=None, packed: bool = True, head: bool = True) -> FastLlama:
    """The repacked model from `folder` (a cache keyed by the GGUF file), building it once;
    `packed`, `head`: as in load (the cache always holds the head: the torch path needs it)."""
    key = cache_key(dtype, layout)
    path = folder / f"{key}.safetensors"
    if path.is_file():
        try:
            return load(path, gguf_path, packed, head)
        except Exception:  # a file missing (another kernel path: none packed for this one), damaged or foreign
            pass  # rebuilt below: every file is replaced whole
    if progress:
        progress(f"Repacking {Path(gguf_path).name} for the fast engine (once per CPU kernel path)...")
    map_large_allocations()  # the conversion's freed tensors go back to the system, not the heap
    folder.mkdir(parents=True, exist_ok=True)
    # NotOnFastPath before anything is written; the prefill copies written as they are made
    model = from_gguf(gguf_path, dtype, layout, dense_file=_dense_path(path))
    save(model, folder, key)
    _remove_stale(folder)
    # The built model holds its dense prefill copies in memory (bf16: ~4x an int4 layer); read
    # back, they are memory-mapped and cost RSS only once a long prefill touches them.
    del model
    return load(path, gguf_path, packed, head)


def _remove_stale(folder: Path) -> None:
    """Files of an older format, and int4 weights packed by another torch build. Those of another
    kernel path of this build stay: a cache shared between machines keeps one packing for each;
    so do those of a newer format (a newer version of this program sharing the cache)."""
    for stale in folder.glob("fast-v*"):
        version = stale.name.removeprefix("fast-v").split("-", 1)[0]
        other_format = not version.isdigit() or int(version) < FORMAT
        other_torch = ".int4-" in stale.name and not stale.name.endswith(f"-torch{torch.__version__}.safetensors")
        if other_format or other_torch:
            stale.unlink(missing_ok=True)
