"""Errors a user can cause. The CLI turns them into one line and an exit status, never a traceback."""


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
