"""How close an engine's next-token logits are to a reference's, in measures that stay put across
CPUs (kernel paths round differently): the quality guard's and `benchmarks.agreement`'s.

Greedy identity over many tokens is chaotic: the top two logits of a small model are often within
0.1, so one rounding changes the rest of a reply. Feeding the reference's own continuation back one
token at a time (teacher forcing) keeps each position's comparison independent of the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Closeness:
    positions: int
    same_top: float  # share of positions whose top token is the reference's
    margin_error_mean: float  # |our margin - the reference's| between the reference's top two tokens
    margin_error_p90: float

    @classmethod
    def of(cls, positions: list[dict]) -> "Closeness":
        margins = sorted(p["margin_error"] for p in positions)
        return cls(len(positions), sum(p["top1"] for p in positions) / len(positions),
                   sum(margins) / len(margins), margins[int(0.9 * len(margins))])


def teacher_forced(engine, reference_logits: torch.Tensor, sequence: list[int], start: int) -> list[dict]:
    """The reference's continuation `sequence` fed one token at a time from `start` (prefix reuse:
    the decode path). Per position: does our top token match the reference's, and how far is our
    margin between the reference's top two tokens from its own."""
    engine.reset()
    positions = []
    for p in range(start, len(sequence)):
        ours = engine.next_token_logits(sequence[: p + 1])
        ref = reference_logits[p]
        first, second = ref.topk(2).indices.tolist()
        margin_error = abs(float((ours[first] - ours[second]) - (ref[first] - ref[second])))
        positions.append({"top1": int(ours.argmax()) == first, "margin_error": margin_error})
    return positions


def perplexity_ratio(ours: torch.Tensor, reference: torch.Tensor, ids: torch.Tensor) -> float:
    """exp(our mean next-token NLL - the reference's) over a text: logits `[T, vocab]`, ids `[T]`."""
    def nll(logits: torch.Tensor) -> float:
        return torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:]).item()

    return float(torch.tensor(nll(ours) - nll(reference)).exp())


def reference_greedy(loaded, prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """The (transformers) reference's greedy continuations, all prompts in one left-padded batch."""
    pad = loaded.tokenizer.eos_token_id
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = loaded.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=tokens,
                                    eos_token_id=sorted(loaded.eos_token_ids), pad_token_id=pad)
    replies = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in loaded.eos_token_ids), len(row))
        replies.append(row[:cut])
    return replies


def guard_figures(engine, reference, prompts: list[list[int]], held_out: list[int], tokens: int = 32,
                  chunk: int = 32) -> dict:
    """The int4 quality guard's figures against `reference` (a loaded fp32 transformers model):
    teacher-forced closeness over each prompt's reference continuation, and the held-out perplexity
    ratio with the text fed `chunk` rows at a time (under the dense-copy threshold: the int4 kernel)."""
    positions = []
    for ids, reply in zip(prompts, reference_greedy(reference, prompts, tokens)):
        sequence = ids + reply
        with torch.inference_mode():
            reference_logits = reference.model(torch.tensor([sequence])).logits[0]
        positions += teacher_forced(engine, reference_logits, sequence, len(ids) - 1)
    text = torch.tensor(held_out)
    engine.reset()
    model = engine.model
    model.cache.length = 0
    with torch.inference_mode():
        ours = torch.cat([model(part, logits="all") for part in text.split(chunk)])
        theirs = reference.model(text[None]).logits[0]
    model.cache.length = 0
    engine.reset()
    return {"closeness": Closeness.of(positions), "perplexity_ratio": perplexity_ratio(ours, theirs, text)}


def decode_perplexity_ratio(engine, reference, ids: list[int]) -> float:
    """The perplexity ratio of a text fed one token at a time (every position a decode step, as a
    reply is made), against `reference` (a loaded transformers model) on the whole text at once."""
    engine.reset()
    with torch.inference_mode():
        ours = torch.stack([engine.next_token_logits(ids[: p + 1]) for p in range(len(ids))])
        theirs = reference.model(torch.tensor([ids])).logits[0]
    engine.reset()
    return perplexity_ratio(ours, theirs, torch.tensor(ids))
