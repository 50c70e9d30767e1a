"""The decode loop on a tiny random Llama: equality with `generate`, seeding, reuse, cancel, prefix."""

import threading

import pytest
import torch

from chatbot.engine.decoding import Engine, Prefix
from chatbot.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=24)


@pytest.fixture
def engine(tiny_llama, smol_tokenizer):
    return Engine(tiny_llama, smol_tokenizer, eos_token_ids={-1}, max_context=1024)


def prompt(tokenizer, text="Hello there, how are you today?"):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_greedy_equals_generate(engine, tiny_llama, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    generation = engine.generate(ids, GREEDY)
    generation.run()
    reference = tiny_llama.generate(
        torch.tensor([ids]), do_sample=False, max_new_tokens=24, eos_token_id=None, pad_token_id=0
    )
    assert generation.token_ids == reference[0, len(ids) :].tolist()
    assert generation.stats.new_tokens == 24
    assert generation.stats.stop_reason == "max_new_tokens"


def test_seeded_sampling_is_reproducible(engine, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=16, seed=7)
    first = engine.generate(ids, params)
    first.run()
    engine.reset()
    second = engine.generate(ids, params)
    second.run()
    other = engine.generate(ids, params.model_copy(update={"seed": 8}))
    other.run()
    assert first.token_ids == second.token_ids
    assert first.token_ids != other.token_ids


def test_prefix_reuse_gives_identical_output(engine, smol_tokenizer):
    first_ids = prompt(smol_tokenizer)
    first = engine.generate(first_ids, GREEDY)
    first.run()
    follow_up = first_ids + first.token_ids + prompt(smol_tokenizer, " And what about tomorrow?")
    reused = engine.generate(follow_up, GREEDY)
    reused.run()
    assert reused.stats.reused_tokens == len(first_ids) + len(first.token_ids) - 1
    engine.reset()
    fresh = engine.generate(follow_up, GREEDY)
    fresh.run()
    assert fresh.stats.reused_tokens == 0
    assert reused.token_ids == fresh.token_ids


def test_reused_logits_match_a_full_forward(engine, tiny_llama, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    engine.generate(ids, GREEDY).run()
    follow_up = ids + prompt(smol_tokenizer, " something else entirely")
    reused_logits = engine.next_token_logits(follow_up)
    with torch.inference_mode():
        full = tiny_llama(torch.tensor([follow_up])).logits[0, -1]
    assert torch.allclose(reused_logits, full, atol=1e-4)
    assert engine._cached_ids == follow_up  # it did reuse: the cache now holds exactly the prompt


def test_a_prompt_that_is_a_prefix_of_the_cache_still_works(engine, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    first = engine.generate(ids, GREEDY)
    first.run()
    again = engine.generate(ids, GREEDY)  # everything cached: must still feed one token
    again.run()
    assert again.stats.reused_tokens == len(ids) - 1
    assert again.token_ids == first.token_ids


def test_cancel_from_another_thread_stops_within_one_step(engine, smol_tokenizer):
    cancel = threading.Event()
    generation = engine.generate(prompt(smol_tokenizer), GREEDY.model_copy(update={"max_new_tokens": 200}), cancel=cancel)
    produced_at_cancel = None
    for _ in generation:
        if produced_at_cancel is None and generation.stats.new_tokens >= 3:
            threading.Thread(target=cancel.set).start()
            produced_at_cancel = generation.stats.new_tokens
            # wait until the other thread has set it, then at most one more step may run
            cancel.wait()
    assert generation.stats.stop_reason == "cancelled"
    assert generation.stats.new_tokens <= produced_at_cancel + 1


def test_embeddings_prefix_matches_a_manual_forward(engine, tiny_llama, smol_tokenizer):
    torch.manual_seed(1)
    soft = torch.randn(5, tiny_llama.config.hidden_size)
    ids = prompt(smol_tokenizer)
    generation = engine.generate(ids, GREEDY.model_copy(update={"max_new_tokens": 1}), prefix=Prefix("p", soft))
    generation.run()
    with torch.inference_mode():
        embeds = torch.cat([soft, tiny_llama.get_input_embeddings()(torch.tensor(ids))]).unsqueeze(0)
        expected = int(tiny_llama(inputs_embeds=embeds).logits[0, -1].argmax())
    assert generation.token_ids == [expected]
    assert generation.stats.prefix_tokens == 5
    # the prefix's KV is kept: a second call with the same key reuses the prompt too
    again = engine.generate(ids, GREEDY.model_copy(update={"max_new_tokens": 1}), prefix=Prefix("p", soft))
    again.run()
    assert again.stats.reused_tokens == len(ids) - 1 and again.token_ids == [expected]


def test_stops_at_eos(tiny_llama, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    free = Engine(tiny_llama, smol_tokenizer, eos_token_ids={-1}, max_context=1024).generate(ids, GREEDY)
    free.run()
    eos = free.token_ids[5]
    stopped = Engine(tiny_llama, smol_tokenizer, eos_token_ids={eos}, max_context=1024).generate(ids, GREEDY)
    stopped.run()
    assert stopped.stats.stop_reason == "eos"
    assert stopped.token_ids == free.token_ids[: free.token_ids.index(eos)]


def test_stop_string_cuts_the_reply(engine, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    free = engine.generate(ids, GREEDY)
    text = free.run()
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = engine.generate(ids, GREEDY.model_copy(update={"stop": (stop,)}))
    streamed = "".join(cut)
    assert cut.stats.stop_reason == "stop_string"
    assert streamed == text[: text.index(stop)] == cut.text


def test_max_new_tokens_is_capped_by_the_context(tiny_llama, smol_tokenizer):
    ids = prompt(smol_tokenizer)
    small = Engine(tiny_llama, smol_tokenizer, eos_token_ids={-1}, max_context=len(ids) + 4)
    generation = small.generate(ids, GREEDY)
    generation.run()
    assert generation.stats.new_tokens == 4 and generation.stats.stop_reason == "context_full"
