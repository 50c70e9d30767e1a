"""The root command: global options, command groups, and one-line errors instead of tracebacks."""

import sys

import typer

from chatbot.cli.state import AppState
from chatbot.cli.tui_start import ROOT_VALUE_OPTIONS
from chatbot.config import settings_from
from chatbot.errors import UserError, exit_in_one_line as _fail

app = typer.Typer(
    name="chatbot",
    help="A terminal chatbot with conversation memory and personas.",
    epilog="The options --db, --model and --engine may also follow the command: chatbot ask 'hi' --model FILE.gguf",
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    db: str | None = typer.Option(None, "--db", help="Database path or SQLAlchemy URL [env CHATBOT_DB]."),
    model: str | None = typer.Option(
        None, "--model", help="Model: a transformers directory, a .gguf file, a hub id or a name `chatbot model list` shows [env CHATBOT_MODEL]."
    ),
    engine: str | None = typer.Option(None, "--engine", help="Decode engine: auto, reference, fast or openai (a server)."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="The OpenAI-compatible server of --engine openai [env CHATBOT_BASE_URL]."
    ),
    remote_model: str | None = typer.Option(
        None, "--remote-model", help="The server's model for --engine openai [env CHATBOT_REMOTE_MODEL]."
    ),
    resume: str | None = typer.Option(
        None, "--resume", help="Open the TUI on a conversation: ID, or 'last' (also --resume alone).",
        show_default=False,
    ),
    persona: str | None = typer.Option(None, "--persona", help="Persona to start the TUI with."),
) -> None:
    given = {"db": db, "model": model, "engine": engine, "base_url": base_url, "remote_model": remote_model}
    overrides = {k: v for k, v in given.items() if v is not None}
    ctx.obj = AppState(settings=settings_from(**overrides))
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        from chatbot.cli.chat import open_default_chat

        open_default_chat(ctx.obj, resume=resume, persona=persona)


def _register_groups(everything: bool = True) -> None:
    from chatbot.cli import ask, chat, model_cmd  # noqa: F401  (commands register themselves)

    if not everything:
        return
    for optional in ("history", "context_cmd", "rerun_cmd", "db_cmd", "persona_cmd", "serve_cmd"):
        try:
            __import__(f"chatbot.cli.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"chatbot.cli.{optional}":
                raise


def resume_alone_means_last(args: list[str]) -> list[str]:
    """`chatbot --resume` with no ID opens the last conversation. Typer has no option with an
    optional value, so the missing value is filled in here, among the root options only (before
    the command, if any)."""
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ROOT_VALUE_OPTIONS:
            i += 2
        elif arg == "--resume":
            if i + 1 == len(args) or args[i + 1].startswith("-"):
                args.insert(i + 1, "last")
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            break  # the command: its arguments are its own
    return args


def opens_the_tui(args: list[str]) -> bool:
    """Whether the arguments are root options only (no command, no --help): the TUI opens, and
    the other command groups need not be imported before its first paint (`history` imports the
    store, i.e. SQLAlchemy: ~0.45 s of CPU; the TUI opens the store after its first frame)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ROOT_VALUE_OPTIONS or (arg == "--resume" and not args[i + 1 : i + 2] == ["--help"]):
            i += 2
        elif arg.startswith("-") and arg not in ("--help", "--"):
            i += 1
        else:
            return False
    return True


# Root options a user may also write after the command (as in `llm`): moved in front of it.
# --persona and --resume stay where they are: commands that take them have their own.
ROOT_OPTIONS_ANYWHERE = ("--db", "--model", "--engine", "--base-url", "--remote-model")


def root_options_first(args: list[str]) -> list[str]:
    """`chatbot ask "hi" --model X` means `chatbot --model X ask "hi"`. The command path is walked
    as click will parse it, so a value of the command's own options and everything after `--`
    stay untouched, and an option the command defines itself stays the command's."""
    args = list(args)
    command = typer.main.get_command(app)  # typer's vendored click: duck-typed below
    i = _skip_options(args, 0, command)
    insert_at = i
    while i < len(args) and args[i] in (getattr(command, "commands", None) or {}):
        command = command.commands[args[i]]
        i = _skip_options(args, i + 1, command)
    own = {name for param in command.params for name in param.opts}
    takes_value = _value_options(command)
    moved: list[str] = []
    kept: list[str] = []
    rest = args[insert_at:]
    j = 0
    while j < len(rest):
        arg = rest[j]
        name = arg.split("=", 1)[0]
        if arg == "--":
            kept.extend(rest[j:])
            break
        if name in ROOT_OPTIONS_ANYWHERE and name not in own:
            count = 1 if "=" in arg else 2
            moved.extend(rest[j : j + count])
            j += count
        elif arg in takes_value:  # the command's own option: its value is not an option
            kept.extend(rest[j : j + 2])
            j += 2
        else:
            kept.append(arg)
            j += 1
    return args[:insert_at] + moved + kept


def _value_options(command) -> set[str]:
    return {name for param in command.params if param.param_type_name == "option"
            and not param.is_flag and not param.count for name in param.opts}


def _skip_options(args: list[str], i: int, command) -> int:
    """The index of the first argument after the options that follow `command`'s name."""
    takes_value = _value_options(command)
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        i += 2 if args[i] in takes_value else 1
    return i


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: run, and map every user error to one line."""
    _register_groups(everything=not opens_the_tui(sys.argv[1:] if argv is None else argv))
    argv = resume_alone_means_last(root_options_first(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=argv, prog_name="chatbot", standalone_mode=False)
        if isinstance(code, int):  # typer's exit status: 130 for a Ctrl+C it caught, a typer.Exit's
            return code
    except UserError as exc:
        _fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _fail("aborted", 1)
    except typer.TyperException as exc:  # click's usage errors (typer vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message())  # a group run without a command: its help
            raise SystemExit(0) from None
        _fail(exc.format_message(), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`); nothing to say
        return 0
    return 0
