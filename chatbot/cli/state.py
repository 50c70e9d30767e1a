"""What every command shares: settings, and the model and store, each opened once and only when a
command needs it."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatbot.config import Settings

if TYPE_CHECKING:  # the TUI's quick start makes an AppState without typer (cli/tui_start.py)
    import typer


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

    def store(self, create: bool = True):
        """The store, opened once. Commands that only read pass `create=False`: they never make a
        database (a mistyped `--db` is `no database at …`, not an empty history); the default one,
        not made yet, reads as an empty history. Only the data dir is created when missing: a new
        database elsewhere needs its folder to exist."""
        if "store" not in self._opened:
            from chatbot.store import Store
            from chatbot.store.database import NoDatabase, locate

            url = self.settings.database_url()
            location = locate(url)
            in_data_dir = location.path is not None and location.path.parent == self.settings.data_dir.expanduser().absolute()
            try:
                self._opened["store"] = Store.open(url, create=create, create_folders=in_data_dir)
            except NoDatabase:
                if self.settings.db:
                    raise
                self._opened["store"] = Store.open("sqlite://")  # nothing saved yet, and nothing made for it
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
