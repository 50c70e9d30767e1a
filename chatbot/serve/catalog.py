"""Personas as models: each installed persona is `<model>:<persona>` (`smollm2-135m:pirate`), a
persona's name alone is accepted too, and the model's name alone is the model as it is, with no
persona (for a client that brings its own: `chatbot --engine openai` renders its persona into the
messages it sends)."""

from __future__ import annotations

import re
from pathlib import Path

from chatbot.errors import NotFoundError
from chatbot.personas.registry import InstalledPersona, scan
from chatbot.personas.schema import Persona
from chatbot.personas.soft_prompt import model_family

NO_PERSONA = InstalledPersona(Persona(name="none", description="the model as it is, no persona"), "builtin", Path("."))


def base_name(model_name: str) -> str:
    return re.sub(r"-instruct$", "", model_family(model_name))


class Catalog:
    def __init__(self, model_name: str, data_dir):
        self.base = base_name(model_name)
        self.data_dir = data_dir

    def personas(self) -> dict[str, InstalledPersona]:
        return scan(self.data_dir)[0]  # scanned per request: a persona added meanwhile is served

    def model_ids(self) -> list[str]:
        return [self.base] + [f"{self.base}:{name}" for name in sorted(self.personas())]

    def resolve(self, model: str) -> InstalledPersona:
        if model == self.base:
            return NO_PERSONA
        base, _, name = model.rpartition(":")
        if base and base != self.base:
            raise NotFoundError(f"no model '{model}': this server serves {self.base} and {self.base}:<persona>")
        found = self.personas()
        if name not in found:
            raise NotFoundError(f"no model '{model}': personas here are {', '.join(sorted(found)) or 'none'}")
        return found[name]
