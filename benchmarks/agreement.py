"""How often reduced-precision decoding gives the fp32 reference's greedy reply, on a wider prompt
set than the test's ten: the fast engine (int4 weights, bf16 matmul inputs) and, as the yardstick,
the reference engine in bf16 (transformers' own forward, the same weights).

    .venv/bin/python -m benchmarks.agreement

Greedy decoding of a small model is chaotic: its top two logits are often within 0.1, so one
rounding can change a whole reply. The figure is the share of prompts whose first 32 greedy tokens
are identical to the fp32 reference's, and how many leading tokens agree on average. Beside it, a
steadier measure of the same closeness: the reference's continuation fed back one token at a time
(teacher-forced), the share of positions whose top token matches and the error of the margin
between the reference's top two logits.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from benchmarks.common import report
from chatbot.config import Settings
from chatbot.engine.decoding import Engine
from chatbot.engine.fast.closeness import Closeness, teacher_forced
from chatbot.engine.fast.engine import build_fast_engine
from chatbot.engine.loading import load_model
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.personas.schema import Persona

ROOT = Path(__file__).resolve().parents[1]
TEST_PROMPTS = (ROOT / "tests" / "fixtures" / "greedy_prompts.txt").read_text(encoding="utf-8").splitlines()
MORE_PROMPTS = [
    "Tell me a joke about computers.", "What is photosynthesis?", "How many legs does a spider have?",
    "Write a short poem about autumn.", "What is the boiling point of water?", "Give me a recipe for pancakes.",
    "Who wrote Romeo and Juliet?", "What is a prime number?", "How do airplanes fly?",
    "Describe a sunset in one sentence.", "What are the planets in our solar system?",
    "How can I improve my sleep?", "What is the tallest mountain?", "Translate 'good morning' into Spanish.",
    "What does a carpenter do?", "List three healthy snacks.", "Why do cats purr?", "What is the speed of light?",
    "How do I make a paper airplane?", "What is democracy?",
]
PLAIN = Persona(name="plain")  # no control code: the model as it is


def greedy_reply(engine, ids: list[int], tokens: int) -> list[int]:
    engine.reset()
    generation = engine.generate(ids, SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=tokens))
    generation.run()
    return generation.token_ids


def leading_agreement(ours: list[int], reference: list[int]) -> int:
    count = 0
    for a, b in zip(ours, reference):
        if a != b:
            break
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    settings = Settings()
    fp32 = load_model("", settings.cache_dir, dtype="float32")
    bf16 = load_model("", settings.cache_dir, dtype="bfloat16")
    engines = {
        "fast (int4, bf16 matmul inputs)": build_fast_engine(fp32),
        "reference engine, bf16": Engine(bf16.model, bf16.tokenizer, bf16.eos_token_ids, bf16.info.context_length),
    }
    reference = Engine(fp32.model, fp32.tokenizer, fp32.eos_token_ids, fp32.info.context_length)
    builder = ContextBuilder(fp32.tokenizer)
    prompts = TEST_PROMPTS + MORE_PROMPTS
    results: dict[str, list[dict]] = {name: [] for name in engines}
    forced: dict[str, list[dict]] = {name: [] for name in engines}
    for text in prompts:  # (the engines decode in inference mode themselves)
        ids = builder.build(PLAIN, [], text).prompt_ids
        expected = greedy_reply(reference, ids, args.tokens)
        sequence = ids + expected
        with torch.inference_mode():
            reference_logits = fp32.model(torch.tensor([sequence])).logits[0]
        for name, engine in engines.items():
            ours = greedy_reply(engine, ids, args.tokens)
            results[name].append({"prompt": text, "identical": ours == expected, "leading": leading_agreement(ours, expected)})
            forced[name] += teacher_forced(engine, reference_logits, sequence, len(ids) - 1)
    rows = []
    for name, rs in results.items():
        same = sum(r["identical"] for r in rs)
        same_test = sum(r["identical"] for r in rs[: len(TEST_PROMPTS)])
        mean_leading = sum(r["leading"] for r in rs) / len(rs)
        verdict = f"target >= 90%: {'PASS' if same >= 0.9 * len(rs) else 'MISS'}" if name.startswith("fast") else "(yardstick)"
        closeness = Closeness.of(forced[name])
        rows += [
            (f"{name}: identical first {args.tokens}", f"{same}/{len(rs)}", verdict),
            ("  of them, the test's ten prompts", f"{same_test}/{len(TEST_PROMPTS)}", ""),
            ("  leading tokens agreeing, mean", f"{mean_leading:.1f}", ""),
            ("  teacher-forced: same top token", f"{100 * closeness.same_top:.2f}%", f"{closeness.positions} positions"),
            ("  teacher-forced: top-two margin error, mean / p90",
             f"{closeness.margin_error_mean:.4f} / {closeness.margin_error_p90:.4f}", "logits"),
        ]
    report(f"greedy agreement with the fp32 reference, {len(prompts)} prompts", rows,
           {"tokens": args.tokens, "results": results,
            "teacher_forced": {name: asdict(Closeness.of(ps)) for name, ps in forced.items()}})


if __name__ == "__main__":
    main()
