"""The console script's entry point run in process, as a user runs it: (exit code, stdout, stderr)."""

from chatbot.cli.app import main


def invoke_main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
