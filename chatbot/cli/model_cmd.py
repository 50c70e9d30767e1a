"""`chatbot model info`."""

from __future__ import annotations

import json

import typer

from chatbot.cli.app import app
from chatbot.cli.state import state_of

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
