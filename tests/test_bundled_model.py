"""End to end on the real bundled SmolLM2-135M-Instruct."""

import torch

from chatbot.engine.decoding import Engine
from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.schema import Persona
from chatbot.runtime import Runtime, build_engine
from chatbot.session import ChatSession
from chatbot.personas.registry import InstalledPersona

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=32)
ASSISTANT = Persona(name="assistant")


def engine_for(loaded):
    return Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, loaded.info.context_length)


def test_greedy_equals_generate_on_the_bundled_model(bundled_fp32):
    tokenizer = bundled_fp32.tokenizer
    context = ContextBuilder(tokenizer).build(ASSISTANT, [], "Name three colours of the rainbow.")
    generation = engine_for(bundled_fp32).generate(context.prompt_ids, GREEDY)
    text = generation.run()
    reference = bundled_fp32.model.generate(
        torch.tensor([context.prompt_ids]),
        attention_mask=torch.ones(1, len(context.prompt_ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=32,
        eos_token_id=sorted(bundled_fp32.eos_token_ids),
        pad_token_id=tokenizer.eos_token_id,
    )[0, len(context.prompt_ids) :].tolist()
    reference = [t for t in reference if t not in bundled_fp32.eos_token_ids]
    assert generation.token_ids == reference
    assert text == tokenizer.decode(reference)
    assert len(text) > 10


def test_memory_carries_across_turns(bundled_fp32, isolated_settings):
    runtime = Runtime(bundled_fp32, build_engine(bundled_fp32))
    session = ChatSession(runtime, isolated_settings, InstalledPersona(ASSISTANT, "shipped", None))
    session.send("The secret word is PINEAPPLE. Say OK.", GREEDY).run()
    second = session.send("What is the secret word?", GREEDY)
    assert "PINEAPPLE" in second.run().upper()
    assert second.stats.reused_tokens > 0  # the first turn's KV was reused
    assert len(session.history) == 2


def test_prefix_reuse_keeps_greedy_replies_and_logits(bundled_fp32):
    tokenizer = bundled_fp32.tokenizer
    builder = ContextBuilder(tokenizer)
    engine = engine_for(bundled_fp32)
    first = builder.build(ASSISTANT, [], "What is the capital of France?")
    reply = engine.generate(first.prompt_ids, GREEDY).run()
    second = builder.build(ASSISTANT, [Turn("What is the capital of France?", reply)], "And of Italy?")
    reused_logits = engine.next_token_logits(second.prompt_ids)
    reused = engine.generate(second.prompt_ids, GREEDY)
    reused.run()
    fresh_engine = engine_for(bundled_fp32)
    fresh_logits = fresh_engine.next_token_logits(second.prompt_ids, reuse=False)
    fresh_engine.reset()
    fresh = fresh_engine.generate(second.prompt_ids, GREEDY)
    fresh.run()
    assert reused.stats.reused_tokens > len(first.prompt_ids)
    assert reused.token_ids == fresh.token_ids
    assert torch.allclose(reused_logits, fresh_logits, atol=1e-4)
