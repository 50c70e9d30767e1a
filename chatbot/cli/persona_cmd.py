"""`chatbot persona list|show|new|import|export|train|distill|eval`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import typer

from chatbot.cli.app import app
from chatbot.cli.state import echo_progress, state_of
from chatbot.errors import NotFoundError, UsageError, UserError

persona_app = typer.Typer(no_args_is_help=True, help="Personas: list, show, new, import, export, train, distill, eval.")
app.add_typer(persona_app, name="persona")


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _load_fp32(settings):
    """Training and evaluation run the model in float32 (bf16 gradients are too coarse)."""
    from chatbot.engine.loading import load_model

    return load_model(settings.model, settings.cache_dir, dtype="float32", progress=echo_progress)


# -- list / show -------------------------------------------------------------------------------------


@persona_app.command("list")
def list_cmd(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout.")) -> None:
    """Installed personas: shipped ones and your own (yours win by name)."""
    from chatbot.personas.registry import scan

    settings = state_of(ctx).settings
    found, problems = scan(settings.data_dir)
    for problem in problems:
        print(f"chatbot: warning: skipped {problem}", file=sys.stderr)
    items = [
        {
            "name": name,
            "kind": p.persona.kind,
            "source": p.source,
            "display_name": p.persona.title,
            "description": p.persona.description,
            "placement": p.persona.placement if p.persona.kind == "control_code" else None,
            "distilled_from": p.persona.distilled_from or None,
            "folder": str(p.folder),
        }
        for name, p in sorted(found.items())
    ]
    if as_json:
        print(json.dumps(items, indent=1, ensure_ascii=False))
        return
    from rich.table import Table
    from rich.text import Text

    from chatbot.terminal_text import visible

    table = Table(box=None, pad_edge=False)
    for column in ("name", "kind", "source", "description"):
        table.add_column(column, overflow="fold")
    for item in items:  # Text: a persona file's `[bold]` is characters, its escapes are visible
        table.add_row(*(Text(visible(item[key] or "")) for key in ("name", "kind", "source", "description")))
    _stdout_console().print(table)


@persona_app.command("show")
def show_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Persona name."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
) -> None:
    """A persona's definition, and for a soft prompt its adapter and training record."""
    from chatbot.personas import soft_prompt as sp
    from chatbot.personas.training import HISTORY_FILE

    installed = state_of(ctx).persona(name)
    info = {"source": installed.source, "folder": str(installed.folder), **installed.persona.definition()}
    if installed.persona.kind == "soft_prompt":
        info.pop("placement")  # only a control code has a place
    info = {k: v for k, v in info.items() if v is not None and not (isinstance(v, dict) and not any(x is not None for x in v.values()))}
    if installed.persona.kind == "soft_prompt":
        soft = sp.persona_soft_prompt(installed)
        info["adapter"] = {
            "num_virtual_tokens": soft.num_virtual_tokens,
            "token_dim": int(soft.embeddings.shape[1]),
            "base_model": soft.config.get("base_model_name_or_path"),
            "sha256": soft.sha256,
        }
        record_path = sp.adapter_dir(installed) / HISTORY_FILE
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            info["training"] = {k: record.get(k) for k in (
                "best_step", "heldout_loss_init", "heldout_loss_best", "n_train_replies",
                "n_heldout_replies", "seconds", "seconds_per_step", "distilled_from", "prompt_tokens_saved", "evaluation")}
    if as_json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return
    from chatbot.terminal_text import visible

    console = _stdout_console()
    for key, value in info.items():  # a persona file's escapes are shown, not obeyed
        if isinstance(value, dict):
            console.print(f"{key}:")
            for k, v in value.items():
                if v not in (None, ""):
                    console.print(visible(f"  {k}: {v}"), markup=False)
        elif value not in (None, "", []):
            console.print(visible(f"{key}: {value}"), markup=False)


# -- new ---------------------------------------------------------------------------------------------


@persona_app.command("new")
def new_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name of the new persona (lowercase, digits, - and _)."),
    soft_prompt_dir: Path | None = typer.Option(
        None, "--soft-prompt", help="Make a soft-prompt persona from this PEFT prompt-tuning adapter folder."
    ),
    description: str = typer.Option("", "--description", help="One line about the persona."),
    control_code: str = typer.Option("", "--control-code", help="The control code text (control-code personas)."),
    placement: str = typer.Option("user", "--placement", help="Where the control code goes: user or system."),
    force: bool = typer.Option(False, "--force", help="Replace your own persona of that name."),
) -> None:
    """Scaffold a persona in your data dir (edit its persona.toml afterwards)."""
    from chatbot.locations import ensure_private_dir
    from chatbot.personas import soft_prompt as sp
    from chatbot.personas.registry import user_dir
    from chatbot.personas.schema import Persona, SoftPromptRef
    from chatbot.personas.tuning import check_name, write_persona

    settings = state_of(ctx).settings
    check_name(name)
    if placement not in ("user", "system"):
        raise UsageError(f"--placement: expected user or system, got {placement!r}")
    folder = user_dir(settings.data_dir) / name
    if (folder / "persona.toml").exists() and not force:
        raise UserError(f"persona '{name}' already exists in {folder} (use --force to replace it)")
    if soft_prompt_dir is not None:
        if not soft_prompt_dir.is_dir():
            raise NotFoundError(f"--soft-prompt: no such folder: {soft_prompt_dir}")
        soft = sp.load_soft_prompt(soft_prompt_dir)  # checks config, shape, dtype, finiteness
        persona = Persona(
            name=name,
            display_name=name,
            description=description or f"Soft prompt of {soft.num_virtual_tokens} virtual tokens imported from {soft_prompt_dir}",
            kind="soft_prompt",
            soft_prompt=SoftPromptRef(base_model=""),
        )
        target = folder / "soft_prompt"
        if target.exists():
            shutil.rmtree(target)
        ensure_private_dir(target)  # the data dir's folders: 0700 whatever the umask
        shutil.copyfile(soft_prompt_dir / sp.CONFIG_FILE, target / sp.CONFIG_FILE)
        shutil.copyfile(soft_prompt_dir / sp.WEIGHTS_FILE, target / sp.WEIGHTS_FILE)
    else:
        title = name.replace("-", " ").replace("_", " ").title()
        persona = Persona(
            name=name,
            display_name=title,
            description=description or "A new persona: describe it here.",
            kind="control_code",
            control_code=control_code or f"You are {title}.",  # usable at once, but says little
            placement=placement,
        )
    path = write_persona(folder, persona)
    print(f"created {path}")
    if soft_prompt_dir is None and not control_code:
        print(f"edit its control_code there to say who {persona.title} is and how they answer", file=sys.stderr)


# -- train / distill -----------------------------------------------------------------------------------


def _train_config(virtual_tokens, steps, lr, batch_size, init, seed, heldout):
    from chatbot.personas.training import TrainConfig

    config = TrainConfig(virtual_tokens=virtual_tokens, steps=steps, lr=lr, batch_size=batch_size,
                         init=init, seed=seed, heldout=heldout)
    config.check()
    return config


class _TrainProgress:
    """One rich progress display on stderr: the training bar (step, loss, held-out loss, elapsed,
    ETA), and any other task a command adds (the teacher's replies in `distill`)."""

    def __init__(self, steps: int, label: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=_stderr_console(), transient=False,
        )
        self.steps, self.label = steps, label
        self.task = None
        self.loss = self.held = "-"
        # Without a terminal (a log file, CI) the bar is not redrawn: print a plain line instead.
        self.plain = not self.progress.console.is_terminal

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, report) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=self.steps, info="")
        if report.train_loss is not None:
            self.loss = f"{report.train_loss:.3f}"
        if report.heldout_loss is not None:
            self.held = f"{report.heldout_loss:.3f}"
        info = f"loss {self.loss}  held-out {self.held}"
        self.progress.update(self.task, completed=report.step, info=info)
        if self.plain and (report.heldout_loss is not None or report.step == report.steps):
            done = max(report.step, 1)
            eta = report.elapsed_s / done * (report.steps - report.step)
            print(f"{self.label}: step {report.step}/{report.steps} {info} elapsed {report.elapsed_s:.0f}s ETA {eta:.0f}s",
                  file=sys.stderr, flush=True)


def _finish_training(record: dict, folder: Path, note: str | None = None) -> None:
    from chatbot.personas.curve import plot

    console = _stderr_console()
    console.print(plot(record["history"]), markup=False)
    init, best = record["heldout_loss_init"], record["heldout_loss_best"]
    if best is not None and init is not None:
        console.print(f"held-out NLL {init:.3f} at init -> {best:.3f} at step {record['best_step']} (kept)", markup=False)
    if note:
        console.print(note, markup=False)
    console.print(f"{record['seconds']:.0f} s ({record['seconds_per_step']:.2f} s/step); soft prompt in {folder / 'soft_prompt'}",
                  markup=False)
    print(str(folder))


@persona_app.command("train")
def train_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The soft-prompt persona to train (created if new)."),
    data: Path | None = typer.Option(None, "--data", help="JSONL: one conversation per line {\"messages\": [...]}."),
    from_history: bool = typer.Option(False, "--from-history", help="Train on the replies you rated good (history rate)."),
    conversations: list[int] = typer.Option([], "--conversation", help="With --from-history: only these conversations."),
    replies_of: list[str] = typer.Option([], "--replies-of", help="With --from-history: liked replies of this persona too."),
    virtual_tokens: int = typer.Option(20, "--virtual-tokens", help="Length of the soft prompt."),
    steps: int = typer.Option(40, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(3e-2, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", help="Replies per step."),
    init: str = typer.Option("text", "--init", help="text (the persona description), vocab or random."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same data: same tensor."),
    heldout: float = typer.Option(0.2, "--heldout", help="Share of conversations held out to pick the best step."),
    description: str = typer.Option("", "--description", help="Description of a new persona (and the text init)."),
    output: Path | None = typer.Option(None, "--output", help="Persona folder to write (default: your data dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
) -> None:
    """Prompt tuning: train a soft prompt (model weights frozen) on a JSONL file, or on the
    replies you liked (--from-history; an existing soft prompt is continued)."""
    from chatbot.personas.tuning import soft_persona, train_into

    settings = state_of(ctx).settings
    config = _train_config(virtual_tokens, steps, lr, batch_size, init, seed, heldout)
    if from_history == (data is not None):
        raise UsageError("give --data FILE or --from-history (one of them)")
    if not from_history and (conversations or replies_of):
        raise UsageError("--conversation and --replies-of go with --from-history")
    if from_history:
        if resume:
            raise UsageError("--resume goes with --data (--from-history continues the soft prompt it finds)")
        return _train_from_history(ctx, name, config, conversations, replies_of, description, output)
    from chatbot.personas.data import read_jsonl

    read_jsonl(data)  # bad lines stop us before the model loads
    folder, existing = _soft_target(settings, name, output, f"pick a new name, or use `chatbot persona distill {name}`")
    if existing is not None:
        persona = existing.persona if not description else existing.persona.model_copy(update={"description": description})
    else:
        persona = soft_persona(name, description or f"A soft prompt trained on {data.name}.")
    loaded = _load_fp32(settings)
    with _TrainProgress(config.steps, f"training {name}") as progress:
        record = train_into(loaded, folder, persona, data, config, persona.description, resume=resume,
                            budget=settings.context_budget, on_step=progress)
    _finish_training(record, folder)


def _soft_target(settings, name: str, output: Path | None, instead: str):
    """The folder a soft prompt is trained into, and the persona already there (a soft prompt,
    or None; a control-code persona of that name is refused, saying what to do `instead`)."""
    from chatbot.personas.registry import scan, user_dir
    from chatbot.personas.tuning import check_name

    folder = output if output is not None else user_dir(settings.data_dir) / name
    check_name(folder.name)
    if folder.name != name:
        raise UsageError(f"--output: the folder name must be the persona name ('{name}')")
    existing = scan(settings.data_dir)[0].get(name)
    if existing is not None and existing.persona.kind != "soft_prompt":
        raise UserError(f"persona '{name}' is a control-code persona: {instead}")
    return folder, existing


def _train_from_history(ctx, name, config, conversation_ids, replies_of, description, output) -> None:
    from chatbot.personas import soft_prompt as sp
    from chatbot.personas.from_history import liked_replies, require_enough
    from chatbot.personas.tuning import soft_persona, train_from_history

    state = state_of(ctx)
    settings = state.settings
    folder, existing = _soft_target(settings, name, output, "train a new soft prompt on its liked replies with "
                                    f"`chatbot persona train {name}-soft --from-history --replies-of {name}`")
    names = {name, *replies_of} | ({existing.persona.distilled_from} - {""} if existing else set())
    store = state.store(create=False)
    for conversation_id in conversation_ids:
        store.conversation(conversation_id)  # a mistyped id is an error, not an empty selection
    liked = liked_replies(store, names, conversation_ids or None)
    require_enough(liked, names)
    start = None
    if existing is not None:  # continue from the soft prompt it has
        soft = sp.persona_soft_prompt(existing)
        start = soft.embeddings
        config.virtual_tokens = soft.num_virtual_tokens
        persona = existing.persona if not description else existing.persona.model_copy(update={"description": description})
    else:
        who = ", ".join(sorted(names - {name})) or name
        persona = soft_persona(name, description or f"A soft prompt trained on the replies of {who} you liked.")
    loaded = _load_fp32(settings)
    hidden = loaded.model.get_input_embeddings().weight.shape[1]
    if start is not None and start.shape[1] != hidden:
        raise UserError(f"persona '{name}' has a soft prompt for another model (width {start.shape[1]}, "
                        f"this model's is {hidden}): train a new one under another name")
    with _TrainProgress(config.steps, f"training {name} on {len(liked)} liked replies") as progress:
        record = train_from_history(loaded, folder, persona, liked, config, persona.description, start,
                                    settings.context_budget, progress)
    used = record["from_history"]
    print(f"trained on messages {used['train_message_ids']}, held out {used['heldout_message_ids']}", file=sys.stderr)
    _finish_training(record, folder)


@persona_app.command("distill")
def distill_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The control-code persona to compile into a soft prompt."),
    new_name: str | None = typer.Option(None, "--name", help="Name of the new persona (default NAME-soft)."),
    output: Path | None = typer.Option(None, "--output", help="Persona folder to write (its name is the persona's)."),
    prompts_file: Path | None = typer.Option(None, "--prompts", help="Prompts for the teacher, one per line."),
    limit: int = typer.Option(40, "--limit", help="How many prompts to use."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Length of each teacher reply."),
    virtual_tokens: int = typer.Option(20, "--virtual-tokens"),
    steps: int = typer.Option(40, "--steps"),
    lr: float = typer.Option(3e-2, "--lr"),
    batch_size: int = typer.Option(8, "--batch-size"),
    init: str = typer.Option("text", "--init", help="text (the teacher's control code), vocab or random."),
    seed: int = typer.Option(0, "--seed"),
    heldout: float = typer.Option(0.2, "--heldout"),
    resume: bool = typer.Option(False, "--resume", help="Reuse the teacher replies (and the last checkpoint, if any)."),
) -> None:
    """Context distillation: the model answers prompts under the control code (greedy), then a
    soft prompt learns to give those replies without it."""
    from chatbot.personas.prompts import DISTILL_PROMPTS
    from chatbot.personas.registry import user_dir
    from chatbot.personas.tuning import check_name, distill_into
    from chatbot.runtime import build_engine

    state = state_of(ctx)
    settings = state.settings
    config = _train_config(virtual_tokens, steps, lr, batch_size, init, seed, heldout)
    teacher = state.persona(name)
    if output is not None:
        folder = output
    else:
        folder = user_dir(settings.data_dir) / (new_name or f"{name}-soft")
    if new_name is not None and folder.name != new_name:
        raise UsageError(f"--output: the folder name must be the persona name ('{new_name}')")
    check_name(folder.name)
    if folder.name == name:
        raise UsageError("the distilled persona needs a name of its own (--name)")
    if prompts_file is not None:
        try:
            prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise NotFoundError(f"--prompts: cannot read {prompts_file}: {exc}") from exc
    else:
        prompts = list(DISTILL_PROMPTS)
    if limit < 2:
        raise UsageError("--limit: at least 2 prompts")
    prompts = prompts[:limit]
    loaded = _load_fp32(settings)
    engine = build_engine(loaded)
    with _TrainProgress(config.steps, f"distilling into {folder.name}") as progress:
        teacher_task = progress.progress.add_task(f"teacher '{name}' answering", total=len(prompts), info="")

        def on_reply(done, total, reply):
            progress.progress.update(teacher_task, completed=done)
            if progress.plain and (done % 10 == 0 or done == total):
                print(f"teacher '{name}': {done}/{total} replies", file=sys.stderr, flush=True)

        record = distill_into(loaded, engine, teacher, folder, prompts, config, max_new_tokens,
                              settings.context_budget, resume, on_reply, progress)
    from chatbot.personas.distill_report import record_evaluation, summary_line
    from chatbot.personas.registry import scan

    echo_progress("scoring the held-out replies (none / teacher text / soft prompt, attribution)...")
    evaluation = record_evaluation(loaded, folder, scan(settings.data_dir)[0], settings.context_budget)
    _finish_training(record, folder, summary_line(evaluation) if evaluation else None)


# -- eval ------------------------------------------------------------------------------------------------


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _branch_data(ctx, conversation_id: int, leaf: int | None) -> Path:
    """A stored branch's replies as a JSONL file to score (in a private temporary folder)."""
    import atexit
    import tempfile

    from chatbot.personas.from_history import branch_record
    from chatbot.personas.tuning import write_jsonl

    record = branch_record(state_of(ctx).store(create=False).active_branch(conversation_id, leaf))
    if record is None:
        raise UserError(f"conversation {conversation_id} has no reply to score on that branch")
    folder = Path(tempfile.mkdtemp(prefix="chatbot-eval-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / f"conversation-{conversation_id}.jsonl"
    write_jsonl(path, [record])
    return path


@persona_app.command("eval")
def eval_cmd(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="Persona to evaluate (or --all)."),
    data: Path | None = typer.Option(None, "--data", help="JSONL of held-out conversations (default: the persona's own)."),
    all_: bool = typer.Option(False, "--all", help="Every installed persona that has held-out replies."),
    as_json: bool = typer.Option(False, "--json", help="JSON on stdout."),
    placement: str | None = typer.Option(
        None, "--placement", help="Try the control code in another place (user or system) for this evaluation."
    ),
    conversation: int | None = typer.Option(None, "--conversation", help="Score the replies of this saved conversation."),
    leaf: int | None = typer.Option(None, "--leaf", help="With --conversation: the branch ending here (e.g. a rerun's)."),
) -> None:
    """Held-out reply NLL under no persona / the control code / the soft prompt, and attribution
    accuracy over all installed personas."""
    from chatbot.personas.evaluate import eval_examples, evaluate, perplexity
    from chatbot.personas.registry import scan

    settings = state_of(ctx).settings
    if (name is None) == (not all_):
        raise UsageError("give a persona NAME or --all (not both)")
    if all_ and data is not None:
        raise UsageError("--data goes with one persona NAME, not --all")
    if conversation is not None or leaf is not None:
        if conversation is None or all_ or data is not None:
            raise UsageError("--conversation (and --leaf) go with one persona NAME, without --data")
        data = _branch_data(ctx, conversation, leaf)
    everyone, problems = scan(settings.data_dir)
    for problem in problems:
        print(f"chatbot: warning: skipped {problem}", file=sys.stderr)
    if all_:
        targets = [p for p in everyone.values() if eval_examples(p) is not None]
    else:
        targets = [state_of(ctx).persona(name)]
    if placement is not None:
        if placement not in ("user", "system") or all_:
            raise UsageError("--placement: user or system, with one persona NAME")
        import dataclasses

        moved = targets[0].persona.model_copy(update={"placement": placement})
        targets = [dataclasses.replace(targets[0], persona=moved)]
        everyone[moved.name] = targets[0]
    loaded = _load_fp32(settings)
    results = []
    for target in targets:
        echo_progress(f"evaluating '{target.persona.name}'...")
        results.append(evaluate(target, everyone, loaded, data, settings.context_budget))
    rows = [r.as_dict() for r in results]
    if all_:
        total = sum(r.n_replies for r in results)
        correct = sum(round((r.attribution_accuracy or 0) * r.n_replies) for r in results)
        summary = {"personas": rows, "n_replies": total,
                   "attribution_accuracy": round(correct / total, 4) if total else None}
    if as_json:
        print(json.dumps(summary if all_ else rows[0], indent=1))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("persona", "replies", "NLL none", "NLL control code", "NLL soft prompt", "ppl best", "attribution", "attributed to"):
        table.add_column(column)
    for r in results:
        nlls = [v for v in (r.nll_control_code, r.nll_soft_prompt) if v is not None]
        best = perplexity(min(nlls)) if nlls else perplexity(r.nll_none)
        top = ", ".join(f"{k} {v}" for k, v in list(r.attributed_to.items())[:3])
        table.add_row(r.persona, str(r.n_replies), _fmt(r.nll_none), _fmt(r.nll_control_code), _fmt(r.nll_soft_prompt),
                      _fmt(best, 2), "-" if r.attribution_accuracy is None else f"{r.attribution_accuracy:.0%}", top)
    console = _stdout_console()
    console.print(table)
    if all_:
        acc = summary["attribution_accuracy"]
        console.print(f"attribution accuracy over {summary['n_replies']} replies: {'-' if acc is None else f'{acc:.1%}'}")


# -- character cards -----------------------------------------------------------------------------------


@persona_app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A Tavern character card: V2 or V3, as .json, .png or .charx."),
    name: str | None = typer.Option(None, "--name", help="Persona name (default: from the card's name)."),
    example_tokens: int = typer.Option(300, "--example-tokens", min=0, help="Budget for the card's example dialogue."),
    force: bool = typer.Option(False, "--force", help="Replace your own persona of that name."),
) -> None:
    """Import a character card as a control-code persona (its lorebook, greetings and the original
    card kept in the persona folder). {{user}} becomes CHATBOT_USER_NAME."""
    from chatbot.cli.context_cmd import _tokenizer
    from chatbot.memory.tokens import content_encoder
    from chatbot.personas.cards.containers import read_card_file
    from chatbot.personas.cards.importer import import_card, name_for, validate_card
    from chatbot.personas.registry import user_dir
    from chatbot.personas.tuning import check_name

    state = state_of(ctx)
    settings = state.settings
    if name is not None:
        check_name(name)
    raw = read_card_file(file)  # a bad card is refused before the tokenizer loads
    card = validate_card(raw, str(file))
    name = name or name_for(card)
    encode = content_encoder(_tokenizer(state)[0])
    mapped, path = import_card(raw, card, str(file), user_dir(settings.data_dir) / name, settings.user_name,
                               lambda text: len(encode(text)), example_tokens, force)
    for note in mapped.notes:
        print(f"chatbot: note: {note}", file=sys.stderr)
    persona = mapped.persona
    tokens = len(encode(persona.control_code)) + len(encode(persona.post_history))
    share = tokens / settings.context_budget
    print(f"chatbot: note: the card's text takes {tokens} tokens of every prompt ({share:.0%} of the context budget "
          f"of {settings.context_budget}){'; `persona distill` compiles it into a soft prompt' if share > 0.25 else ''}",
          file=sys.stderr)
    extras = [f"{len(mapped.persona.first_messages)} opening message(s)"]
    if mapped.lorebook is not None:
        extras.append(f"a lorebook of {len(mapped.lorebook.entries)} entries")
    print(f"imported '{mapped.persona.title}' as persona '{name}' ({', '.join(extras)})", file=sys.stderr)
    print(str(path))


@persona_app.command("export")
def export_cmd(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Persona name."),
    fmt: str = typer.Option("card", "--format", help="card: a Tavern character card V2 (JSON)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Write a persona as a character card V2 (JSON): an imported card's own fields, else the
    control code as its system prompt."""
    from chatbot.cli.history import write_private
    from chatbot.personas.cards.importer import export_card

    if fmt != "card":
        raise UsageError(f"--format: only 'card' is supported, not {fmt!r}")
    text = json.dumps(export_card(state_of(ctx).persona(name)), indent=1, ensure_ascii=False) + "\n"
    if output is None:  # exact into a pipe; on a terminal, escapes shown, never obeyed
        from chatbot.terminal_text import safe_json

        sys.stdout.write(text if not sys.stdout.isatty() else safe_json(text))
    else:
        write_private(output, text)
        print(f"exported persona '{name}' to {output}", file=sys.stderr)
