"""Personas as models: each installed persona is `<model>:<persona>` (`smollm2-135m:pirate`); the
model's name alone means the default persona, and a persona's name alone is accepted too."""

from __future__ import annotations

import re

from chatbot.errors import NotFoundError
from chatbot.personas.registry import InstalledPersona, scan
from chatbot.personas.soft_prompt import model_family


def base_name(model_name: str) -> str:
    return re.sub(r"-instruct$", "", model_family(model_name))


class Catalog:
    def __init__(self, model_name: str, data_dir, default_persona: str):
        self.base = base_name(model_name)
        self.data_dir = data_dir
        self.default_persona = default_persona

    def personas(self) -> dict[str, InstalledPersona]:
        return scan(self.data_dir)[0]  # scanned per request: a persona added meanwhile is served

    def model_ids(self) -> list[str]:
        return [f"{self.base}:{name}" for name in sorted(self.personas())]

    def resolve(self, model: str) -> InstalledPersona:
        base, _, name = model.rpartition(":")
        if not base:  # no colon: the model alone (default persona) or a persona's name alone
            name = self.default_persona if model == self.base else model
        elif base != self.base:
            raise NotFoundError(f"no model '{model}': this server serves {self.base}:<persona>")
        found = self.personas()
        if name not in found:
            raise NotFoundError(f"no model '{model}': personas here are {', '.join(sorted(found)) or 'none'}")
        return found[name]
