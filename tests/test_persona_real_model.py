"""The shipped soft prompts on the real bundled model (where the point is the real model)."""

from __future__ import annotations

import json

import pytest

from chatbot.engine.sampling import SamplingParams
from chatbot.memory.context import ContextBuilder
from chatbot.personas import soft_prompt as sp
from chatbot.personas.registry import scan
from chatbot.personas.schema import Persona

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(bundled_fp32):
    from chatbot.runtime import build_engine

    return bundled_fp32, build_engine(bundled_fp32)  # the session's fp32 load, not a second one


def shipped_soft(tmp_path):
    found, problems = scan(tmp_path)
    assert problems == []
    return [p for p in found.values() if p.persona.kind == "soft_prompt" and p.source == "shipped"]


def test_shipped_soft_prompts_fit_the_bundled_model_and_met_their_target(runtime, tmp_path):
    loaded, _ = runtime
    personas = shipped_soft(tmp_path)
    assert len(personas) >= 2
    for installed in personas:
        prefix = sp.prefix_for(installed, loaded)  # identity and hidden size accepted
        assert prefix.embeddings.shape == (20, loaded.model.config.hidden_size)
        record = json.loads((sp.adapter_dir(installed) / "training.json").read_text())
        assert record["model"] == loaded.info.name
        assert record["heldout_loss_best"] < record["heldout_loss_init"]
        assert record["tensor_sha256"] == sp.file_sha256(sp.adapter_dir(installed) / sp.WEIGHTS_FILE)


def test_grandma_soft_prompt_speaks_grandma_without_a_control_code(runtime, tmp_path):
    loaded, engine = runtime
    installed = {p.persona.name: p for p in shipped_soft(tmp_path)}["grandma"]
    context = ContextBuilder(loaded.tokenizer, 512).build(Persona(name="plain"), [], "What is the capital of Italy?", reserved=20)
    assert "grandma" not in context.text.lower()
    params = SamplingParams(temperature=0, max_new_tokens=16, repetition_penalty=1.0)
    plain = engine.generate(context.prompt_ids, params).run()
    steered = engine.generate(context.prompt_ids, params, prefix=sp.prefix_for(installed, loaded)).run()
    markers = ("dear", "sweetheart", "grandma", "cookie", "knitting")
    assert not any(m in plain.lower() for m in markers)
    assert any(m in steered.lower() for m in markers), steered
