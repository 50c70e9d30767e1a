"""Pieces of the decode benchmark that concern the fast engine: llama.cpp on the same GGUF (the
optional `bench` extra), cold start of `chatbot ask` to its first token, and peak RSS.

    .venv/bin/python -m benchmarks.fast      cold start + RSS of both engines, and llama.cpp
    make bench                               everything, in one table (benchmarks.decode)
"""

from __future__ import annotations

import argparse
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


class LlamaCpp:
    """llama-cpp-python on the bundled GGUF: greedy decode and prefix-cached prompts."""

    def __init__(self, gguf_path: str, n_ctx: int = 4096):
        from llama_cpp import Llama

        started = time.perf_counter()
        self.llm = Llama(model_path=gguf_path, n_ctx=n_ctx, n_threads=os.cpu_count() or 2, verbose=False)
        self.load_s = time.perf_counter() - started

    def decode(self, prompt_ids: list[int], new_tokens: int) -> float:
        """tok/s of `new_tokens` greedy tokens after the prompt (EOS ignored), prefill excluded."""
        self.llm.reset()
        self.llm.eval(prompt_ids)
        token = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
        started = time.perf_counter()
        for _ in range(new_tokens - 1):
            self.llm.eval([token])
            token = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
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
        int(self.llm.scores[self.llm.n_tokens - 1].argmax())
        return (time.perf_counter() - started) * 1000

    def reply(self, prompt_ids: list[int], eos: set[int], max_tokens: int) -> list[int]:
        out = []
        token = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
        while token not in eos and len(out) < max_tokens:
            out.append(token)
            self.llm.eval([token])
            token = int(self.llm.scores[self.llm.n_tokens - 1].argmax())
        return out


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


def cold_start(engine: str, prompt: str = "Hi!", tokens: int = 8) -> dict:
    """`chatbot ask` in a fresh process (weights already cached): seconds from exec to the first
    byte of the reply on stdout, wall seconds in all, and the child's peak RSS (MB, VmHWM)."""
    with tempfile.TemporaryDirectory() as work:
        env = dict(os.environ)
        env.update(CHATBOT_DB=str(Path(work) / "c.db"), CHATBOT_DATA_DIR=str(Path(work) / "data"),
                   CHATBOT_TEMPERATURE="0", CHATBOT_MAX_NEW_TOKENS=str(tokens), TQDM_DISABLE="1",
                   PYTHONPATH=str(ROOT))
        started = time.perf_counter()
        hwm = Path(work) / "hwm"
        proc = subprocess.Popen([sys.executable, "-c", _RUN_WITH_HWM, str(hwm), "--engine", engine, "ask", prompt],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        first = proc.stdout.read(1)
        first_at = time.perf_counter() - started
        proc.stdout.read()
        if proc.wait() != 0 or not first:
            raise RuntimeError(f"chatbot --engine {engine} ask failed ({proc.returncode})")
        peak_kb = int(hwm.read_text()) if hwm.exists() else 0
        return {"first_token_s": first_at, "wall_s": time.perf_counter() - started, "peak_rss_mb": peak_kb / 1024}


def best_cold_start(engine: str, runs: int) -> dict:
    results = [cold_start(engine) for _ in range(runs)]
    return {
        "first_token_s": min(r["first_token_s"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cold_start("fast")  # builds the repacked cache if missing: not timed
    fast, ref = {"first_token_s": [], "peak_rss_mb": []}, {"first_token_s": [], "peak_rss_mb": []}
    for _ in range(args.runs):  # alternated, so background load hits both alike
        for name, bucket in (("fast", fast), ("reference", ref)):
            r = cold_start(name)
            bucket["first_token_s"].append(r["first_token_s"])
            bucket["peak_rss_mb"].append(r["peak_rss_mb"])
    ok = lambda cond: "PASS" if cond else "MISS"  # noqa: E731
    rows = [
        ("fast: cold start to first token (s)", f"{min(fast['first_token_s']):.2f}", f"target < 2 s: {ok(min(fast['first_token_s']) < 2)}"),
        ("reference: cold start to first token (s)", f"{min(ref['first_token_s']):.2f}", ""),
        ("fast: peak RSS (MB)", f"{max(fast['peak_rss_mb']):.0f}", f"target < 600 MB: {ok(max(fast['peak_rss_mb']) < 600)}"),
        ("reference: peak RSS (MB)", f"{max(ref['peak_rss_mb']):.0f}", ""),
    ]
    if not llama_cpp_available():
        print(LLAMA_CPP_NOTE)
    report("cold start: `chatbot ask` to its first token, weights cached", rows, {"fast": fast, "reference": ref})


if __name__ == "__main__":
    main()
