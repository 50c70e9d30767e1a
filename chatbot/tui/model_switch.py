"""Switching the model from the command palette ("Model: NAME", the names `chatbot model list`
shows). The new model loads behind the screen, its progress in the status bar, while the old one
keeps answering; once it is ready it takes over the open conversation and the old one is closed.
Each reply already stores the model that wrote it (messages.model)."""

from __future__ import annotations

from functools import partial


def model_names(settings) -> list[str]:
    """The names the palette offers, in `model list` order (a file that cannot be read is left out)."""
    from chatbot.models.discovery import discover

    try:
        return [entry.name for entry in discover(settings)]
    except OSError:
        return []


def switch_model(screen, name: str) -> None:
    controller = screen.controller
    if controller.runtime is None:
        screen.notify("The model is still loading.")
        return
    if name == controller.model_name:
        screen.notify(f"{name} is the model already.")
        return
    previous = controller.settings.model
    controller.settings.model = name  # what the runtime opener reads
    screen.status.model_loading = True
    screen.status.model = f"loading: {name}"
    screen.run_worker(partial(_load, screen, name, previous), thread=True, group="model", exclusive=True)


def _load(screen, name: str, previous: str) -> None:
    def progress(message: str) -> None:
        screen._post(screen._show_progress, message)

    try:
        runtime = screen.app.open_runtime(progress)
    except Exception as exc:  # noqa: BLE001 - shown, not raised: the old model goes on
        screen._post(_failed, screen, name, previous, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return
    screen._post(_ready, screen, runtime)


def _ready(screen, runtime) -> None:
    old = screen.controller.runtime
    screen._runtime_ready(runtime)
    if old is not None and old is not runtime and hasattr(old, "close"):
        old.close()
    screen.notify(f"Model: {runtime.model_name}")


def _failed(screen, name: str, previous: str, message: str) -> None:
    screen.controller.settings.model = previous
    screen.status.model_loading = False
    screen.status.model = screen.controller.model_name or "not loaded"
    screen.notify(f"cannot load {name}: {message}", severity="error", timeout=10)
