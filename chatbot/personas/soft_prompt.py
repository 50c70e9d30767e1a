"""Soft prompts: PEFT prompt-tuning adapters turned into an embeddings prefix for the engine.

On disk a soft prompt is a PEFT prompt-tuning adapter folder (`soft_prompt/` inside the persona
folder unless `[soft_prompt] path` says otherwise):

- `adapter_config.json`: `peft_type: PROMPT_TUNING`, `task_type: CAUSAL_LM`, `num_virtual_tokens`,
  `token_dim`, `base_model_name_or_path`, ...
- `adapter_model.safetensors`: one fp32 tensor `prompt_embeddings` of shape `[n, hidden]`.

Only safetensors is read (never pickle). Everything that can be wrong with a file is a UserError
naming the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from chatbot.engine.decoding import Prefix
from chatbot.engine.loading import file_sha256
from chatbot.errors import UserError
from chatbot.personas.registry import InstalledPersona

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
TENSOR_KEY = "prompt_embeddings"
# PEFT saves `base_model.model.prompt_embeddings`-style keys in some versions; accept those too.
_TENSOR_KEYS = (TENSOR_KEY, "base_model.prompt_embeddings", "prompt_encoder.default.embedding.weight")
MAX_VIRTUAL_TOKENS = 512


@dataclass(frozen=True)
class SoftPrompt:
    embeddings: torch.Tensor  # [n, hidden], fp32
    config: dict
    sha256: str
    folder: Path

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.embeddings.shape[0])


# -- where the adapter is -----------------------------------------------------------------------


def adapter_dir(installed: InstalledPersona) -> Path:
    """The adapter folder of a soft-prompt persona; refuses a path that leaves the persona folder
    (`..`, an absolute path, or a symlink pointing elsewhere)."""
    persona = installed.persona
    rel = persona.soft_prompt.path if persona.soft_prompt is not None else "soft_prompt"
    folder = installed.folder.resolve()
    if Path(rel).is_absolute():
        raise UserError(f"{installed.folder / 'persona.toml'}: field 'soft_prompt.path': must be relative to the persona folder")
    target = (folder / rel).resolve()
    if target != folder and folder not in target.parents:
        raise UserError(
            f"{installed.folder / 'persona.toml'}: field 'soft_prompt.path': '{rel}' points outside the persona folder"
        )
    return target


# -- reading and checking -----------------------------------------------------------------------


def read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing (a soft prompt needs a PEFT adapter_config.json)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise UserError(f"{path}: field 'peft_type': expected PROMPT_TUNING, got {config.get('peft_type')!r}")
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise UserError(f"{path}: field 'task_type': expected CAUSAL_LM, got {task!r}")
    for key in ("num_virtual_tokens", "token_dim"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{path}: field '{key}': expected a positive integer, got {value!r}")
    if config["num_virtual_tokens"] > MAX_VIRTUAL_TOKENS:
        raise UserError(f"{path}: field 'num_virtual_tokens': {config['num_virtual_tokens']} is more than {MAX_VIRTUAL_TOKENS}")
    return config


def read_tensor(path: Path, config: dict) -> torch.Tensor:
    """The prompt embeddings, checked: one tensor, [num_virtual_tokens, token_dim], fp32, finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path}: missing (a soft prompt needs adapter_model.safetensors)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a valid safetensors file: {exc}") from exc
    key = next((k for k in _TENSOR_KEYS if k in tensors), None)
    if key is None:
        found = ", ".join(sorted(tensors)) or "none"
        raise UserError(f"{path}: no '{TENSOR_KEY}' tensor (found: {found})")
    tensor = tensors[key]
    expected = (config["num_virtual_tokens"], config["token_dim"])
    if tensor.dim() != 2 or tuple(tensor.shape) != expected:
        raise UserError(f"{path}: tensor '{key}' has shape {list(tensor.shape)}, expected {list(expected)} (from adapter_config.json)")
    if tensor.dtype != torch.float32:
        raise UserError(f"{path}: tensor '{key}' is {str(tensor.dtype).removeprefix('torch.')}, expected float32")
    if not torch.isfinite(tensor).all():
        raise UserError(f"{path}: tensor '{key}' contains NaN or infinite values")
    return tensor.contiguous()


_CACHE: dict[tuple[str, str], SoftPrompt] = {}


def load_soft_prompt(folder: Path) -> SoftPrompt:
    """Read and check an adapter folder; cached per (folder, file hash)."""
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: missing (a soft prompt needs adapter_model.safetensors)")
    digest = file_sha256(weights)
    key = (str(folder.resolve()), digest)
    if key not in _CACHE:
        _CACHE[key] = SoftPrompt(read_tensor(weights, config), config, digest, folder)
    return _CACHE[key]


def persona_soft_prompt(installed: InstalledPersona) -> SoftPrompt:
    return load_soft_prompt(adapter_dir(installed))


# -- model identity -----------------------------------------------------------------------------


def model_family(name: str) -> str:
    """A model's identity without path, file suffix, quantization or cache hash:
    '/x/SmolLM2-135M-Instruct.Q4_1.gguf', 'HuggingFaceTB/SmolLM2-135M-Instruct' and
    '.../SmolLM2-135M-Instruct.Q4_1-f1a544e7b08906b2' all give 'smollm2-135m-instruct'."""
    base = str(name).rstrip("/").replace("\\", "/").split("/")[-1].lower()
    base = re.sub(r"-[0-9a-f]{16}$", "", base)  # our GGUF conversion cache folder
    base = base.removesuffix(".gguf")
    base = re.sub(r"[.-](q\d\w*|f16|f32|bf16|fp16|fp32|gguf)$", "", base)
    return base


def loaded_identities(loaded) -> set[str]:
    names = {loaded.info.name, loaded.info.source, loaded.info.cache_path or ""}
    names.add(getattr(loaded.model.config, "_name_or_path", "") or "")
    return {model_family(n) for n in names if n}


def check_compatible(soft: SoftPrompt, loaded, persona_name: str, declared_base: str = "") -> None:
    hidden = int(loaded.model.config.hidden_size)
    if soft.embeddings.shape[1] != hidden:
        raise UserError(
            f"persona '{persona_name}': its soft prompt has width {soft.embeddings.shape[1]} but the loaded model "
            f"({loaded.info.name}) has hidden size {hidden}: it was trained for another model"
        )
    base = declared_base or soft.config.get("base_model_name_or_path") or ""
    if base and model_family(base) not in loaded_identities(loaded):
        raise UserError(
            f"persona '{persona_name}': its soft prompt was trained for model '{base}', "
            f"but the loaded model is '{loaded.info.name}'"
        )


# -- what the session uses ----------------------------------------------------------------------


def prefix_for(installed: InstalledPersona, loaded) -> Prefix | None:
    """The embeddings prefix of a soft-prompt persona, or None for a control-code persona."""
    if installed.persona.kind != "soft_prompt":
        return None
    soft = persona_soft_prompt(installed)
    declared = installed.persona.soft_prompt.base_model if installed.persona.soft_prompt else ""
    check_compatible(soft, loaded, installed.persona.name, declared)
    return Prefix(key=f"{installed.persona.name}:{soft.sha256}", embeddings=soft.embeddings)


def version_definition(installed: InstalledPersona) -> dict:
    """What identifies a persona version: its full definition and, for a soft prompt, the sha256 of
    its tensor file (so a retrained tensor is a new version)."""
    definition = installed.persona.definition()
    if installed.persona.kind == "soft_prompt":
        soft = persona_soft_prompt(installed)
        definition["soft_prompt_sha256"] = soft.sha256
        definition["num_virtual_tokens"] = soft.num_virtual_tokens
    return definition


# -- writing --------------------------------------------------------------------------------------


def adapter_config(num_virtual_tokens: int, token_dim: int, base_model: str, init_text: str | None, loaded=None) -> dict:
    """A PEFT 0.x PromptTuningConfig as JSON (what `PeftModel.from_pretrained` reads)."""
    config = loaded.model.config if loaded is not None else None
    return {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "auto_mapping": None,
        "base_model_name_or_path": base_model,
        "revision": None,
        "inference_mode": True,
        "num_virtual_tokens": int(num_virtual_tokens),
        "token_dim": int(token_dim),
        "num_transformer_submodules": 1,
        "num_attention_heads": int(getattr(config, "num_attention_heads", 0) or 0) or None,
        "num_layers": int(getattr(config, "num_hidden_layers", 0) or 0) or None,
        "prompt_tuning_init": "TEXT" if init_text else "RANDOM",
        "prompt_tuning_init_text": init_text or None,
        "tokenizer_name_or_path": base_model if init_text else None,
        "tokenizer_kwargs": None,
    }


def save_soft_prompt(folder: Path, embeddings: torch.Tensor, config: dict) -> str:
    """Write the adapter (atomically per file); returns the tensor file's sha256."""
    from safetensors.torch import save_file

    from chatbot.locations import ensure_private_dir

    ensure_private_dir(folder)  # in the data dir: 0700 whatever the umask
    tensor = embeddings.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(tensor).all():
        raise UserError("refusing to save a soft prompt with NaN or infinite values")
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file({TENSOR_KEY: tensor}, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / WEIGHTS_FILE)
    tmp_config = folder / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp_config.replace(folder / CONFIG_FILE)
    return file_sha256(folder / WEIGHTS_FILE)

