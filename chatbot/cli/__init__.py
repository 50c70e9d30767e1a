"""The `chatbot` command line. Each command group lives in its own module."""

import sys


def main(argv: list[str] | None = None) -> int:
    """The console script: `chatbot` on a terminal with root options only opens the TUI at once
    (`tui_start.py`: typer and the commands are not imported before its first frame); everything
    else is the typer CLI (`app.py`)."""
    from chatbot.cli.tui_start import open_tui

    code = open_tui(sys.argv[1:] if argv is None else list(argv))
    if code is not None:
        return code
    from chatbot.cli.app import main as run_command

    return run_command(argv)


__all__ = ["main"]
