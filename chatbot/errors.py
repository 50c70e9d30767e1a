"""Errors a user can cause. The CLI turns them into one line and an exit status, never a traceback."""

import sys


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, a refused action."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError):
    """A bad argument or option value (exit status 2, as for any usage error)."""

    exit_code = 2


class NotFoundError(UserError):
    """An id, name or file that does not exist (exit status 1)."""


def exit_in_one_line(message: str, code: int) -> None:
    """`chatbot: error: ...` on stderr (the message's first line; what it quotes made visible),
    then exit with `code`."""
    from chatbot.terminal_text import visible

    first_line = message.strip().splitlines()[0] if message.strip() else "error"
    print(f"chatbot: error: {visible(first_line)}", file=sys.stderr)  # it may quote what was typed
    raise SystemExit(code)
