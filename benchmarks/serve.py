"""`chatbot serve` under 1, 4 and 8 concurrent clients: requests/s, TTFT p50/p95 (client side, to
the first streamed text), errors. llama.cpp's own OpenAI-compatible server on the same GGUF in the
same run where llama-cpp-python's server is installed (the `bench` extra); skipped with a note
otherwise.

    python -m benchmarks.serve [--requests-per-client 2] [--max-tokens 32]

Each client streams through the `openai` library, one request after another. One engine serves
requests in turn, so requests/s stays about flat as clients are added while TTFT grows with the
queue: that is the design (docs/scale-out.md), and the numbers show its cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import report

CONCURRENCY = (1, 4, 8)
PROMPTS = ["Tell me about the sea.", "What is a good breakfast?", "Name three colours.", "Why is the sky blue?"]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode})")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not answer in time")


def one_client(url: str, model: str, requests: int, max_tokens: int, seed: int, results: list, errors: list) -> None:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)
    for i in range(requests):
        started = time.perf_counter()
        first = None
        pieces = 0  # streamed text chunks: one a token on both servers
        finish = None
        try:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPTS[(seed + i) % len(PROMPTS)]}],
                max_tokens=max_tokens, temperature=0.7, seed=seed * 100 + i, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces += 1
                    first = first or time.perf_counter()
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            if finish is None:
                raise RuntimeError("the stream ended with no finish_reason (the reply was cut)")
            results.append(((first or time.perf_counter()) - started, pieces))
        except Exception as exc:  # counted, and named in the report
            errors.append(f"{type(exc).__name__}: {exc}")


def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    results: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=one_client, args=(url, model, requests, max_tokens, n, results, errors))
               for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ttft = sorted(t for t, _ in results)
    return {
        "clients": clients,
        "requests": clients * requests,
        "requests_per_s": len(results) / wall,
        "tokens_per_s": sum(p for _, p in results) / wall,
        "tokens_per_request": sum(p for _, p in results) / len(results) if results else None,
        "ttft_p50_ms": 1000 * statistics.median(ttft) if ttft else None,
        "ttft_p95_ms": 1000 * ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))] if ttft else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def start_chatbot_serve(port: int, folder: Path) -> subprocess.Popen:
    env = dict(os.environ, CHATBOT_DATA_DIR=str(folder), CHATBOT_DB=str(folder / "bench.db"), TQDM_DISABLE="1")
    return subprocess.Popen([sys.executable, "-m", "chatbot", "serve", "--port", str(port), "--queue", "16"],
                            env=env, stderr=subprocess.DEVNULL)


LLAMA_CPP_SERVER_MODULES = ("llama_cpp", "llama_cpp.server", "sse_starlette", "starlette_context")


def llama_cpp_missing() -> str | None:
    """The first module llama.cpp's server needs that is not installed; None when all are."""
    import importlib.util

    for name in LLAMA_CPP_SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:
            return name
    return None


def start_llama_cpp_server(port: int) -> subprocess.Popen | None:
    """llama-cpp-python's OpenAI-compatible server on the bundled GGUF (model "smollm2"), on
    127.0.0.1; None where it is not installed."""
    if llama_cpp_missing() is not None:
        return None
    from chatbot.engine.loading import bundled_gguf

    return subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()),
                             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                             # its default cuts a streaming reply short when a newer request comes in
                             "--interrupt_requests", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name: str, process: subprocess.Popen, url: str, model: str, args) -> list[dict]:
    try:
        wait_for(url, process)
        load(url, model, 1, 1, 4)  # warm-up: the first request pays for lazy set-up
        return [{"server": name, **load(url, model, c, args.requests_per_client, args.max_tokens)} for c in CONCURRENCY]
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        runs += measure("chatbot serve", start_chatbot_serve(port, Path(folder)), f"http://127.0.0.1:{port}/v1",
                        "smollm2-135m", args)
    port = free_port()
    llama = start_llama_cpp_server(port)
    note = "measured" if llama else "skipped: llama-cpp-python's server is not installed (pip install -e '.[bench]')"
    if llama is not None:
        runs += measure("llama.cpp server", llama, f"http://127.0.0.1:{port}/v1", "smollm2", args)
    rows = [(f"{r['server']}, {r['clients']} client(s)",
             f"{r['requests_per_s']:.2f} req/s, {r['tokens_per_s']:.1f} tok/s",
             f"TTFT p50 {r['ttft_p50_ms']:.0f} ms, p95 {r['ttft_p95_ms']:.0f} ms, errors {r['errors']}")
            for r in runs if r["ttft_p50_ms"] is not None]
    rows += [(f"{r['server']}, {r['clients']} client(s)", "failed", r["first_error"] or "")
             for r in runs if r["ttft_p50_ms"] is None]
    report("chatbot serve under concurrent clients", rows,
           {"runs": runs, "max_tokens": args.max_tokens, "requests_per_client": args.requests_per_client,
            "llama_cpp": note})
    if any(r["errors"] for r in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
