"""`chatbot` with root options only, on a terminal: the TUI opened before typer, pydantic and the
command modules are imported (~0.4 s of CPU on the 2-core AMD EPYC the first frame no longer
waits for). The settings are read behind the first frame (`tui/app.py`, `run_tui`); an invalid one
is still one line, once the screen has closed. Anything else, or these options written any other
way, goes through typer as before (`cli/app.py`): its parse and its messages stay the only ones."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field

from chatbot.errors import UserError, exit_in_one_line

ROOT_VALUE_OPTIONS = ("--db", "--model", "--engine", "--persona", "--base-url", "--remote-model")
SETTING_OF = {"--db": "db", "--model": "model", "--engine": "engine", "--base-url": "base_url", "--remote-model": "remote_model"}


@dataclass
class TuiStart:
    overrides: dict[str, str] = field(default_factory=dict)  # Settings fields, as the root command passes them
    resume: str | None = None
    persona: str | None = None


def tui_start(args: list[str]) -> TuiStart | None:
    """What `chatbot ARGS` opens the TUI with, when ARGS are root options written plainly
    (`--db X`, `--db=X`, `--resume` with or without an ID); None for anything else (a command,
    `--help`, a missing value, an option given twice): typer's parse then answers."""
    start, seen, i = TuiStart(), set(), 0
    while i < len(args):
        name, equals, value = args[i].partition("=")
        if name in seen or not (name in ROOT_VALUE_OPTIONS or name == "--resume"):
            return None
        seen.add(name)
        i += 1
        if not equals:
            if i < len(args) and not args[i].startswith("-"):
                value, i = args[i], i + 1
            elif name == "--resume":
                value = "last"  # `--resume` alone: the conversation used last (as cli/app.py's rewrite)
            else:
                return None
        if name == "--resume":
            start.resume = value
        elif name == "--persona":
            start.persona = value
        else:
            start.overrides[SETTING_OF[name]] = value
    return start


def open_tui(args: list[str]) -> int | None:
    """Run the TUI if `args` open it on a terminal and Textual is there; None: not done here."""
    start = tui_start(args)
    if start is None or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return None
    # No garbage collection until the first frame is out (ChatScreen._start_backend turns it back
    # on): the imports and the first layout made ~120 collections, ~0.06 s of CPU, of objects
    # that all live on.
    gc.disable()
    try:
        from chatbot.tui.app import run_tui
    except ImportError:  # no Textual: cli/app.py falls back to the plain chat
        gc.enable()
        return None

    def make_state():
        from chatbot.cli.state import AppState
        from chatbot.config import settings_from

        return AppState(settings=settings_from(**start.overrides))

    try:
        run_tui(make_state, resume=start.resume, persona=start.persona)
    except UserError as exc:
        exit_in_one_line(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        exit_in_one_line("interrupted", 130)
    return 0
