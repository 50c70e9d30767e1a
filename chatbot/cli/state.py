"""What every command shares: settings, and the model and store, each opened once and only when a
command needs it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import typer

from chatbot.config import Settings


def echo_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class AppState:
    settings: Settings
    _opened: dict[str, Any] = field(default_factory=dict)

    def runtime(self):
        if "runtime" not in self._opened:
            from chatbot.runtime import open_runtime

            self._opened["runtime"] = open_runtime(self.settings, progress=echo_progress)
        return self._opened["runtime"]

    def store(self):
        if "store" not in self._opened:
            from chatbot.store import Store

            self._opened["store"] = Store.open(self.settings.database_url())
        return self._opened["store"]

    def close(self) -> None:
        store = self._opened.pop("store", None)
        if store is not None:
            store.close()

    def persona(self, name: str | None):
        from chatbot.personas.registry import find

        return find(name or self.settings.persona, self.settings.data_dir)


def state_of(ctx: typer.Context) -> AppState:
    return ctx.find_root().obj
