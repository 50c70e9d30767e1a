"""`chatbot model info` and `chatbot model list`."""

from __future__ import annotations

import json

import typer

from chatbot.cli.app import app
from chatbot.cli.state import state_of
from chatbot.terminal_text import visible

model_app = typer.Typer(help="The language model.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("info")
def info(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Which model, from where, in what dtype, with what context and engine."""
    runtime = state_of(ctx).runtime()
    details = runtime.loaded.info.as_dict()
    if as_json:
        print(json.dumps(details))
        return
    labels = {
        "name": "model",
        "source": "source",
        "source_kind": "source kind",
        "architecture": "architecture",
        "dtype": "dtype",
        "context_length": "context length",
        "has_chat_template": "chat template",
        "cache_path": "cache",
        "engine": "engine",
    }
    for key, label in labels.items():
        print(f"{label:>15}: {details[key]}")


@model_app.command("list")
def list_models(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The models on this machine (bundled, converted, Hugging Face cache, Ollama, LM Studio,
    CHATBOT_MODELS_DIR), by the name --model takes."""
    from chatbot.models.discovery import discover

    entries = discover(state_of(ctx).settings)
    if as_json:
        print(json.dumps([entry.as_dict() for entry in entries]))
        return
    rows = [(e.name, e.source, e.architecture, e.quantization, _size(e.size_bytes), str(e.context_length or "?"))
            for e in entries]
    header = ("NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "CONTEXT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(visible(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
