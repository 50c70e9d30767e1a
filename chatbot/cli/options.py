"""Options shared by the commands that generate, and their validation as one-line usage errors."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from chatbot.errors import UsageError

OPTION_NAMES = {
    "temperature": "--temperature",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "max_new_tokens": "--max-new-tokens",
    "repetition_penalty": "--repetition-penalty",
    "seed": "--seed",
}

# A seed is stored with the reply: it must fit a SQLite INTEGER.
Seed = typer.Option(None, "--seed", min=0, max=2**63 - 1, help="Seed for sampling: the same seed gives the same reply.")
Temperature = typer.Option(None, "--temperature", help="0 = greedy. Default from persona/settings.")
TopP = typer.Option(None, "--top-p", help="Nucleus sampling mass, in (0, 1].")
TopK = typer.Option(None, "--top-k", help="Sample among the k most likely tokens (0 = all).")
MaxNewTokens = typer.Option(None, "--max-new-tokens", help="Longest reply, in tokens.")
RepetitionPenalty = typer.Option(None, "--repetition-penalty", help="> 1 discourages repeats.")


def sampling_params(settings, persona, conversation: dict | None = None, **overrides):
    """Settings, persona defaults, the conversation's own settings and overrides combined, or a
    one-line usage error naming the option (checked before any model loads)."""
    from chatbot.session import resolve_sampling

    try:
        return resolve_sampling(settings, persona, conversation, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise UsageError(f"{OPTION_NAMES.get(field, field)}: {first['msg'].lower()}") from exc
