"""Pieces of the decode benchmark that concern the fast engine: llama.cpp on the same GGUF (the
optional `bench` extra), cold start of `chatbot ask` to its first token, peak RSS, and a row per
GGUF quant type (benchmarks.gguf_types: the bundled model re-quantized).

    .venv/bin/python -m benchmarks.fast      cold start + RSS of both engines, and llama.cpp
    .venv/bin/python -m benchmarks.fast --types Q4_0,Q8_0,Q4_K_M   + rows per quant type
    .venv/bin/python -m benchmarks.fast --runs 0 --types ...        only those (make bench)
    make bench                               everything, in one table (benchmarks.decode)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import report

ROOT = Path(__file__).resolve().parents[1]
LLAMA_CPP_NOTE = (
    "llama.cpp: skipped (llama-cpp-python is not installed; `pip install -e '.[bench]'` adds it, "
    "and compiling it takes ~9 minutes on 2 cores)"
)


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class LlamaCppHere:
    """llama-cpp-python on the bundled GGUF, in this process: greedy decode and prefix-cached
    prompts. `LlamaCpp` runs it in a process of its own."""

    def __init__(self, gguf_path: str, n_ctx: int = 4096, n_threads: int | None = None):
        from llama_cpp import Llama

        started = time.perf_counter()
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, n_threads=n_threads or os.cpu_count() or 2, verbose=False)
        self.load_s = time.perf_counter() - started

    def _next(self) -> int:
        """Greedy token after the evaluated sequence. (`Llama.scores` is no longer filled unless
        every position's logits are kept, so read the last position's from the context.)"""
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.llm.n_vocab(),))
        return int(logits.argmax())

    def decode(self, prompt_ids: list[int], new_tokens: int) -> float:
        """tok/s of `new_tokens` greedy tokens after the prompt (EOS ignored), prefill excluded."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        token = self._next()
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([token])
            token = self._next()
        return (new_tokens - 1) / (time.perf_counter() - started)

    def ttft_ms(self, prompt_ids: list[int]) -> float:
        """Time to the first token, reusing the longest common prefix of the kept context."""
        started = time.perf_counter()
        cached = list(self.llm.input_ids[: self.llm.n_tokens])
        common = 0
        for a, b in zip(cached, prompt_ids[:-1]):
            if a != b:
                break
            common += 1
        self.llm.n_tokens = common
        self.llm.eval(prompt_ids[common:])
        self._next()
        return (time.perf_counter() - started) * 1000

    def reply(self, prompt_ids: list[int], eos: set[int], max_tokens: int) -> list[int]:
        out = []
        token = self._next()
        while token not in eos and len(out) < max_tokens:
            out.append(token)
            self.llm.eval([token])
            token = self._next()
        return out


class LlamaCpp:
    """`LlamaCppHere` in a child process, same methods. In the benchmark's own process, after
    torch's bf16 `generate` has run, llama.cpp's AVX-512/AMX kernels died with SIGILL; apart, both
    run as they would alone (and neither's threads compete with the other's)."""

    def __init__(self, gguf_path: str):
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fast", "--serve-llama", gguf_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        self.load_s = self._call("load_s")

    def _call(self, name: str, *args):
        self._proc.stdin.write(json.dumps([name, list(args)]) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the llama.cpp process ended (exit {self._proc.wait()})")
        return json.loads(line)

    def decode(self, prompt_ids: list[int], new_tokens: int) -> float:
        return self._call("decode", prompt_ids, new_tokens)

    def reset(self) -> None:
        self._call("reset")

    def ttft_ms(self, prompt_ids: list[int]) -> float:
        return self._call("ttft_ms", prompt_ids)

    def reply(self, prompt_ids: list[int], eos: set[int], max_tokens: int) -> list[int]:
        return self._call("reply", prompt_ids, sorted(eos), max_tokens)

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.wait()


def serve_llama(gguf_path: str) -> None:
    """The child side of `LlamaCpp`: one JSON call per line in, one JSON result per line out."""
    llama = LlamaCppHere(gguf_path)
    for line in sys.stdin:
        name, args = json.loads(line)
        if name == "load_s":
            result = llama.load_s
        elif name == "reset":
            result = llama.llm.reset()
        elif name == "reply":
            result = llama.reply(args[0], set(args[1]), args[2])
        else:
            result = getattr(llama, name)(*args)
        print(json.dumps(result), flush=True)


# The child reports its own VmHWM at exit: a forked child's ru_maxrss would include the parent's
# memory from before exec (this benchmark process holds two models).
_RUN_WITH_HWM = (
    "import atexit, runpy, sys\n"
    "def hwm(path=sys.argv[1]):\n"
    "    line = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
    "    open(path, 'w').write(line.split()[1])\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['chatbot'] + sys.argv[2:]\n"
    "runpy.run_module('chatbot', run_name='__main__')\n"
)


def cold_start(engine: str, work: Path, prompt: str = "Hi!", tokens: int = 8) -> dict:
    """`chatbot ask` in a fresh process, on the database and data folder in `work`: seconds from
    exec to the first byte of the reply on stdout, wall seconds in all, and the child's peak RSS
    (MB, VmHWM)."""
    env = dict(os.environ)
    env.update(CHATBOT_DB=str(work / "c.db"), CHATBOT_DATA_DIR=str(work / "data"),
               CHATBOT_TEMPERATURE="0", CHATBOT_MAX_NEW_TOKENS=str(tokens), TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT))
    hwm = work / "hwm"
    hwm.unlink(missing_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _RUN_WITH_HWM, str(hwm), "--engine", engine, "ask", prompt],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    first_at = time.perf_counter() - started
    proc.stdout.read()
    if proc.wait() != 0 or not first:
        raise RuntimeError(f"chatbot --engine {engine} ask failed ({proc.returncode})")
    peak_kb = int(hwm.read_text()) if hwm.exists() else 0
    return {"first_token_s": first_at, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_kb / 1024}


def import_torch_s() -> float:
    """Seconds for a fresh Python to `import torch`: the floor under the cold start of any engine
    written in torch, measured beside it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - started


def kernel_floor_tok_s(model, steps: int = 32, repeats: int = 3) -> float:
    """tok/s of a decode step's matmuls alone: the fast model's own packed weights (4 projections
    a layer, then the head) on one activation row, in the step's order, nothing else. No decode
    loop over these kernels can beat it on this machine."""
    import torch

    s = model.shape
    rows = {n: torch.randn(1, n).to(model.dtype) for n in (s.dim, s.n_heads * s.head_dim, s.hidden_dim)}

    def step() -> None:
        for layer in model.layers:
            layer.wqkv(rows[s.dim])
            layer.wo(rows[s.n_heads * s.head_dim])
            layer.w13(rows[s.dim])
            layer.w2(rows[s.hidden_dim])
        model.output(rows[s.dim])

    best = 0.0
    with torch.inference_mode():
        step()
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(steps):
                step()
            best = max(best, steps / (time.perf_counter() - started))
    return best


def cold_starts(runs: int) -> dict:
    """Best time to first token and largest peak RSS of `chatbot ask` on each engine, and the best
    `import torch`, over `runs` alternated rounds (so background load hits all alike)."""
    results: dict[str, list[dict]] = {"fast": [], "reference": []}
    torch_s = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Not timed: builds the repacked weights if missing and creates the database, as a user's
        # first run does; the timed starts find both there, as every later run does.
        cold_start("fast", work)
        for _ in range(runs):
            for name, bucket in results.items():
                bucket.append(cold_start(name, work))
            torch_s.append(import_torch_s())
    summary = {name: {"first_token_s": min(r["first_token_s"] for r in rs), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
               for name, rs in results.items()}
    return {**summary, "import_torch_s": min(torch_s)}


def cold_rows(cold: dict) -> list[tuple[str, str, str]]:
    ok = lambda cond: "PASS" if cond else "MISS"  # noqa: E731
    fast, ref = cold["fast"], cold["reference"]
    return [
        ("fast: cold start to first token (s)", f"{fast['first_token_s']:.2f}", f"target < 2 s: {ok(fast['first_token_s'] < 2)} (weights, database there)"),
        ("reference: cold start to first token (s)", f"{ref['first_token_s']:.2f}", ""),
        ("`import torch` alone (s)", f"{cold['import_torch_s']:.2f}", "the floor under any torch engine's start"),
        ("fast: peak RSS of `ask` (MB)", f"{fast['peak_rss_mb']:.0f}", f"target < 600: {ok(fast['peak_rss_mb'] < 600)}"),
        ("reference: peak RSS of `ask` (MB)", f"{ref['peak_rss_mb']:.0f}", ""),
    ]


def quant_type_rows(types: list[str]) -> tuple[list[tuple[str, str, str]], dict]:
    """Rows per quant type: decode tok/s and peak RSS against the file of our engine and of
    llama.cpp on the same file (where installed), and the fast path's perplexity ratio against the
    fp32 dequantized file; a type without a quantizer here is a row saying so."""
    from benchmarks.gguf_types import measure_types

    figures = measure_types(types)
    rows = []
    for kind, row in figures.items():
        if "note" in row:
            rows.append((f"{kind}: decode", "skipped", row["note"]))
            continue
        llama = row.get("llama_cpp_decode_tok_s")
        rows.append((f"{kind}: decode tok/s, {row['engine_kernels']} / torch", f"{row['engine_decode_tok_s']:.1f} / {row['torch_decode_tok_s']:.1f}",
                     f"llama.cpp {llama:.1f}" if llama else "llama.cpp: not installed"))
        llama_rss = f"llama.cpp {row['llama_cpp_rss_added_mb']} MiB ({row['llama_cpp_rss_vs_file']}x)" if llama else ""
        rows.append((f"{kind}: peak RSS added, {row['engine_kernels']} / torch ({row['file_mb']} MiB file)",
                     f"{row['engine_rss_added_mb']} / {row['torch_rss_added_mb']} MiB "
                     f"({row['engine_rss_vs_file']}x / {row['torch_rss_vs_file']}x)",
                     f"less the tokenizer's {row['tokenizer_rss_mb']} MiB: {row['engine_rss_less_tokenizer_vs_file']}x / "
                     f"{row['torch_rss_less_tokenizer_vs_file']}x; target 1.5x; {llama_rss}"))
        rows.append((f"{kind}: perplexity ratio vs the fp32 file", f"{row['fast_vs_file_ppl_ratio']:.4f}",
                     f"same top token {row['same_top_token']:.1%}"))
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="cold starts of each engine (0: none)")
    parser.add_argument("--types", help="also a row per GGUF quant type, e.g. Q4_0,Q8_0,Q4_K_M")
    parser.add_argument("--serve-llama", metavar="GGUF", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_llama:
        return serve_llama(args.serve_llama)
    if not llama_cpp_available():
        print(LLAMA_CPP_NOTE)
    if args.runs > 0:  # (make bench runs the cold starts in benchmarks.decode, and only --types here)
        cold = cold_starts(args.runs)
        report("cold start: `chatbot ask` to its first token, weights cached", cold_rows(cold), cold)
    if args.types:
        rows, figures = quant_type_rows(args.types.split(","))
        report("GGUF quant types: the bundled model re-quantized", rows, figures)


if __name__ == "__main__":
    main()
