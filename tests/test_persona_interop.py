"""Soft prompts and PEFT: ours load in PEFT with the same logits; PEFT's load as personas; the
engine decodes after a soft prompt exactly as the plain forward does."""

from __future__ import annotations

import pytest
import torch
from test_persona_support import PIRATE_PAIRS, loaded_tiny, run_cli, tiny_dir, tokenizer, write_jsonl  # noqa: F401

from chatbot.engine.decoding import Engine
from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UserError
from chatbot.personas import soft_prompt as sp
from chatbot.personas.registry import find
from chatbot.personas.scoring import full_logits
from chatbot.personas.training import TrainConfig
from chatbot.personas.tuning import soft_persona, train_into

peft = pytest.importorskip("peft")


@pytest.fixture
def loaded(tokenizer, tiny_dir):  # noqa: F811
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32).eval()
    model.requires_grad_(False)
    return loaded_tiny(tokenizer, model, name=tiny_dir.name)


@pytest.fixture
def trained(loaded, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", PIRATE_PAIRS)
    config = TrainConfig(virtual_tokens=5, steps=2, batch_size=4, lr=0.1)
    persona = soft_persona("ours", "Talks like a pirate.")
    train_into(loaded, tmp_path / "ours", persona, data, config, persona.description, budget=512)
    return tmp_path / "ours"


def test_our_soft_prompt_loads_in_peft_with_the_same_logits(loaded, trained, tokenizer):  # noqa: F811
    from peft import PeftModel

    soft = sp.load_soft_prompt(trained / "soft_prompt").embeddings
    ids = tokenizer("<|im_start|>user\nHello, who are you?<|im_end|>\n", add_special_tokens=False)["input_ids"]
    ours = full_logits(loaded.model, ids, soft)
    wrapped = PeftModel.from_pretrained(loaded.model, str(trained / "soft_prompt")).eval()
    with torch.no_grad():
        theirs = wrapped(input_ids=torch.tensor([ids])).logits[0, -len(ids):]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, full_logits(loaded.model, ids))  # the soft prompt does matter


def test_peft_made_adapter_becomes_a_persona(loaded, tmp_path, tiny_dir, monkeypatch, capsys):  # noqa: F811
    from peft import PromptTuningConfig, TaskType, get_peft_model

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6)
    peft_model = get_peft_model(loaded.model, config)
    peft_model.save_pretrained(str(tmp_path / "peft-adapter"))
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    assert run_cli(["persona", "new", "imported", "--soft-prompt", str(tmp_path / "peft-adapter")]) == 0
    installed = find("imported", tmp_path / "data")
    assert installed.persona.kind == "soft_prompt"
    prefix = sp.prefix_for(installed, loaded)
    expected = peft_model.get_prompt_embedding_to_save("default")
    assert prefix.embeddings.shape == (6, loaded.model.config.hidden_size)
    assert torch.equal(prefix.embeddings, expected.float())
    capsys.readouterr()
    assert run_cli(["--model", str(tiny_dir), "persona", "show", "imported", "--json"]) == 0
    assert '"num_virtual_tokens": 6' in capsys.readouterr().out


def test_mismatched_model_refused(loaded, trained):
    installed = find_user(trained)
    prefix = sp.prefix_for(installed, loaded)
    assert prefix.key.endswith(sp.file_sha256(trained / "soft_prompt" / sp.WEIGHTS_FILE))
    other = loaded_tiny(loaded.tokenizer, loaded.model, name="gpt2")
    other.model.config._name_or_path = "gpt2"
    with pytest.raises(UserError, match="trained for model"):
        sp.prefix_for(installed, other)

    class Wide:
        hidden_size = 64

    wide = loaded_tiny(loaded.tokenizer, loaded.model, name=loaded.info.name)
    wide.model = type("M", (), {"config": Wide()})()
    with pytest.raises(UserError, match="hidden size 64"):
        sp.prefix_for(installed, wide)


def find_user(folder):
    from chatbot.personas.registry import InstalledPersona, load_persona_file

    return InstalledPersona(load_persona_file(folder / "persona.toml"), "user", folder)


def test_engine_decodes_after_the_soft_prompt_like_the_plain_forward(loaded, trained, tokenizer):  # noqa: F811
    installed = find_user(trained)
    prefix = sp.prefix_for(installed, loaded)
    engine = Engine(loaded.model, tokenizer, eos_token_ids=set(), max_context=512)
    ids = tokenizer("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=0, max_new_tokens=6, repetition_penalty=1.0)
    generated = engine.generate(ids, params, prefix=prefix)
    generated.run()
    expected, seq = [], list(ids)
    with torch.no_grad():
        for _ in range(6):
            token = int(full_logits(loaded.model, seq, prefix.embeddings)[-1].argmax())
            expected.append(token)
            seq.append(token)
    assert generated.token_ids == expected
    again = engine.generate(ids, params, prefix=prefix)
    again.run()
    assert again.token_ids == expected and again.stats.reused_tokens > 0
