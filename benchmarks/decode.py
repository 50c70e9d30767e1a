"""Decode speed and time to first token of this engine, against `model.generate`, in one run.

Greedy, 128 new tokens, the bundled model (bf16 unless --dtype). TTFT is measured at turns 1 and 20
of a 20-turn conversation with prefix reuse on and off (off = re-encode everything each turn, as
`generate` does).

The fast engine (chatbot/engine/fast) runs in the same process and the same interleaved repeats,
and llama.cpp (llama-cpp-python, the optional `bench` extra) on the same GGUF when installed; the
cold start of `chatbot ask` to its first token and its peak RSS are measured in child processes
(see benchmarks/fast.py). Targets are ratios against anchors measured in this same run.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from benchmarks import fast as fastbench  # noqa: E402
from benchmarks.common import report  # noqa: E402
from chatbot.config import Settings  # noqa: E402
from chatbot.engine.decoding import Engine  # noqa: E402
from chatbot.engine.loading import load_model  # noqa: E402
from chatbot.engine.sampling import SamplingParams  # noqa: E402
from chatbot.memory.context import ContextBuilder  # noqa: E402
from chatbot.memory.render import Turn  # noqa: E402
from chatbot.personas.schema import Persona  # noqa: E402

# No control code: the model as it is, the same prompt for every engine and for llama.cpp.
PLAIN = Persona(name="plain")
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
QUESTIONS = [
    "Hi! Can you help me plan a trip?",
    "I want to visit Japan in spring.",
    "What cities should I see?",
    "How many days in Kyoto?",
    "What food should I try there?",
    "Is the train pass worth it?",
    "What about Osaka?",
    "Any tips for cherry blossom season?",
    "How do I get from the airport to Tokyo?",
    "What should I pack?",
    "Do I need cash or cards?",
    "What are some polite customs?",
    "Recommend a day trip from Tokyo.",
    "Where can I see Mount Fuji?",
    "Is it expensive to eat out?",
    "What souvenirs are popular?",
    "How do I use the subway?",
    "Any good museums?",
    "What about nightlife?",
    "Summarize my trip plan in three lines.",
]


def decode_rate(fn, new_tokens: int) -> float:
    start = time.perf_counter()
    fn()
    return new_tokens / (time.perf_counter() - start)


def bench_decode(loaded, new_tokens: int, repeats: int, fast_engine=None, llama=None) -> dict:
    ids = ContextBuilder(loaded.tokenizer).build(PLAIN, [], PROMPT).prompt_ids
    # No EOS: both sides produce exactly `new_tokens`.
    engine = Engine(loaded.model, loaded.tokenizer, eos_token_ids=set(), max_context=loaded.info.context_length)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    input_ids = torch.tensor([ids])

    def ours():
        engine.reset()
        engine.generate(ids, params).run()

    def fast_rate() -> float:  # the engine's own count: decode only, prefill excluded as llama.cpp's
        fast_engine.reset()
        generation = fast_engine.generate(ids, params)
        generation.run()
        return generation.stats.tokens_per_s

    def theirs():
        with torch.inference_mode():
            loaded.model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=0,
            )

    ours(), theirs()  # warm-up
    if fast_engine is not None:
        fast_rate()
    engine_rates, generate_rates, fast_rates, llama_rates = [], [], [], []
    for _ in range(repeats):  # interleaved, so background load hits all alike
        engine_rates.append(decode_rate(ours, new_tokens))
        generate_rates.append(decode_rate(theirs, new_tokens))
        if fast_engine is not None:
            fast_rates.append(fast_rate())
        if llama is not None:
            llama_rates.append(llama.decode(ids, new_tokens))
    result = {"engine_tok_s": max(engine_rates), "generate_tok_s": max(generate_rates)}
    if fast_rates:
        result["fast_tok_s"] = max(fast_rates)
    if llama_rates:
        result["llama_cpp_tok_s"] = max(llama_rates)
    return result


def bench_ttft(loaded, reuse: bool, reply_tokens: int, engine=None) -> list[float]:
    engine = engine or Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, loaded.info.context_length)
    engine.reset()  # turn 1 starts from nothing kept, as llama.cpp's (reset) and a fresh process's do
    builder = ContextBuilder(loaded.tokenizer, budget=2048)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=reply_tokens)
    history: list[Turn] = []
    ttfts = []
    for question in QUESTIONS:
        context = builder.build(PLAIN, history, question)
        generation = engine.generate(context.prompt_ids, params, reuse=reuse)
        reply = generation.run()
        ttfts.append(generation.stats.ttft_ms)
        history.append(Turn(question, reply))
    return ttfts


def bench_ttft_llama(loaded, llama, reply_tokens: int) -> list[float]:
    builder = ContextBuilder(loaded.tokenizer, budget=2048)
    history: list[Turn] = []
    ttfts = []
    llama.reset()
    for question in QUESTIONS:
        ids = builder.build(PLAIN, history, question).prompt_ids
        ttfts.append(llama.ttft_ms(ids))
        reply = loaded.tokenizer.decode(llama.reply(ids, loaded.eos_token_ids, reply_tokens), skip_special_tokens=True)
        history.append(Turn(question, reply))
    return ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reply-tokens", type=int, default=64)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--no-fast", action="store_true", help="only the reference engine and generate")
    args = parser.parse_args()

    settings = Settings()
    loaded = load_model("", settings.cache_dir, dtype=args.dtype)
    fast_engine = llama = None
    if not args.no_fast:
        from chatbot.engine.fast.engine import FastEngine, load_fast

        fast_loaded = load_fast("", settings.cache_dir)
        fast_engine = FastEngine(fast_loaded.model, fast_loaded.tokenizer, fast_loaded.eos_token_ids,
                                 fast_loaded.info.context_length)
        if fastbench.llama_cpp_available():
            llama = fastbench.LlamaCpp(loaded.info.source)
        else:
            print(fastbench.LLAMA_CPP_NOTE)
    decode = bench_decode(loaded, args.new_tokens, args.repeats, fast_engine, llama)
    with_reuse = bench_ttft(loaded, True, args.reply_tokens)
    without_reuse = bench_ttft(loaded, False, args.reply_tokens)
    fast_ttft = bench_ttft(loaded, True, args.reply_tokens, fast_engine) if fast_engine else None
    llama_ttft = bench_ttft_llama(loaded, llama, args.reply_tokens) if llama else None
    if llama is not None:
        llama.close()
    cold = fastbench.cold_starts(args.cold_runs) if not args.no_fast else {}
    floor = fastbench.kernel_floor_tok_s(fast_engine.model) if fast_engine else None

    speedup = decode["engine_tok_s"] / decode["generate_tok_s"]
    growth_reuse = with_reuse[-1] / with_reuse[0]
    growth_plain = without_reuse[-1] / without_reuse[0]
    ok = lambda cond: "PASS" if cond else "MISS"  # noqa: E731
    rows = [
        ("engine decode (tok/s)", f"{decode['engine_tok_s']:.1f}", ""),
        ("generate decode (tok/s)", f"{decode['generate_tok_s']:.1f}", ""),
        ("engine / generate", f"{speedup:.2f}x", f"target >= 1.0x: {ok(speedup >= 1.0)}"),
        ("TTFT turn 1, reuse on (ms)", f"{with_reuse[0]:.0f}", ""),
        ("TTFT turn 20, reuse on (ms)", f"{with_reuse[-1]:.0f}", ""),
        ("turn 20 / turn 1, reuse on", f"{growth_reuse:.2f}x", f"target <= 1.5x: {ok(growth_reuse <= 1.5)}"),
        ("TTFT turn 1, reuse off (ms)", f"{without_reuse[0]:.0f}", ""),
        ("TTFT turn 20, reuse off (ms)", f"{without_reuse[-1]:.0f}", ""),
        ("turn 20 / turn 1, reuse off", f"{growth_plain:.2f}x", "(re-encoding everything)"),
    ]
    extra: dict = {}
    if fast_engine is not None:
        fast_speedup = decode["fast_tok_s"] / decode["generate_tok_s"]
        fast_growth = fast_ttft[-1] / fast_ttft[0]
        rows += [
            ("fast decode (tok/s)", f"{decode['fast_tok_s']:.1f}", ""),
            ("fast / generate", f"{fast_speedup:.2f}x", f"target >= 3.0x: {ok(fast_speedup >= 3.0)}"),
            ("fast / reference engine", f"{decode['fast_tok_s'] / decode['engine_tok_s']:.2f}x", ""),
        ]
        rows.append(("fast: its matmul kernels alone (tok/s)", f"{floor:.1f}", "ceiling for any loop over them"))
        if "llama_cpp_tok_s" in decode:
            ratio = decode["fast_tok_s"] / decode["llama_cpp_tok_s"]
            rows += [
                ("llama.cpp decode (tok/s)", f"{decode['llama_cpp_tok_s']:.1f}", f"loads in {llama.load_s:.2f} s"),
                ("fast / llama.cpp", f"{ratio:.2f}x", f"target >= 1.0x: {ok(ratio >= 1.0)}"),
                ("kernels alone / llama.cpp", f"{floor / decode['llama_cpp_tok_s']:.2f}x", "(the most a torch-kernel loop reaches)"),
            ]
        else:
            rows.append(("llama.cpp", "skipped", "llama-cpp-python not installed (optional `bench` extra)"))
        rows += [
            ("fast TTFT turn 1 (ms)", f"{fast_ttft[0]:.0f}", ""),
            ("fast TTFT turn 20 (ms)", f"{fast_ttft[-1]:.0f}", ""),
            ("fast turn 20 / turn 1", f"{fast_growth:.2f}x", f"target <= 1.2x: {ok(fast_growth <= 1.2)}"),
        ]
        if llama_ttft:
            rows += [
                ("llama.cpp TTFT turn 1 (ms)", f"{llama_ttft[0]:.0f}", ""),
                ("llama.cpp TTFT turn 20 (ms)", f"{llama_ttft[-1]:.0f}", ""),
                ("fast / llama.cpp TTFT turn 20", f"{fast_ttft[-1] / llama_ttft[-1]:.2f}x", "(< 1 beats it)"),
            ]
        rows += fastbench.cold_rows(cold)
        extra = {"fast_over_generate": fast_speedup, "ttft_ms_fast": fast_ttft, "ttft_growth_fast": fast_growth,
                 "ttft_ms_llama_cpp": llama_ttft, "cold_start": cold, "kernel_floor_tok_s": floor,
                 "llama_cpp": "measured" if llama else "skipped: llama-cpp-python not installed"}
    report(
        f"decode benchmark: bundled model, {args.dtype}, greedy, {args.new_tokens} new tokens",
        rows,
        {
            "dtype": args.dtype,
            "new_tokens": args.new_tokens,
            **decode,
            "engine_over_generate": speedup,
            "ttft_ms_reuse": with_reuse,
            "ttft_ms_no_reuse": without_reuse,
            "ttft_growth_reuse": growth_reuse,
            "ttft_growth_no_reuse": growth_plain,
            **extra,
        },
    )


if __name__ == "__main__":
    main()
