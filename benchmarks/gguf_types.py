"""Per GGUF quant type, on the bundled model re-quantized to that type: what the fast path adds
on top of the file (held-out perplexity ratio against the fp32 dequantized model of the same
file: every tensor decoded by gguf's own dequantize, the same numbers transformers' GGUF loader
computes, run dense in fp32; the same top token), what the type itself costs (its fp32
perplexity against the bundled file's), decode tok/s (and llama.cpp's on the same file where the
bench extra is installed) and the file's size.

The types gguf-py can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16, F16) are made here from the
bundled model's weights; the K-quants (Q4_K_M...) need llama.cpp's quantizer
(`llama_cpp.llama_model_quantize`, the optional `bench` extra): skipped with a note where absent.

    .venv/bin/python -m benchmarks.gguf_types [--types Q4_0,Q8_0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OWN_QUANTIZER = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16", "F16")
LLAMA_CPP_FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}  # llama.cpp's LLAMA_FTYPE_MOSTLY_*
HELD_OUT = (Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "greedy_prompts.txt")


def requantize(source: Path, target: Path, kind: str) -> Path:
    """Every 2-D weight of `source` dequantized (gguf) and quantized again to `kind` (gguf)."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize, quantize

    reader = GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(target), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        if name == "general.file_type":
            continue
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    qtype = GGMLQuantizationType[kind]
    for t in reader.tensors:
        cols = int(t.shape[0])
        rows = int(t.n_elements // cols)
        if len(t.shape) < 2:
            writer.add_tensor(t.name, np.array(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(cols))
            continue
        weight = dequantize(t.data, t.tensor_type).reshape(rows, cols).astype(np.float32)
        if kind == "F16":
            writer.add_tensor(t.name, weight.astype(np.float16))
        else:
            writer.add_tensor(t.name, quantize(weight, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def llama_cpp_quantize(source: Path, target: Path, ftype: int) -> Path | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        return None
    return target


def measure(path: Path, ids: torch.Tensor, base_nll: float | None) -> dict:
    from benchmarks import fast as fastbench
    from chatbot.engine.fast import closeness, loader
    from chatbot.engine.fast.model import Layout

    with torch.inference_mode():
        ref = loader.from_gguf(path, torch.float32, Layout("dense", "dense", "dense", False))
        theirs = ref(ids, logits="all")
        del ref
        fast = loader.from_gguf(path)
        fast.cache.length = 0
        ours = fast(ids, logits="all").float()
        step = torch.tensor([int(ids[0])])
        fast.cache.length = 0
        fast(ids[:16], logits="none")
        start, n = time.perf_counter(), 32
        for _ in range(n):
            step = fast(step).argmax(-1).view(1)
        tok_s = n / (time.perf_counter() - start)
    nll = torch.nn.functional.cross_entropy(theirs[:-1], ids[1:]).item()
    llama_tok_s = None
    if fastbench.llama_cpp_available():
        llama = fastbench.LlamaCpp(str(path))
        llama_tok_s = round(llama.decode(ids[:16].tolist(), n), 1)
        llama.close()
    return {
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "fast_vs_file_ppl_ratio": round(closeness.perplexity_ratio(ours, theirs, ids), 4),
        "same_top_token": round(float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()), 4),
        "type_vs_bundled_ppl_ratio": None if base_nll is None else round(float(np.exp(nll - base_nll)), 4),
        "decode_tok_s": round(tok_s, 1),
        "llama_cpp_decode_tok_s": llama_tok_s,
        "_nll": nll,
    }


def measure_types(types: list[str]) -> dict:
    """{row name: figures} for the bundled model and each type re-quantized from it."""
    from transformers.utils import logging

    from chatbot.engine.loading import bundled_gguf
    from chatbot.engine.standalone_tokenizer import StandaloneTokenizer

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    source = bundled_gguf()
    from chatbot.engine.loading import converted_dir, metadata_folder
    from chatbot.config import Settings

    tokenizer = StandaloneTokenizer.open(metadata_folder(source, converted_dir(source, Settings().cache_dir), print))
    text = " ".join(HELD_OUT.read_text(encoding="utf-8").splitlines())
    ids = torch.tensor(tokenizer(text)["input_ids"][:256])
    rows = {"bundled (Q4_1 layers, Q8_0 embedding)": measure(source, ids, None)}
    base = rows["bundled (Q4_1 layers, Q8_0 embedding)"]["_nll"]
    with tempfile.TemporaryDirectory() as work:
        for kind in types:
            target = Path(work) / f"smol-{kind}.gguf"
            if kind in OWN_QUANTIZER:
                made = requantize(source, target, kind)
            else:
                made = llama_cpp_quantize(source, target, LLAMA_CPP_FTYPES[kind])
            if made is None:
                rows[kind] = {"note": "skipped: llama.cpp's quantizer is in the optional bench extra (llama-cpp-python)"}
                continue
            rows[kind] = measure(made, ids, base)
            made.unlink()
            print(kind, rows[kind], flush=True)
    for row in rows.values():
        row.pop("_nll", None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default=",".join(OWN_QUANTIZER + tuple(LLAMA_CPP_FTYPES)))
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = measure_types(args.types.split(","))
    print(json.dumps(rows, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
