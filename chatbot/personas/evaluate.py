"""Persona evaluation: mean reply NLL of held-out replies under no persona, a control code and a
soft prompt, and attribution accuracy (CTRL's source attribution: for each reply, the installed
persona under which it is most likely).

Held-out replies of a persona: for a trained soft prompt, the held-out split of its training data
(recorded in `soft_prompt/training.json`); for a control-code persona, its hand-written
`samples.jsonl`; or any JSONL file given with `--data`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chatbot.errors import UserError
from chatbot.personas import soft_prompt as sp
from chatbot.personas.data import Encoder, Example, examples_of, load_examples, read_jsonl
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.schema import Persona
from chatbot.personas.scoring import mean_nll
from chatbot.personas.training import HISTORY_FILE

SAMPLES_FILE = "samples.jsonl"
NO_PERSONA = Persona(name="none", description="no persona: the model's own chat template")


@dataclass(frozen=True)
class Condition:
    """What a persona puts in front of a reply: a rendering persona and an optional soft prompt."""

    name: str
    persona: Persona
    soft: torch.Tensor | None = None


@dataclass
class EvalResult:
    persona: str
    kind: str
    n_replies: int
    data: str
    nll_none: float
    nll_control_code: float | None
    nll_soft_prompt: float | None
    attribution_accuracy: float | None
    attributed_to: dict[str, int] = field(default_factory=dict)
    candidates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        for key in ("nll_none", "nll_control_code", "nll_soft_prompt", "attribution_accuracy"):
            if out[key] is not None:
                out[key] = round(out[key], 4)
        return out


def eval_examples(installed: InstalledPersona) -> tuple[list[Example], str] | None:
    """The persona's own held-out replies, or None when it has none."""
    folder = installed.folder
    if installed.persona.kind == "soft_prompt":
        try:
            record_path = sp.adapter_dir(installed) / HISTORY_FILE
            record = json.loads(record_path.read_text())
            data = folder / record["data_file"]
            held = set(record["heldout_lines"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not held or not data.is_file():
            return None
        examples = [e for e in examples_of(read_jsonl(data)) if e.line in held]
        return examples, f"{data} (held-out lines)"
    samples = folder / SAMPLES_FILE
    if samples.is_file():
        return load_examples(samples), str(samples)
    return None


def condition_of(installed: InstalledPersona, loaded) -> Condition:
    persona = installed.persona
    if persona.kind == "soft_prompt":
        prefix = sp.prefix_for(installed, loaded)
        return Condition(persona.name, persona.model_copy(update={"control_code": ""}), prefix.embeddings)
    return Condition(persona.name, persona)


class Scorer:
    """Per-reply mean NLLs of a list of examples under conditions, cached per condition."""

    def __init__(self, loaded, examples: list[Example], budget: int = 2048, batch_size: int = 8):
        self.loaded = loaded
        self.examples = examples
        self.encoder = Encoder(loaded.tokenizer, budget)
        self.batch_size = batch_size
        self.pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        self._cache: dict[str, tuple[float, list[float]]] = {}

    def score(self, condition: Condition) -> tuple[float, list[float]]:
        if condition.name not in self._cache:
            reserved = 0 if condition.soft is None else int(condition.soft.shape[0])
            items = [self.encoder.encode(condition.persona, e, reserved) for e in self.examples]
            soft = None if condition.soft is None else condition.soft.float()
            self._cache[condition.name] = mean_nll(self.loaded.model, items, soft, self.batch_size, self.pad_id)
        return self._cache[condition.name]


def teacher_condition(installed: InstalledPersona, everyone: dict[str, InstalledPersona]) -> Condition | None:
    """The control code a distilled soft prompt was compiled from: as recorded by `persona distill`
    in its training record (so the comparison holds when the teacher is not installed, or was
    edited since), else the installed teacher persona."""
    persona = installed.persona
    try:
        record = json.loads((sp.adapter_dir(installed) / HISTORY_FILE).read_text())
        code = record.get("teacher_control_code")
        if code:  # ':' cannot occur in a persona name, so this never meets another condition's
            teacher = Persona(name="teacher", control_code=code, placement=record.get("teacher_placement", "user"),
                              post_history=record.get("teacher_post_history") or "")
            return Condition(f"{persona.distilled_from or persona.name}:teacher", teacher)
    except (OSError, ValueError, AttributeError, UserError):  # no record, or not one of ours
        pass
    installed_teacher = everyone.get(persona.distilled_from) if persona.distilled_from else None
    if installed_teacher is not None and installed_teacher.persona.control_code:
        return Condition(installed_teacher.persona.name, installed_teacher.persona)
    return None


def evaluate(
    installed: InstalledPersona,
    everyone: dict[str, InstalledPersona],
    loaded,
    data: Path | None = None,
    budget: int = 2048,
    progress=None,
) -> EvalResult:
    if data is not None:
        examples, source = load_examples(data), str(data)
    else:
        found = eval_examples(installed)
        if found is None:
            raise UserError(
                f"persona '{installed.persona.name}' has no held-out replies of its own "
                f"(no {SAMPLES_FILE} or training record): pass --data FILE.jsonl"
            )
        examples, source = found
    if not examples:
        raise UserError(f"no replies to evaluate in {source}")
    scorer = Scorer(loaded, examples, budget)
    persona = installed.persona
    nll_none = scorer.score(Condition("__none__", NO_PERSONA))[0]
    nll_cc = nll_soft = None
    if persona.kind == "control_code" and persona.control_code:
        nll_cc = scorer.score(condition_of(installed, loaded))[0]
    if persona.kind == "soft_prompt":
        nll_soft = scorer.score(condition_of(installed, loaded))[0]
        teacher = teacher_condition(installed, everyone)
        if teacher is not None:
            nll_cc = scorer.score(teacher)[0]
    # Attribution: each reply goes to the installed persona that makes it most likely.
    candidates: list[InstalledPersona] = []
    for other in everyone.values():
        try:
            condition = condition_of(other, loaded)
        except UserError:
            continue  # a soft prompt for another model cannot compete
        if progress is not None:
            progress(f"scoring under '{other.persona.name}'")
        scorer.score(condition)
        candidates.append(other)
    per_candidate = {c.persona.name: scorer.score(condition_of(c, loaded))[1] for c in candidates}
    attributed: dict[str, int] = {}
    correct = 0
    for i in range(len(examples)):
        best = min(per_candidate, key=lambda name: per_candidate[name][i])
        attributed[best] = attributed.get(best, 0) + 1
        correct += best == persona.name
    accuracy = correct / len(examples) if candidates else None
    return EvalResult(
        persona=persona.name,
        kind=persona.kind,
        n_replies=len(examples),
        data=source,
        nll_none=nll_none,
        nll_control_code=nll_cc,
        nll_soft_prompt=nll_soft,
        attribution_accuracy=accuracy,
        attributed_to=dict(sorted(attributed.items(), key=lambda kv: -kv[1])),
        candidates=sorted(per_candidate),
    )


def perplexity(nll: float | None) -> float | None:
    return None if nll is None else math.exp(nll)
