"""Models without a chat template: tiny random GPT-2 and CTRL through the same engine."""

import pytest
import torch
from transformers import CTRLConfig, CTRLLMHeadModel, GPT2Config, GPT2LMHeadModel

from chatbot.engine.decoding import Engine
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.schema import Persona

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


def tiny(kind, vocab_size):
    torch.manual_seed(0)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab_size, n_positions=256))
    return CTRLLMHeadModel(CTRLConfig(n_layer=2, n_embd=32, n_head=2, dff=64, vocab_size=vocab_size, n_positions=256))


@pytest.mark.parametrize("kind", ["gpt2", "ctrl"])
def test_engine_and_prefix_reuse_on_models_without_a_template(kind, tiny_bpe_tokenizer):
    tokenizer = tiny_bpe_tokenizer
    model = tiny(kind, len(tokenizer)).eval()
    engine = Engine(model, tokenizer, eos_token_ids={tokenizer.eos_token_id}, max_context=256)
    builder = ContextBuilder(tokenizer, budget=200)
    persona = Persona(name="horror", control_code="Horror")
    first = builder.build(persona, [], "hello there")
    assert first.text.startswith("Horror\n\nUser:")  # CTRL: the control code goes first
    reply = engine.generate(first.prompt_ids, GREEDY.model_copy(update={"stop": first.stops}))
    reply.run()
    reference = model.generate(
        torch.tensor([first.prompt_ids]), do_sample=False, max_new_tokens=12, eos_token_id=None, pad_token_id=0
    )
    assert reply.token_ids == reference[0, len(first.prompt_ids) :].tolist()[: len(reply.token_ids)]
    second = builder.build(persona, [Turn("hello there", reply.text)], "tell me more")
    reused = engine.generate(second.prompt_ids, GREEDY)
    reused.run()
    assert reused.stats.reused_tokens > len(first.prompt_ids) // 2
    engine.reset()
    fresh = engine.generate(second.prompt_ids, GREEDY)
    fresh.run()
    assert fresh.token_ids == reused.token_ids
