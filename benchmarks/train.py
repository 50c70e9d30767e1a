"""Prompt-tuning speed on the bundled model: seconds per optimizer step (forward + backward through
the frozen model into the soft prompt), fp32, on the shipped cowboy soft prompt's training data.

    .venv/bin/python benchmarks/train.py [--steps 3] [--batch-size 8] [--virtual-tokens 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from chatbot.config import Settings
from chatbot.engine.loading import load_model
from chatbot.personas.data import Encoder, load_examples
from chatbot.personas.schema import Persona
from chatbot.personas.training import TrainConfig, initial_embeddings, train_soft_prompt

DATA = Path(__file__).resolve().parents[1] / "personas" / "cowboy" / "data.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    loaded = load_model("", Settings().cache_dir, dtype="float32")
    encoder = Encoder(loaded.tokenizer)
    persona = Persona(name="bench")
    items = [encoder.encode(persona, e, args.virtual_tokens) for e in load_examples(args.data)]
    config = TrainConfig(virtual_tokens=args.virtual_tokens, steps=args.steps, batch_size=args.batch_size,
                         heldout=0, eval_every=10**6)
    init = initial_embeddings(loaded.model, loaded.tokenizer, args.virtual_tokens, "vocab", "", 0)
    started = time.perf_counter()
    train_soft_prompt(loaded.model, items, [], init, config)
    seconds = time.perf_counter() - started
    tokens = sum(len(i.prompt_ids) + len(i.reply_ids) + args.virtual_tokens for i in items) / len(items)
    result = {
        "model": loaded.info.name,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "virtual_tokens": args.virtual_tokens,
        "mean_sequence_tokens": round(tokens, 1),
        "steps": args.steps,
        "seconds_per_step": round(seconds / args.steps, 2),
        "minutes_for_40_steps": round(seconds / args.steps * 40 / 60, 1),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
