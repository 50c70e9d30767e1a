"""The models a user already has on disk, by a name `--model` takes.

Where they are looked for (each missing place is skipped):
- the bundled model (`bundled`);
- converted caches, `<cache_dir>/models/<name>/` (transformers folders this app made);
- GGUF files in the Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`):
  `hf:<owner>/<repo>/<file>.gguf`;
- Ollama's store (`$OLLAMA_MODELS`, `~/.ollama/models`, `/usr/share/ollama/.ollama/models`):
  `manifests/<host>/<namespace>/<model>/<tag>` name a blob `blobs/sha256-<digest>` (the layer of
  media type `application/vnd.ollama.image.model`): `ollama:<model>:<tag>`;
- LM Studio's models folder (`~/.lmstudio/models`, older `~/.cache/lm-studio/models`):
  `lmstudio:<publisher>/<repo>/<file>.gguf`;
- the `models_dir` setting (`CHATBOT_MODELS_DIR`): every `.gguf` below it, by its file name
  without `.gguf`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from chatbot.models.gguf_header import NotGGUF, is_gguf, read_header

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT = ("registry.ollama.ai", "library")
MAX_DEPTH = 6  # how deep a models folder is searched for .gguf files


@dataclass
class ModelEntry:
    name: str  # what --model takes
    source: str  # bundled | converted | hf-cache | ollama | lmstudio | models_dir
    path: str
    architecture: str = "?"
    quantization: str = "?"
    size_bytes: int = 0
    context_length: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _gguf_entry(name: str, source: str, path: Path) -> ModelEntry | None:
    try:
        header = read_header(path)
        return ModelEntry(name, source, str(path), header.architecture, header.quantization,
                          path.stat().st_size, header.context_length)
    except (OSError, NotGGUF):
        return None


def _ggufs_below(root: Path) -> Iterator[Path]:
    """Every .gguf file below root (symlinks followed: the HF cache's snapshots are links)."""
    if not root.is_dir():
        return
    for folder, dirs, files in os.walk(root, followlinks=True):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            dirs[:] = []
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for file in sorted(files):
            if file.endswith(".gguf"):
                yield Path(folder) / file


def bundled() -> Iterator[ModelEntry]:
    from chatbot.engine.loading import bundled_gguf
    from chatbot.errors import UserError

    try:
        path = bundled_gguf()
    except UserError:
        return
    entry = _gguf_entry("bundled", "bundled", path)
    if entry:
        yield entry


def converted(cache_dir: Path) -> Iterator[ModelEntry]:
    from chatbot.engine.loading import MARKER

    models = Path(cache_dir).expanduser() / "models"
    if not models.is_dir():
        return
    for folder in sorted(models.iterdir()):
        if folder.suffix in (".fast", ".meta") or not (folder / MARKER).is_file() or not any(folder.glob("*.safetensors")):
            continue
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            continue
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        yield ModelEntry(folder.name, "converted", str(folder), str(config.get("model_type", "?")),
                         str(config.get("torch_dtype") or config.get("dtype") or "float32"), size,
                         config.get("max_position_embeddings"))


def hf_cache_dirs() -> list[Path]:
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"])]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]) / "hub"]
    return [Path(os.environ.get("XDG_CACHE_HOME") or _home() / ".cache") / "huggingface" / "hub"]


def hf_cache() -> Iterator[ModelEntry]:
    for hub in hf_cache_dirs():
        if not hub.is_dir():
            continue
        for repo in sorted(hub.glob("models--*")):
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            seen = set()
            for snapshot in sorted((repo / "snapshots").glob("*")):
                for path in _ggufs_below(snapshot):
                    relative = path.relative_to(snapshot).as_posix()
                    if relative in seen:  # one name per file, the first snapshot's
                        continue
                    seen.add(relative)
                    entry = _gguf_entry(f"hf:{repo_id}/{relative}", "hf-cache", path)
                    if entry:
                        yield entry


def ollama_dirs() -> list[Path]:
    if os.environ.get("OLLAMA_MODELS"):
        return [Path(os.environ["OLLAMA_MODELS"])]
    return [_home() / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def ollama_name(manifest: Path, manifests: Path) -> str:
    host, namespace, model, tag = manifest.relative_to(manifests).parts[-4:]
    prefix = "" if (host, namespace) == OLLAMA_DEFAULT else (f"{namespace}/" if host == OLLAMA_DEFAULT[0] else f"{host}/{namespace}/")
    return f"ollama:{prefix}{model}:{tag}"


def ollama() -> Iterator[ModelEntry]:
    for store in ollama_dirs():
        manifests = store / "manifests"
        if not manifests.is_dir():
            continue
        for manifest in sorted(p for p in manifests.glob("*/*/*/*") if p.is_file()):
            try:
                layers = json.loads(manifest.read_text()).get("layers", [])
            except (OSError, ValueError, AttributeError):
                continue
            for layer in layers:
                if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER:
                    blob = store / "blobs" / str(layer.get("digest", "")).replace(":", "-")
                    if is_gguf(blob):
                        entry = _gguf_entry(ollama_name(manifest, manifests), "ollama", blob)
                        if entry:
                            yield entry


def lmstudio_dirs() -> list[Path]:
    return [_home() / ".lmstudio" / "models", _home() / ".cache" / "lm-studio" / "models"]


def lmstudio() -> Iterator[ModelEntry]:
    for root in lmstudio_dirs():
        for path in _ggufs_below(root):
            entry = _gguf_entry(f"lmstudio:{path.relative_to(root).as_posix()}", "lmstudio", path)
            if entry:
                yield entry


def models_dir(folder: Path | None) -> Iterator[ModelEntry]:
    if not folder:
        return
    root = Path(folder).expanduser()
    names: set[str] = set()
    for path in _ggufs_below(root):
        name = path.name.removesuffix(".gguf")
        if name in names:  # the same file name twice: the second by its path below the folder
            name = path.relative_to(root).as_posix().removesuffix(".gguf")
        names.add(name)
        entry = _gguf_entry(name, "models_dir", path)
        if entry:
            yield entry


def discover(settings) -> list[ModelEntry]:
    """Every model found, in the order of the docstring's places."""
    return [*bundled(), *converted(settings.cache_dir), *hf_cache(), *ollama(), *lmstudio(),
            *models_dir(getattr(settings, "models_dir", None))]


PREFIXES = {"ollama:": ollama, "lmstudio:": lmstudio, "hf:": hf_cache}


def find(name: str, settings=None) -> ModelEntry | None:
    """The listed model called `name`, looking only where that name can come from."""
    for prefix, source in PREFIXES.items():
        if name.startswith(prefix):
            wanted = name if prefix != "ollama:" or name.count(":") > 1 else f"{name}:latest"
            return next((e for e in source() if e.name == wanted), None)
    if name == "bundled":
        return next(bundled(), None)
    if settings is None:
        from chatbot.config import Settings

        settings = Settings()
    return next((e for e in [*converted(settings.cache_dir), *models_dir(getattr(settings, "models_dir", None))]
                 if e.name == name), None)
