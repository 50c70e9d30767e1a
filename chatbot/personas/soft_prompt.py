"""Soft prompts: PEFT prompt-tuning adapters turned into an embeddings prefix for the engine."""

from __future__ import annotations

from chatbot.engine.decoding import Prefix
from chatbot.personas.registry import InstalledPersona


def prefix_for(installed: InstalledPersona, loaded) -> Prefix | None:
    """The embeddings prefix of a soft-prompt persona, or None for a control-code persona."""
    if installed.persona.kind != "soft_prompt":
        return None
    raise NotImplementedError("soft-prompt personas arrive with the personas issue")


def version_definition(installed: InstalledPersona) -> dict:
    """What identifies a persona version: its full definition (and, later, its tensor's hash)."""
    return installed.persona.definition()
