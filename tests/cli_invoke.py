"""The console script's entry point run in process, as a user runs it: (exit code, stdout, stderr)."""

import io
import sys

from chatbot.cli.app import main


def invoke_main(capsys, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    saved = None
    if stdin is not None:  # what a pipe gives the command
        saved, sys.stdin = sys.stdin, io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    finally:
        if saved is not None:
            sys.stdin = saved
    out, err = capsys.readouterr()
    return code, out, err


def share_runtime(monkeypatch, settings, runtime_of) -> None:
    """Commands run in this process open the runtime `runtime_of()` gives (opened once from
    `settings`) instead of loading the same model again; its KV cache is forgotten first, so each
    command starts as a fresh process would. Another model, engine or cache folder opens for real."""
    import chatbot.runtime

    real = chatbot.runtime.open_runtime

    def open_runtime(wanted, progress=None):
        if any(getattr(wanted, key) != getattr(settings, key) for key in ("model", "engine", "dtype", "cache_dir")):
            return real(wanted, progress)
        chatbot.runtime.open_runtime = real  # runtime_of may open it for the first time
        try:
            runtime = runtime_of()
        finally:
            chatbot.runtime.open_runtime = open_runtime
        runtime.engine.reset()
        return runtime

    monkeypatch.setattr(chatbot.runtime, "open_runtime", open_runtime)


def run_like_subprocess(bundled_cli, monkeypatch):
    """`run(args, env, stdin=None)` giving what subprocess.run gives (returncode, stdout, stderr),
    with the command run in this process (bundled_cli) and `env` set with monkeypatch."""
    import subprocess

    def run(args, env, stdin=None):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code, out, err = bundled_cli(*args, stdin=stdin)
        return subprocess.CompletedProcess(args, code, out, err)

    return run
