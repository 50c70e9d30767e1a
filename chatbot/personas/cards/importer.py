"""`persona import` and `persona export --format card`: a card file in, a persona folder out
(written whole or not at all), and a persona back out as a V2 JSON card."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from chatbot.errors import UserError
from chatbot.locations import ensure_private_dir, write_private_text
from chatbot.personas.cards.containers import RawCard, read_card_file, refuse
from chatbot.personas.cards.mapping import DEFAULT_EXAMPLE_TOKENS, Mapped, substitute, to_persona
from chatbot.personas.cards.model import Card
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.tuning import write_persona

IMPORT_RECORD = "card_import.json"


def validate_card(raw: RawCard, source: str) -> Card:
    spec = raw.data.get("spec")
    if spec not in ("chara_card_v2", "chara_card_v3"):
        shown = json.dumps(spec)[:40] if spec is not None else "missing"
        raise refuse(source, f"not a V2 or V3 character card (spec is {shown}; expected chara_card_v2 or chara_card_v3)")
    try:
        return Card.model_validate(raw.data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(card)"
        message = " ".join(first["msg"].removeprefix("Value error, ").split())
        raise refuse(source, f"field '{where}': {message}") from None
    except RecursionError:
        raise refuse(source, "nested too deeply") from None


def name_for(card: Card) -> str:
    """A persona name from the card's name: lowercase ASCII letters and digits, '-' between."""
    slug = re.sub(r"[^a-z0-9]+", "-", card.data.name.lower()).strip("-")[:64].strip("-")
    return slug or "card"


def import_card(
    raw: RawCard,
    card: Card,
    source: str,
    folder: Path,
    user_name: str,
    count_tokens: Callable[[str], int],
    example_tokens: int = DEFAULT_EXAMPLE_TOKENS,
    force: bool = False,
    name: str | None = None,
) -> tuple[Mapped, Path]:
    """A card read and validated (`read_card_file`, `validate_card`) into a persona folder, which
    appears complete (written beside it, then renamed into place) or not at all."""
    folder = Path(folder)
    if (folder / "persona.toml").exists() and not force:
        raise UserError(f"persona '{folder.name}' already exists in {folder} (use --force to replace it)")
    kept_as = f"card.original{raw.suffix}"
    mapped = to_persona(card, name or folder.name, user_name, count_tokens, example_tokens, kept_as)
    staging = folder.with_name(f".{folder.name}.importing")
    if staging.exists():
        shutil.rmtree(staging)
    ensure_private_dir(staging)
    try:
        (staging / kept_as).write_bytes(raw.original)
        (staging / kept_as).chmod(0o600)
        if mapped.lorebook is not None:
            write_private_text(staging / mapped.persona.lorebook, lorebook_json(mapped, user_name))
        record = {
            "source": source, "container": raw.container, "spec": card.spec, "spec_version": card.spec_version,
            "sha256": hashlib.sha256(raw.original).hexdigest(), "user_name": user_name,
            "example_tokens": example_tokens, "examples_kept": mapped.examples_kept,
            "examples_total": mapped.examples_total,
        }
        write_private_text(staging / IMPORT_RECORD, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        write_persona(staging, mapped.persona)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return mapped, folder / "persona.toml"


def lorebook_json(mapped: Mapped, user_name: str) -> str:
    """The card's lorebook, its contents with the names substituted (what the prompt gets)."""
    book = mapped.lorebook
    char = mapped.persona.display_name
    data = book.model_dump(mode="json")
    for entry in data["entries"]:
        entry["content"] = substitute(entry["content"], char, user_name)
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


# -- export ---------------------------------------------------------------------------------------


V2_FIELDS = (
    "name", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
    "system_prompt", "post_history_instructions", "alternate_greetings", "character_book", "tags",
    "creator", "character_version", "extensions",
)


def export_card(installed: InstalledPersona) -> dict:
    """A V2 card: the imported original's fields (a V3 card's V2 fields), or for a persona made
    here its control code as the system prompt and its opening messages as greetings."""
    persona = installed.persona
    if persona.source_card:
        original = installed.folder / persona.source_card
        raw = read_card_file(original)
        data = validate_card(raw, str(original)).data.model_dump(mode="json", exclude_none=True)
        return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {k: data[k] for k in V2_FIELDS if k in data}}
    if persona.kind != "control_code":
        raise UserError(f"persona '{persona.name}' is a soft prompt: it has no text to write as a card")
    firsts = list(persona.first_messages) or ([persona.greeting] if persona.greeting else [])
    data = {
        "name": persona.title, "description": "", "personality": "", "scenario": "",
        "first_mes": firsts[0] if firsts else "", "mes_example": "", "creator_notes": persona.description,
        "system_prompt": persona.control_code, "post_history_instructions": persona.post_history,
        "alternate_greetings": firsts[1:], "tags": [], "creator": "", "character_version": "",
        "extensions": {"persona_chatbot": {"name": persona.name, "placement": persona.placement}},
    }
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}
