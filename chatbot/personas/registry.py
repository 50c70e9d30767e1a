"""Finding personas: shipped ones in the repository's `personas/`, the user's own in the data dir
(overriding shipped ones by name). A broken file is reported and skipped; the others still load."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from chatbot.errors import NotFoundError, UserError
from chatbot.locations import shipped_folder
from chatbot.personas.schema import Persona

PERSONA_FILE = "persona.toml"


@dataclass(frozen=True)
class InstalledPersona:
    persona: Persona
    source: str  # "shipped" | "user"
    folder: Path


def shipped_dir() -> Path:
    return shipped_folder("personas")


def user_dir(data_dir: Path) -> Path:
    return data_dir / "personas"


def load_persona_file(path: Path) -> Persona:
    """Parse and validate one persona.toml; any problem is one line naming the file and field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from exc
    except (RecursionError, ValueError) as exc:  # absurd nesting, an integer too long to convert
        raise UserError(f"{path}: not a usable TOML file ({type(exc).__name__})") from exc
    try:
        persona = Persona.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise UserError(f"{path}: field '{field}': {first['msg']}") from exc
    if persona.name != path.parent.name:
        raise UserError(f"{path}: field 'name': '{persona.name}' does not match its folder '{path.parent.name}'")
    return persona


def scan(data_dir: Path) -> tuple[dict[str, InstalledPersona], list[str]]:
    """All personas by name (user ones win), and one line per file that failed to load."""
    found: dict[str, InstalledPersona] = {}
    problems: list[str] = []
    for source, root in (("shipped", shipped_dir()), ("user", user_dir(data_dir))):
        if not root.is_dir():
            continue
        for path in sorted(root.glob(f"*/{PERSONA_FILE}")):
            try:
                persona = load_persona_file(path)
            except UserError as exc:
                problems.append(str(exc))
                continue
            found[persona.name] = InstalledPersona(persona, source, path.parent)
    return found, problems


def find(name: str, data_dir: Path) -> InstalledPersona:
    found, problems = scan(data_dir)
    if name in found:
        return found[name]
    broken = [p for p in problems if f"/{name}/{PERSONA_FILE}" in p]
    if broken:
        raise UserError(broken[0])
    known = ", ".join(sorted(found)) or "none"
    raise NotFoundError(f"no persona named '{name}' (installed: {known})")
