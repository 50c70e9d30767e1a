"""Prompt tuning: learn `num_virtual_tokens` input embeddings that make a frozen model produce the
replies of a data set.

Only the soft prompt is a parameter (the model's weights have `requires_grad=False` and are never
handed to the optimizer); the loss is the NLL of the assistant reply tokens only, with prompts
rendered as inference renders them. A held-out split is scored at the start and every
`eval_every` steps, and the soft prompt with the best held-out loss is the one kept: small data
overfits within tens of steps. Batches are drawn from (seed, step) alone and checkpoints hold the
optimizer state, so `resume` continues to the very tensor an uninterrupted run would give.

Checkpoints and the result are safetensors + JSON; nothing is pickled.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from chatbot.errors import UserError
from chatbot.personas.data import Encoded
from chatbot.personas.scoring import mean_nll, reply_nll

HISTORY_FILE = "training.json"
CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"

Init = Literal["text", "vocab", "random"]


@dataclass
class TrainConfig:
    virtual_tokens: int = 20
    steps: int = 40
    lr: float = 3e-2
    batch_size: int = 8
    init: Init = "text"
    seed: int = 0
    heldout: float = 0.2
    eval_every: int = 5
    checkpoint_every: int = 5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    def check(self) -> None:
        from chatbot.errors import UsageError

        for name in ("virtual_tokens", "steps", "batch_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')}: must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError("--lr: must be a positive number")
        if not 0 <= self.heldout < 1:
            raise UsageError("--heldout: must be in [0, 1)")
        if self.init not in ("text", "vocab", "random"):
            raise UsageError(f"--init: expected text, vocab or random, got {self.init!r}")


@dataclass
class StepReport:
    step: int
    steps: int
    train_loss: float | None
    heldout_loss: float | None
    elapsed_s: float


@dataclass
class TrainResult:
    embeddings: torch.Tensor  # the best held-out checkpoint (or the last, without a held-out split)
    best_step: int
    best_heldout: float | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps_run: int = 0


# -- initialisation -------------------------------------------------------------------------------


def initial_embeddings(model, tokenizer, n: int, init: Init, text: str, seed: int) -> torch.Tensor:
    """`text`: the embeddings of `text`'s tokens, repeated to fill n rows (PEFT's TEXT init);
    `vocab`: embeddings of n tokens drawn from the vocabulary; `random`: normal noise at the scale
    of the embedding table."""
    table = model.get_input_embeddings().weight.detach().float()
    generator = torch.Generator().manual_seed(seed)
    if init == "text":
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
        if not ids:
            raise UserError("--init text needs a persona description (or control code) to start from; use --init vocab")
        ids = (ids * math.ceil(n / len(ids)))[:n]
        return table[torch.tensor(ids)].clone()
    if init == "vocab":
        # Ordinary tokens only: skip the special ones at the start of most vocabularies.
        low = min(len(getattr(tokenizer, "all_special_ids", [])) + 1, table.shape[0] - 1)
        ids = torch.randint(low, table.shape[0], (n,), generator=generator)
        return table[ids].clone()
    std = float(table.std())
    return torch.randn((n, table.shape[1]), generator=generator) * std


# -- batches ------------------------------------------------------------------------------------


def batch_indices(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The examples of training step `step` (1-based): epochs of a seeded shuffle, so the batch
    depends on (seed, step) only."""
    size = min(batch_size, n_items)
    first = (step - 1) * size
    out: list[int] = []
    for position in range(first, first + size):
        epoch, offset = divmod(position, n_items)
        order = list(range(n_items))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        out.append(order[offset])
    return out


# -- checkpoints ----------------------------------------------------------------------------------


def _save_checkpoint(folder: Path, state: dict, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from chatbot.locations import ensure_private_dir

    ensure_private_dir(folder)  # in the data dir: 0700 whatever the umask
    tmp = folder / (CHECKPOINT_TENSORS + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(folder / CHECKPOINT_TENSORS)
    tmp_state = folder / (CHECKPOINT_STATE + ".tmp")
    tmp_state.write_text(json.dumps(state, indent=1))
    tmp_state.replace(folder / CHECKPOINT_STATE)


def load_checkpoint(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    state_path, tensor_path = folder / CHECKPOINT_STATE, folder / CHECKPOINT_TENSORS
    if not state_path.is_file() or not tensor_path.is_file():
        raise UserError(f"--resume: no checkpoint in {folder}")
    try:
        return json.loads(state_path.read_text()), load_file(str(tensor_path))
    except Exception as exc:
        raise UserError(f"--resume: the checkpoint in {folder} is damaged: {exc}") from exc


def clear_checkpoint(folder: Path) -> None:
    for name in (CHECKPOINT_STATE, CHECKPOINT_TENSORS):
        (folder / name).unlink(missing_ok=True)


# -- the loop -------------------------------------------------------------------------------------


def train_soft_prompt(
    model,
    train_items: list[Encoded],
    heldout_items: list[Encoded],
    init: torch.Tensor,
    config: TrainConfig,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    identity: dict | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    pad_id: int = 0,
) -> TrainResult:
    """Train and return the best soft prompt. `identity` (data hash, settings) is stored in each
    checkpoint and must match on resume."""
    if not train_items:
        raise UserError("no training examples")
    identity = identity or {}
    model.eval()  # no dropout: the same seed gives the same tensor
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    soft = torch.nn.Parameter(init.detach().clone().float())
    optimizer = torch.optim.AdamW([soft], lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict] = []
    start_step, elapsed_before = 0, 0.0
    best, best_step, best_loss = soft.detach().clone(), 0, None

    if resume:
        if checkpoint_dir is None:
            raise UserError("--resume: no checkpoint folder")
        state, tensors = load_checkpoint(checkpoint_dir)
        if state.get("identity") != identity:
            changed = sorted(k for k in set(identity) | set(state.get("identity", {}))
                             if identity.get(k) != state.get("identity", {}).get(k))
            raise UserError(f"--resume: the checkpoint was made with different {', '.join(changed)}; start again without --resume")
        with torch.no_grad():
            soft.copy_(tensors["soft"])
        if state["adam_step"] > 0:
            optimizer.state[soft] = {
                "step": torch.tensor(float(state["adam_step"])),
                "exp_avg": tensors["exp_avg"].clone(),
                "exp_avg_sq": tensors["exp_avg_sq"].clone(),
            }
        best, best_step, best_loss = tensors["best"].clone(), state["best_step"], state["best_loss"]
        history, start_step, elapsed_before = state["history"], state["step"], state["elapsed_s"]
        if start_step >= config.steps:
            raise UserError(f"--resume: the checkpoint is already at step {start_step} of {config.steps}; pass more --steps")

    started = time.perf_counter() - elapsed_before

    def heldout_loss() -> float | None:
        if not heldout_items:
            return None
        return mean_nll(model, heldout_items, soft.detach(), config.batch_size, pad_id)[0]

    def report(step: int, train_loss: float | None, held: float | None) -> None:
        entry = {"step": step, "train_loss": train_loss, "heldout_loss": held,
                 "elapsed_s": round(time.perf_counter() - started, 3)}
        history.append(entry)
        if on_step is not None:
            on_step(StepReport(step, config.steps, train_loss, held, entry["elapsed_s"]))

    if start_step == 0:
        held = heldout_loss()
        best_loss = held
        report(0, None, held)

    for step in range(start_step + 1, config.steps + 1):
        batch = [train_items[i] for i in batch_indices(len(train_items), config.batch_size, step, config.seed)]
        optimizer.zero_grad(set_to_none=True)
        sums, counts = reply_nll(model, batch, soft, pad_id)
        loss = sums.sum() / counts.sum().clamp(min=1)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_([soft], config.max_grad_norm)
        optimizer.step()
        if not torch.isfinite(soft).all():
            raise UserError(f"training diverged at step {step} (NaN or inf in the soft prompt); try a lower --lr")
        held = heldout_loss() if (step % config.eval_every == 0 or step == config.steps) else None
        if held is not None and (best_loss is None or held < best_loss):
            best, best_step, best_loss = soft.detach().clone(), step, held
        if not heldout_items:
            best, best_step = soft.detach().clone(), step
        report(step, float(loss.detach()), held)
        if checkpoint_dir is not None and (step % config.checkpoint_every == 0) and step < config.steps:
            adam = optimizer.state.get(soft, {})
            tensors = {"soft": soft, "best": best}
            if adam:
                tensors |= {"exp_avg": adam["exp_avg"], "exp_avg_sq": adam["exp_avg_sq"]}
            _save_checkpoint(checkpoint_dir, {
                "step": step, "adam_step": int(adam["step"]) if adam else 0, "best_step": best_step,
                "best_loss": best_loss, "history": history, "identity": identity,
                "elapsed_s": time.perf_counter() - started, "config": asdict(config),
            }, tensors)

    return TrainResult(best.detach().clone(), best_step, best_loss, history,
                       time.perf_counter() - started, config.steps - start_step)
