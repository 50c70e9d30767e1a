"""Making soft-prompt personas: `persona train` (prompt tuning on a JSONL file) and `persona
distill` (context distillation of a control-code persona). The CLI is a thin layer over these."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UsageError, UserError
from chatbot.locations import ensure_private_dir, write_private_text
from chatbot.memory.context import ContextBuilder
from chatbot.personas import soft_prompt as sp
from chatbot.personas.data import Encoder, Example, examples_of, file_digest, read_jsonl, split_lines
from chatbot.personas.registry import PERSONA_FILE, InstalledPersona
from chatbot.personas.schema import Persona, SoftPromptRef
from chatbot.personas.training import (
    HISTORY_FILE,
    StepReport,
    TrainConfig,
    clear_checkpoint,
    initial_embeddings,
    train_soft_prompt,
)

DATA_FILE = "data.jsonl"
CHECKPOINT_DIR = ".checkpoint"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


# -- persona.toml writing -------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):  # strings only (first_messages): a JSON array is a TOML array
        return "[" + ", ".join(json.dumps(str(v), ensure_ascii=False) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def persona_toml(persona: Persona) -> str:
    data = persona.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("name", persona.name)
    data.setdefault("kind", persona.kind)
    tables = {k: data.pop(k) for k in list(data) if isinstance(data[k], dict)}
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_persona(folder: Path, persona: Persona) -> Path:
    # in the data dir: private (0700 folders, a 0600 file) whatever the umask
    return write_private_text(folder / PERSONA_FILE, persona_toml(persona))


def check_name(name: str) -> str:
    import re

    if not re.fullmatch(NAME_PATTERN, name):
        raise UsageError(f"persona name '{name}': use lowercase letters, digits, '-' and '_' (up to 64)")
    return name


# -- training ---------------------------------------------------------------------------------------


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path.resolve())


def train_into(
    loaded,
    folder: Path,
    persona: Persona,
    data_path: Path,
    config: TrainConfig,
    init_text: str,
    resume: bool = False,
    budget: int = 2048,
    on_step: Callable[[StepReport], None] | None = None,
    extra_record: dict | None = None,
    examples: list[Example] | None = None,
    init: torch.Tensor | None = None,
) -> dict:
    """Train a soft prompt on `data_path` and write the persona (persona.toml, soft_prompt/ with
    the adapter and training.json, data.jsonl) into `folder`. Returns the training record.
    `examples` (with `data_path`'s line numbers) stand for the file's own when the file cannot
    say everything (stored windows: `--from-history`); `init` continues from a soft prompt."""
    config.check()
    conversations = read_jsonl(data_path)  # every bad line is reported before anything trains
    examples = examples_of(conversations) if examples is None else examples
    train_lines, held_lines = split_lines([e.line for e in examples], config.heldout, config.seed)
    if not train_lines:
        raise UserError(f"{data_path}: no conversations left to train on after the held-out split")
    tokenizer, model = loaded.tokenizer, loaded.model
    encoder = Encoder(tokenizer, budget)
    # The soft-prompt persona renders with no control code: the soft prompt does the conditioning.
    plain = persona.model_copy(update={"control_code": ""})
    reserved = config.virtual_tokens
    train_items = [encoder.encode(plain, e, reserved) for e in examples if e.line in set(train_lines)]
    held_items = [encoder.encode(plain, e, reserved) for e in examples if e.line in set(held_lines)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    if init is None:
        init = initial_embeddings(model, tokenizer, config.virtual_tokens, config.init, init_text, config.seed)
    ensure_private_dir(folder)
    data_sha = file_digest(data_path)
    settings = asdict(config)
    settings.pop("steps")
    settings.pop("checkpoint_every")
    identity = {"data_sha256": data_sha, "model": loaded.info.name, "init_text": init_text, **settings}
    checkpoint_dir = folder / CHECKPOINT_DIR
    if not resume and (checkpoint_dir / "checkpoint.json").exists():
        clear_checkpoint(checkpoint_dir)
    result = train_soft_prompt(model, train_items, held_items, init, config, checkpoint_dir, resume,
                               identity, on_step, pad_id)

    # Keep the training data beside the persona (the held-out split refers to its lines).
    data_target = folder / DATA_FILE
    if data_path.resolve() != data_target.resolve():
        shutil.copyfile(data_path, data_target)
    adapter = folder / (persona.soft_prompt.path if persona.soft_prompt else "soft_prompt")
    config_json = sp.adapter_config(config.virtual_tokens, result.embeddings.shape[1], loaded.info.name,
                                    init_text if config.init == "text" else None, loaded)
    sha = sp.save_soft_prompt(adapter, result.embeddings, config_json)
    heldout_init = result.history[0]["heldout_loss"] if result.history else None
    record = {
        "persona": persona.name,
        "model": loaded.info.name,
        "data_file": DATA_FILE,
        "data_sha256": data_sha,
        "n_conversations": len(conversations),
        "n_train_replies": len(train_items),
        "n_heldout_replies": len(held_items),
        "train_lines": train_lines,
        "heldout_lines": held_lines,
        "config": asdict(config),
        "init_text": init_text if config.init == "text" else None,
        "best_step": result.best_step,
        "heldout_loss_init": heldout_init,
        "heldout_loss_best": result.best_heldout,
        "seconds": round(result.seconds, 1),
        "seconds_per_step": round(result.seconds / max(config.steps, 1), 2),
        "tensor_sha256": sha,
        "history": result.history,
        **(extra_record or {}),
    }
    (adapter / HISTORY_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    write_persona(folder, persona)
    clear_checkpoint(checkpoint_dir)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()
    return record


def train_from_history(
    loaded,
    folder: Path,
    persona: Persona,
    liked: list,
    config: TrainConfig,
    init_text: str,
    init=None,
    budget: int = 2048,
    on_step: Callable[[StepReport], None] | None = None,
) -> dict:
    """Train (or, from `init`, continue) a soft prompt on liked replies (`from_history.LikedReply`)
    in their stored contexts; the record says which messages trained and which were held out."""
    data_path = folder / DATA_FILE
    write_jsonl(data_path, [item.line for item in liked])
    train_lines, held_lines = split_lines([item.example.line for item in liked], config.heldout, config.seed)
    ids = {item.example.line: item.message_id for item in liked}
    extra = {"from_history": {
        "continued": init is not None,
        "train_message_ids": [ids[line] for line in train_lines],
        "heldout_message_ids": [ids[line] for line in held_lines],
        "conversation_ids": sorted({item.conversation_id for item in liked}),
    }}
    return train_into(loaded, folder, persona, data_path, config, init_text, budget=budget, on_step=on_step,
                      extra_record=extra, examples=[item.example for item in liked], init=init)


def soft_persona(name: str, description: str, base: Persona | None = None, distilled_from: str = "") -> Persona:
    return Persona(
        name=name,
        display_name=(f"{base.title} (soft prompt)" if base else name),
        description=description,
        kind="soft_prompt",
        greeting=base.greeting if base else "",
        color=base.color if base else "",
        generation=base.generation if base else Persona(name="x").generation,
        first_messages=base.first_messages if base else (),  # a card's openings still open its conversations
        soft_prompt=SoftPromptRef(),
        distilled_from=distilled_from,
    )


# -- distillation ---------------------------------------------------------------------------------


def _trim_to_sentence(text: str) -> str:
    """A reply cut by the token limit ends mid-sentence: keep it up to its last full sentence
    (unless that would leave almost nothing)."""
    import re

    text = text.strip()
    if text.endswith((".", "!", "?", '"', ")")):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    if ends and ends[-1] >= 8:
        return text[: ends[-1]]
    return text


def teacher_conversations(
    loaded,
    engine,
    teacher: Persona,
    prompts: list[str],
    max_new_tokens: int = 48,
    repetition_penalty: float = 1.15,
    budget: int = 2048,
    on_reply: Callable[[int, int, str], None] | None = None,
) -> list[dict]:
    """The teacher's greedy replies under its control code, rendered exactly as at inference."""
    out = []
    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty)
    builder = ContextBuilder(loaded.tokenizer, budget)
    for index, prompt in enumerate(prompts):
        context = builder.build(teacher, [], prompt)
        generation = engine.generate(context.prompt_ids, params.model_copy(update={"stop": context.stops}), reuse=True)
        reply = generation.run()
        if generation.stats.stop_reason == "max_new_tokens":
            reply = _trim_to_sentence(reply)
        reply = reply.strip()
        if reply:
            out.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]})
        if on_reply is not None:
            on_reply(index + 1, len(prompts), reply)
    return out


def prompt_tokens_saved(tokenizer, teacher: Persona, student: Persona, virtual_tokens: int, budget: int = 2048) -> int:
    """Prompt tokens per turn the soft prompt saves: a one-message prompt under the teacher's text
    less the same under the student, its virtual tokens counted."""
    builder = ContextBuilder(tokenizer, budget)
    probe = "Hello, who are you?"
    with_text = builder.build(teacher, [], probe).tokens
    return with_text - builder.build(student, [], probe, reserved=virtual_tokens).tokens - virtual_tokens


def write_jsonl(path: Path, conversations: list[dict]) -> None:
    ensure_private_dir(path.parent)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations), encoding="utf-8")
    tmp.replace(path)


def distill_into(
    loaded,
    engine,
    teacher: InstalledPersona,
    folder: Path,
    prompts: list[str],
    config: TrainConfig,
    max_new_tokens: int = 48,
    budget: int = 2048,
    resume: bool = False,
    on_reply: Callable[[int, int, str], None] | None = None,
    on_step: Callable[[StepReport], None] | None = None,
) -> dict:
    if teacher.persona.kind != "control_code" or not teacher.persona.control_code:
        raise UserError(f"persona '{teacher.persona.name}' has no control code to distill")
    name = check_name(folder.name)
    data_path = folder / DATA_FILE
    started = time.perf_counter()
    if resume and data_path.is_file():
        generated_s = None  # the teacher's replies from the interrupted run are reused
    else:
        conversations = teacher_conversations(loaded, engine, teacher.persona, prompts, max_new_tokens,
                                              budget=budget, on_reply=on_reply)
        if not conversations:
            raise UserError(f"the teacher '{teacher.persona.name}' gave only empty replies: nothing to distill")
        write_jsonl(data_path, conversations)
        generated_s = round(time.perf_counter() - started, 1)
    persona = soft_persona(
        name,
        f"{teacher.persona.title}, compiled into a {config.virtual_tokens}-token soft prompt by context "
        f"distillation (no control code at inference).",
        teacher.persona,
        distilled_from=teacher.persona.name,
    )
    if teacher.persona.lorebook:  # a card's world info still applies, through the memory block
        ensure_private_dir(folder)
        shutil.copyfile(teacher.folder / teacher.persona.lorebook, folder / teacher.persona.lorebook)
        persona = persona.model_copy(update={"lorebook": teacher.persona.lorebook})
    extra = {"distilled_from": teacher.persona.name, "teacher_control_code": teacher.persona.control_code,
             "teacher_placement": teacher.persona.placement, "teacher_post_history": teacher.persona.post_history,
             "teacher_seconds": generated_s, "teacher_max_new_tokens": max_new_tokens,
             "prompt_tokens_saved": prompt_tokens_saved(loaded.tokenizer, teacher.persona, persona,
                                                        config.virtual_tokens, budget)}
    # --resume with the replies but no checkpoint (a finished run): train afresh on those replies
    resume_training = resume and (folder / CHECKPOINT_DIR / "checkpoint.json").is_file()
    return train_into(loaded, folder, persona, data_path, config, teacher.persona.control_code,
                      resume=resume_training, budget=budget, on_step=on_step, extra_record=extra)

