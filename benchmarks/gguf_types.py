"""Per GGUF quant type, on the bundled model re-quantized to that type: what the fast path adds
on top of the file (held-out perplexity ratio against the fp32 dequantized model of the same
file: every tensor decoded by gguf's own dequantize, the same numbers transformers' GGUF loader
computes, run dense in fp32; the same top token), what the type itself costs (its fp32
perplexity against the bundled file's), the file's tensor types, and in processes of their own:
decode tok/s and peak RSS of our engine (native kernels where they take the file, and the torch
path) and of llama.cpp on the same file (the optional `bench` extra).

Files are re-quantized by llama.cpp's own quantizer (`llama_cpp.llama_model_quantize`) where the
bench extra is installed; without it the types gguf-py can write (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
BF16, F16) are made by gguf-py and the K-quant mixes are skipped with a note.

    .venv/bin/python -m benchmarks.gguf_types [--types Q4_0,Q8_0,Q4_K_M] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OWN_QUANTIZER = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16", "F16")
# llama.cpp's LLAMA_FTYPE_MOSTLY_*
LLAMA_CPP_FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "F16": 1, "BF16": 32,
                    "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}
DEFAULT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_M", "Q5_K_M")
ROOT = Path(__file__).resolve().parents[1]
DECODE_STEPS = int(os.environ.get("CHATBOT_BENCH_STEPS", "32"))  # --steps
PROMPT_IDS = list(range(100, 116))
LONG_PROMPT = 512
LLAMA_N_CTX = 512  # llama.cpp allocates its KV cache for all of it up front (ours grows from 256)
# threads of every engine here (--threads; children read it from the environment)
THREADS = int(os.environ.get("CHATBOT_BENCH_THREADS", "2"))
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


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGUF type the file holds (a K-quant mix is several)."""
    from gguf import GGUFReader

    counts = collections.Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors if len(t.shape) > 1)
    return dict(counts.most_common())


# -- in a process of its own: peak RSS and decode speed ------------------------------------------


def _status_mb(key: str) -> float:
    line = [line for line in open("/proc/self/status") if line.startswith(key)][0]
    return int(line.split()[1]) / 1024


def _engine_imports():
    """What opening a model imports, imported before the baseline so that only the model counts."""
    import gguf  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tokenizers  # noqa: F401

    from chatbot.engine import standalone_tokenizer  # noqa: F401
    from chatbot.engine.fast import engine as fast_engine
    from chatbot.engine.native import decoder  # noqa: F401

    return fast_engine


def child_engine(path: str, cache_dir: str) -> dict:
    """Our engine on `path` as `chatbot` opens it (load_fast + build_fast_engine): RSS over the
    process after its imports, at the peak of loading and decoding; decode tok/s."""
    fast_engine = _engine_imports()
    torch.set_num_threads(THREADS)
    base = _status_mb("VmRSS")
    started = time.perf_counter()
    loaded = fast_engine.load_fast(path, Path(cache_dir))
    engine = fast_engine.build_fast_engine(loaded)
    load_s = time.perf_counter() - started
    with torch.inference_mode():
        token = int(engine._forward(PROMPT_IDS)[0, -1].argmax())
        started = time.perf_counter()
        for _ in range(DECODE_STEPS):
            token = int(engine._forward([token])[0, -1].argmax())
        tok_s = DECODE_STEPS / (time.perf_counter() - started)
        short = _status_mb("VmHWM") - base
        engine.model.cache.length = 0  # a long prompt (a resumed conversation) goes through the dense copies
        engine.model(torch.arange(LONG_PROMPT) % 1000 + 100, logits="none")
    return {"kernels": engine.kernels, "load_s": load_s, "decode_tok_s": tok_s,
            "rss_added_mb": short, "rss_added_long_prompt_mb": _status_mb("VmHWM") - base}


def child_tokenizer(path: str, cache_dir: str) -> dict:
    """RSS the tokenizer (and config) of `path` take alone: part of every engine's, not the weights."""
    from chatbot.engine import loading

    _engine_imports()
    base = _status_mb("VmRSS")
    folder = loading.metadata_folder(Path(path), loading.converted_dir(Path(path), Path(cache_dir)), lambda m: None)
    loading.open_tokenizer_and_config(folder)
    return {"rss_added_mb": _status_mb("VmRSS") - base}


def child_llama(path: str) -> dict:
    """llama.cpp on the same file (THREADS threads, n_ctx LLAMA_N_CTX): RSS over the process after
    `import llama_cpp`, at the peak of loading and decoding; decode tok/s."""
    import llama_cpp  # noqa: F401

    from benchmarks.fast import LlamaCppHere

    base = _status_mb("VmRSS")
    llama = LlamaCppHere(path, n_ctx=LLAMA_N_CTX, n_threads=THREADS)
    tok_s = llama.decode(PROMPT_IDS, DECODE_STEPS + 1)
    return {"load_s": llama.load_s, "decode_tok_s": tok_s, "rss_added_mb": _status_mb("VmHWM") - base}


def in_child(kind: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.gguf_types", "--child", kind, *args],
                         capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", **(env or {})))
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def processes(path: Path, cache_dir: Path, tokenizer_mb: float | None) -> dict:
    """The figures measured in processes of their own (the first run builds what is left to build:
    the native kernels' weights; its peak is the first use's)."""
    size_mb = path.stat().st_size / 2**20
    first = in_child("engine", str(path), str(cache_dir))
    auto = in_child("engine", str(path), str(cache_dir))
    torch_path = in_child("engine", str(path), str(cache_dir), env={"CHATBOT_NATIVE": "off"})
    if tokenizer_mb is None:
        tokenizer_mb = in_child("tokenizer", str(path), str(cache_dir))["rss_added_mb"]
    row = {
        "first_native_build_rss_added_mb": round(first["rss_added_mb"]),
        "tokenizer_rss_mb": round(tokenizer_mb, 1),
    }
    for name, run in (("engine", auto), ("torch", torch_path)):
        row[f"{name}_kernels"] = run["kernels"]
        row[f"{name}_decode_tok_s"] = round(run["decode_tok_s"], 1)
        row[f"{name}_rss_added_mb"] = round(run["rss_added_mb"])
        row[f"{name}_rss_vs_file"] = round(run["rss_added_mb"] / size_mb, 2)
        row[f"{name}_rss_less_tokenizer_vs_file"] = round((run["rss_added_mb"] - tokenizer_mb) / size_mb, 2)
        row[f"{name}_rss_after_{LONG_PROMPT}_token_prompt_vs_file"] = round(run["rss_added_long_prompt_mb"] / size_mb, 2)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        row["llama_cpp"] = "not installed (the bench extra)"
        return row
    llama = in_child("llama", str(path))
    row["llama_cpp_decode_tok_s"] = round(llama["decode_tok_s"], 1)
    row["llama_cpp_rss_added_mb"] = round(llama["rss_added_mb"])
    row["llama_cpp_rss_vs_file"] = round(llama["rss_added_mb"] / size_mb, 2)
    return row


def measure(path: Path, ids: torch.Tensor, base_nll: float | None, cache_dir: Path, tokenizer_mb: float | None = None) -> dict:
    from chatbot.engine.fast import closeness, loader
    from chatbot.engine.fast.engine import fast_folder
    from chatbot.engine.fast.model import Layout
    from chatbot.engine.loading import converted_dir

    with torch.inference_mode():
        ref = loader.from_gguf(path, torch.float32, Layout("dense", "dense", "dense", False))
        theirs = ref(ids, logits="all")
        del ref
        # the torch path (native kernels decode one token at a time), repacked where the engine's
        # own runs below find it
        fast = loader.load_or_build(path, fast_folder(converted_dir(path, cache_dir)))
        fast.cache.length = 0
        ours = fast(ids, logits="all").float()
        del fast
    nll = torch.nn.functional.cross_entropy(theirs[:-1], ids[1:]).item()
    return {
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "tensor_types": tensor_types(path),
        "fast_vs_file_ppl_ratio": round(closeness.perplexity_ratio(ours, theirs, ids), 4),
        "same_top_token": round(float((ours.argmax(-1) == theirs.argmax(-1)).float().mean()), 4),
        "type_vs_bundled_ppl_ratio": None if base_nll is None else round(float(np.exp(nll - base_nll)), 4),
        **processes(path, cache_dir, tokenizer_mb),
        "_nll": nll,
    }


def make_file(source: Path, target: Path, kind: str) -> tuple[Path | None, str]:
    """`source` re-quantized to `kind`, and by what (llama.cpp's quantizer where installed)."""
    made = llama_cpp_quantize(source, target, LLAMA_CPP_FTYPES[kind]) if kind in LLAMA_CPP_FTYPES else None
    if made is not None:
        return made, "llama.cpp"
    if kind in OWN_QUANTIZER:
        return requantize(source, target, kind), "gguf-py"
    return None, "skipped: llama.cpp's quantizer is in the optional bench extra (llama-cpp-python)"


def measure_types(types: list[str]) -> dict:
    """{row name: figures} for the bundled model and each type re-quantized from it."""
    from transformers.utils import logging

    from chatbot.config import Settings
    from chatbot.engine.loading import bundled_gguf, converted_dir, metadata_folder
    from chatbot.engine.standalone_tokenizer import StandaloneTokenizer

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    source = bundled_gguf()
    tokenizer = StandaloneTokenizer.open(metadata_folder(source, converted_dir(source, Settings().cache_dir), print))
    text = " ".join(HELD_OUT.read_text(encoding="utf-8").splitlines())
    ids = torch.tensor(tokenizer(text)["input_ids"][:256])
    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"  # repacked and metadata folders of these files: removed after
        bundled = "bundled (Q4_1 layers, Q8_0 embedding)"
        rows = {bundled: measure(source, ids, None, cache)}
        print(bundled, rows[bundled], flush=True)
        base, tokenizer_mb = rows[bundled]["_nll"], rows[bundled]["tokenizer_rss_mb"]  # the same tokenizer in all
        for kind in types:
            made, by = make_file(source, Path(work) / f"smol-{kind}.gguf", kind)
            if made is None:
                rows[kind] = {"note": by}
                continue
            rows[kind] = {"quantizer": by, **measure(made, ids, base, cache, tokenizer_mb)}
            made.unlink()
            print(kind, rows[kind], flush=True)
    for row in rows.values():
        row.pop("_nll", None)
    return rows


CHILDREN = {"engine": child_engine, "tokenizer": child_tokenizer, "llama": child_llama}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--types", default=",".join(DEFAULT_TYPES))
    parser.add_argument("--json")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads of each engine (default 2)")
    parser.add_argument("--steps", type=int, default=DECODE_STEPS, help="decode steps timed (default 32)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](*args.child[1:])))
        return
    os.environ["CHATBOT_BENCH_THREADS"], os.environ["CHATBOT_BENCH_STEPS"] = str(args.threads), str(args.steps)
    torch.set_num_threads(args.threads)
    rows = measure_types(args.types.split(","))
    print(json.dumps(rows, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
