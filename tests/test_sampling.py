import pytest
import torch
from pydantic import ValidationError

from chatbot.engine.sampling import SamplingParams, filter_top_k_top_p, greedy_token, next_token, penalize_repetition


def test_top_k_keeps_k_best():
    logits = torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0])
    kept = torch.isfinite(filter_top_k_top_p(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [False, True, False, True, False]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = torch.isfinite(filter_top_k_top_p(probs.log(), top_k=0, top_p=0.75))
    assert kept.tolist() == [True, True, False, False]
    # the most likely token always survives, however small top_p
    assert torch.isfinite(filter_top_k_top_p(probs.log(), 0, 0.01)).tolist() == [True, False, False, False]


def test_repetition_penalty_lowers_seen_tokens():
    logits = torch.tensor([2.0, -2.0, 1.0])
    out = penalize_repetition(logits.clone(), torch.tensor([0, 1]), 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0]


def test_greedy_takes_what_torch_argmax_takes_ties_and_nan_included():
    rng = torch.Generator().manual_seed(0)
    cases = [torch.tensor([1.0, 3.0, 3.0, 2.0]), torch.tensor([0.0, float("nan"), 5.0, float("nan")]),
             torch.full((8,), float("-inf")), torch.randn(49152, generator=rng), torch.randn(7, generator=rng).to(torch.bfloat16)]
    for logits in cases:
        assert greedy_token(logits) == int(torch.argmax(logits)), logits


def test_greedy_picks_argmax_and_sampling_respects_the_seed():
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9])
    assert next_token(logits, SamplingParams(temperature=0), None, []) == 1
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0)
    draws = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(3)
        draws.append([next_token(logits, params, generator, []) for _ in range(20)])
    assert draws[0] == draws[1]
    assert set(draws[0]) > {1}  # it does sample, not argmax


@pytest.mark.parametrize(
    "field,value",
    [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1), ("max_new_tokens", 0)],
)
def test_out_of_range_params_are_refused(field, value):
    with pytest.raises(ValidationError):
        SamplingParams(**{field: value})
