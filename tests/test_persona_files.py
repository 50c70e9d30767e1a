"""Persona files, the registry, the soft-prompt format and its refusals, and list/show/new."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_persona_support import run_cli

from chatbot.errors import UserError
from chatbot.personas import soft_prompt as sp
from chatbot.personas.registry import InstalledPersona, find, load_persona_file, scan, shipped_dir
from chatbot.personas.schema import Persona, SoftPromptRef


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def write_persona(root: Path, name: str, text: str) -> Path:
    folder = root / "personas" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "persona.toml").write_text(text)
    return folder


def adapter(folder: Path, tensor: torch.Tensor, n: int | None = None, dim: int | None = None, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = sp.adapter_config(n or tensor.shape[0], dim or tensor.shape[-1], "tiny-llama", None) | extra
    (folder / sp.CONFIG_FILE).write_text(json.dumps(config))
    save_file({"prompt_embeddings": tensor.contiguous()}, str(folder / sp.WEIGHTS_FILE))
    return folder


def soft_installed(folder: Path, path: str = "soft_prompt") -> InstalledPersona:
    persona = Persona(name=folder.name, kind="soft_prompt", soft_prompt=SoftPromptRef(path=path))
    return InstalledPersona(persona, "user", folder)


# -- shipped personas ----------------------------------------------------------------------------


def test_shipped_personas_load_and_differ(data_dir):
    found, problems = scan(data_dir)
    assert problems == []
    control = [p for p in found.values() if p.persona.kind == "control_code" and p.persona.control_code]
    soft = [p for p in found.values() if p.persona.kind == "soft_prompt"]
    assert len(control) >= 5
    assert len({p.persona.control_code for p in control}) == len(control)
    assert all(p.source == "shipped" for p in found.values())
    for p in soft:  # each shipped soft prompt: valid tensor, its data and a card beside it
        assert sp.persona_soft_prompt(p).embeddings.shape == (20, 576)
        assert (p.folder / "data.jsonl").is_file() and (p.folder / "README.md").is_file()
    for p in control:  # hand-written voice samples for evaluation
        assert (p.folder / "samples.jsonl").is_file()


def test_user_persona_overrides_shipped(data_dir):
    write_persona(data_dir, "pirate", 'name = "pirate"\ncontrol_code = "Speak softly."\n')
    found, _ = scan(data_dir)
    assert found["pirate"].source == "user"
    assert found["pirate"].persona.control_code == "Speak softly."
    assert find("bard", data_dir).source == "shipped"


# -- bad persona files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, field",
    [
        ('name = "bad"\nkind = "control_code"\ncontrol_code = "x"\nvoice = "loud"\n', "voice"),
        ('name = "bad"\ncontrol_code = 42\n', "control_code"),
        ('name = "bad"\n[generation]\ntemperature = "hot"\n', "generation.temperature"),
        ('kind = "control_code"\n', "name"),
        ('name = "bad"\nkind = "soft_prompt"\n', "(file)"),
    ],
)
def test_bad_persona_file_is_one_line_naming_file_and_field(data_dir, text, field):
    folder = write_persona(data_dir, "bad", text)
    with pytest.raises(UserError) as err:
        load_persona_file(folder / "persona.toml")
    message = str(err.value)
    assert "\n" not in message
    assert str(folder / "persona.toml") in message
    assert f"'{field}'" in message
    found, problems = scan(data_dir)  # the others still load
    assert "bad" not in found and "pirate" in found
    assert len(problems) == 1 and str(folder / "persona.toml") in problems[0]


def test_malformed_toml_reported_and_others_load(data_dir, capsys):
    write_persona(data_dir, "broken", 'name = "broken\ncontrol_code = \n')
    assert run_cli(["persona", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    names = {item["name"] for item in json.loads(out)}
    assert "pirate" in names and "broken" not in names
    assert "broken/persona.toml" in err and "not valid TOML" in err
    assert run_cli(["persona", "show", "broken"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "broken/persona.toml" in err and "Traceback" not in err


def test_list_json_and_show(data_dir, capsys):
    assert run_cli(["persona", "list", "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert {"name", "kind", "source"} <= set(items[0])
    assert run_cli(["persona", "show", "robot", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["name"] == "robot" and shown["source"] == "shipped"
    assert run_cli(["persona", "show", "nobody"]) == 1
    assert "no persona named 'nobody'" in capsys.readouterr().err


def test_new_scaffolds_a_control_code_persona(data_dir, capsys):
    assert run_cli(["persona", "new", "chef", "--control-code", "You are a chef.", "--placement", "system"]) == 0
    installed = find("chef", data_dir)
    assert installed.source == "user" and installed.persona.placement == "system"
    assert installed.persona.control_code == "You are a chef."
    assert run_cli(["persona", "new", "chef"]) == 1  # exists
    assert run_cli(["persona", "new", "Bad Name"]) == 2
    capsys.readouterr()
    assert run_cli(["persona", "new", "night_owl"]) == 0  # no control code given: a plain one, and a hint
    assert find("night_owl", data_dir).persona.control_code == "You are Night Owl."
    assert "edit its control_code" in capsys.readouterr().err


# -- soft-prompt files ---------------------------------------------------------------------------


def test_soft_prompt_loads_hashes_and_versions(tmp_path):
    folder = tmp_path / "mine"
    adapter(folder / "soft_prompt", torch.randn(4, 8))
    installed = soft_installed(folder)
    soft = sp.persona_soft_prompt(installed)
    assert soft.embeddings.shape == (4, 8) and soft.embeddings.dtype == torch.float32
    version = sp.version_definition(installed)
    assert version["soft_prompt_sha256"] == sp.file_sha256(folder / "soft_prompt" / sp.WEIGHTS_FILE)
    adapter(folder / "soft_prompt", torch.randn(4, 8))  # retrained: a new version
    assert sp.version_definition(installed)["soft_prompt_sha256"] != version["soft_prompt_sha256"]


@pytest.mark.parametrize(
    "tensor, config, expected",
    [
        (torch.randn(3, 8), {"n": 4}, "shape [3, 8], expected [4, 8]"),
        (torch.randn(4, 8, 1), {}, "shape"),
        (torch.randn(4, 8).half(), {}, "float16, expected float32"),
        (torch.full((4, 8), float("nan")), {}, "NaN"),
        (torch.tensor([[float("inf")] * 8] * 4), {}, "NaN or infinite"),
    ],
)
def test_bad_tensors_refused(tmp_path, tensor, config, expected):
    folder = adapter(tmp_path / "a", tensor, n=config.get("n", 4), dim=8)
    with pytest.raises(UserError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        sp.load_soft_prompt(folder)


def test_bad_adapter_config_refused(tmp_path):
    folder = adapter(tmp_path / "a", torch.randn(4, 8), peft_type="LORA")
    with pytest.raises(UserError, match="peft_type"):
        sp.load_soft_prompt(folder)
    (folder / sp.CONFIG_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        sp.load_soft_prompt(folder)
    (folder / sp.WEIGHTS_FILE).write_bytes(b"\x80\x04pickle")
    (folder / sp.CONFIG_FILE).write_text(json.dumps(sp.adapter_config(4, 8, "m", None)))
    with pytest.raises(UserError, match="not a valid safetensors"):
        sp.load_soft_prompt(folder)


@pytest.mark.parametrize("path", ["../elsewhere", "/tmp", "soft_prompt/../../x"])
def test_path_escaping_the_persona_folder_refused(tmp_path, path):
    adapter(tmp_path / "elsewhere", torch.randn(4, 8))
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(UserError, match="soft_prompt.path"):
        sp.persona_soft_prompt(soft_installed(folder, path))


def test_symlink_escaping_the_persona_folder_refused(tmp_path):
    adapter(tmp_path / "elsewhere", torch.randn(4, 8))
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "soft_prompt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match="outside the persona folder"):
        sp.persona_soft_prompt(soft_installed(folder))


def test_model_family_matching():
    family = sp.model_family
    assert family("/x/SmolLM2-135M-Instruct.Q4_1.gguf") == family("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert family("/c/models/SmolLM2-135M-Instruct.Q4_1-f1a544e7b08906b2") == "smollm2-135m-instruct"
    assert family("gpt2") != family("SmolLM2-135M-Instruct.Q4_1")


def test_shipped_dir_is_the_checkout():
    assert (shipped_dir() / "pirate" / "persona.toml").is_file()
