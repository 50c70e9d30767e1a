"""What happens when the fast path cannot take a model (a tensor type, an architecture, a rope
scaling it has no form for): on `--engine auto` one note and the reference engine; on
`--engine fast` one line naming what it cannot take. Never a traceback."""

from __future__ import annotations

from chatbot.engine.fast.gguf_weights import NotOnFastPath
from chatbot.errors import UserError


class FastPathAttempt:
    """`with FastPathAttempt(kind, name, progress) as attempt: ...` runs the fast path's part;
    afterwards `attempt.refused` says whether it was turned down (auto: go on with reference)."""

    def __init__(self, kind: str, model_name: str, progress=None):
        self.kind, self.model_name, self.progress = kind, model_name, progress
        self.refused = False

    def __enter__(self) -> "FastPathAttempt":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None or not issubclass(exc_type, NotOnFastPath):
            return False
        if self.kind == "fast":
            raise UserError(
                f"the fast engine cannot take {self.model_name}: {exc} (use --engine auto or reference)", exit_code=1
            ) from exc
        self.refused = True
        if self.progress:
            self.progress(f"note: {self.model_name}: {exc}, which the fast engine cannot take; using the reference engine")
        return True  # the caller goes on with the reference engine
