"""Decode speed and time to first token of this engine, against `model.generate`, in one run.

Greedy, 128 new tokens, the bundled model (bf16 unless --dtype). TTFT is measured at turns 1 and 20
of a 20-turn conversation with prefix reuse on and off (off = re-encode everything each turn, as
`generate` does).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from benchmarks.common import report  # noqa: E402
from chatbot.config import Settings  # noqa: E402
from chatbot.engine.decoding import Engine  # noqa: E402
from chatbot.engine.loading import load_model  # noqa: E402
from chatbot.engine.sampling import SamplingParams  # noqa: E402
from chatbot.memory.context import ContextBuilder  # noqa: E402
from chatbot.memory.render import Turn  # noqa: E402
from chatbot.personas.schema import DEFAULT_PERSONA  # noqa: E402

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


def bench_decode(loaded, new_tokens: int, repeats: int) -> dict:
    ids = ContextBuilder(loaded.tokenizer).build(DEFAULT_PERSONA, [], PROMPT).prompt_ids
    # No EOS: both sides produce exactly `new_tokens`.
    engine = Engine(loaded.model, loaded.tokenizer, eos_token_ids=set(), max_context=loaded.info.context_length)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    input_ids = torch.tensor([ids])

    def ours():
        engine.reset()
        engine.generate(ids, params).run()

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
    engine_rates, generate_rates = [], []
    for _ in range(repeats):  # interleaved, so background load hits both alike
        engine_rates.append(decode_rate(ours, new_tokens))
        generate_rates.append(decode_rate(theirs, new_tokens))
    return {"engine_tok_s": max(engine_rates), "generate_tok_s": max(generate_rates)}


def bench_ttft(loaded, reuse: bool, reply_tokens: int) -> list[float]:
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, loaded.info.context_length)
    builder = ContextBuilder(loaded.tokenizer, budget=2048)
    params = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=reply_tokens)
    history: list[Turn] = []
    ttfts = []
    for question in QUESTIONS:
        context = builder.build(DEFAULT_PERSONA, history, question)
        generation = engine.generate(context.prompt_ids, params, reuse=reuse)
        reply = generation.run()
        ttfts.append(generation.stats.ttft_ms)
        history.append(Turn(question, reply))
    return ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reply-tokens", type=int, default=64)
    args = parser.parse_args()

    loaded = load_model("", Settings().cache_dir, dtype=args.dtype)
    decode = bench_decode(loaded, args.new_tokens, args.repeats)
    with_reuse = bench_ttft(loaded, True, args.reply_tokens)
    without_reuse = bench_ttft(loaded, False, args.reply_tokens)

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
        },
    )


if __name__ == "__main__":
    main()
