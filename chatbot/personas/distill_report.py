"""What `persona distill` writes into the new soft prompt's training card (`training.json`, key
`evaluation`): on the held-out teacher replies, the reply NLL under no persona, under the
teacher's own text (a card: its control code and post-history note, as recorded) and under the
soft prompt; attribution among the installed personas; and what the soft prompt saves in every
prompt. The teacher is left out of the attribution candidates: it speaks with the very voice the
soft prompt learned, so with it the replies split between the two (docs/personas.md)."""

from __future__ import annotations

import json
from pathlib import Path

from chatbot.errors import UserError
from chatbot.personas import soft_prompt as sp
from chatbot.personas.evaluate import evaluate
from chatbot.personas.registry import PERSONA_FILE, InstalledPersona, load_persona_file
from chatbot.personas.training import HISTORY_FILE


def _round(value, digits=4):
    return None if value is None else round(value, digits)


def record_evaluation(loaded, folder: Path, everyone: dict[str, InstalledPersona], budget: int = 2048) -> dict | None:
    """Score the distilled persona in `folder` and add the figures to its training card; None
    (and nothing added) when no replies were held out."""
    student = InstalledPersona(load_persona_file(folder / PERSONA_FILE), "user", folder)
    teacher = student.persona.distilled_from
    candidates = {name: p for name, p in everyone.items() if name != teacher}
    candidates[student.persona.name] = student
    try:
        result = evaluate(student, candidates, loaded, budget=budget)
    except UserError:  # --heldout 0: nothing to score
        return None
    path = sp.adapter_dir(student) / HISTORY_FILE
    record = json.loads(path.read_text())
    virtual = int(record["config"]["virtual_tokens"])
    saved = record.get("prompt_tokens_saved")
    card_tokens = None if saved is None else saved + virtual  # the teacher's text in a prompt
    text, soft = result.nll_control_code, result.nll_soft_prompt
    evaluation = {
        "n_heldout_replies": result.n_replies,
        "nll_none": _round(result.nll_none),
        "nll_teacher_text": _round(text),
        "nll_soft_prompt": _round(soft),
        # > 0: the soft prompt's NLL is that much above the text's (the target: at most 0.05)
        "soft_vs_text": None if not text or soft is None else round(soft / text - 1, 4),
        "attribution_accuracy": _round(result.attribution_accuracy),
        "attributed_to": result.attributed_to,
        "attribution_candidates": result.candidates,
        "attribution_leaves_out": teacher or None,
        "teacher_prompt_tokens": card_tokens,
        "soft_prompt_tokens": virtual,
        "prompt_tokens_saved": saved,
        "fewer_prompt_tokens": None if not card_tokens else round(1 - virtual / card_tokens, 4),
    }
    record["evaluation"] = evaluation
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return evaluation


def summary_line(evaluation: dict) -> str:
    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    parts = [f"held-out NLL ({evaluation['n_heldout_replies']} replies): none {fmt(evaluation['nll_none'])}, "
             f"teacher text {fmt(evaluation['nll_teacher_text'])}, soft prompt {fmt(evaluation['nll_soft_prompt'])}"]
    if evaluation["soft_vs_text"] is not None:
        parts.append(f"soft prompt {evaluation['soft_vs_text']:+.1%} against the text")
    if evaluation["attribution_accuracy"] is not None:
        parts.append(f"attribution {evaluation['attribution_accuracy']:.0%} of {len(evaluation['attribution_candidates'])} personas")
    if evaluation["fewer_prompt_tokens"] is not None:
        parts.append(f"{evaluation['soft_prompt_tokens']} prompt tokens instead of {evaluation['teacher_prompt_tokens']} "
                     f"({evaluation['fewer_prompt_tokens']:.1%} fewer)")
    return "; ".join(parts)
