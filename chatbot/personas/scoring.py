"""Reply likelihood under a (soft) prompt: the one piece of model math shared by training and eval.

The input of one example is `[soft prompt embeddings] + embed(prompt ids + reply ids)`, exactly the
sequence the engine decodes over (the soft prompt first, then the rendered prompt); the loss is the
next-token NLL of the reply ids only.
"""

from __future__ import annotations

import torch

from chatbot.personas.data import Encoded


def _decoder_and_head(model):
    decoder = getattr(model, model.base_model_prefix, None)
    head = model.get_output_embeddings()
    if decoder is None or head is None or decoder is model:
        return None, None
    return decoder, head


def reply_nll(
    model,
    items: list[Encoded],
    soft: torch.Tensor | None = None,
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reply NLL and reply token count per example ([B] each). Differentiable in `soft`."""
    n_virtual = 0 if soft is None else int(soft.shape[0])
    seqs = [item.prompt_ids + item.reply_ids for item in items]
    length = max(len(s) for s in seqs)
    batch = len(items)
    ids = torch.full((batch, length), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, n_virtual + length), dtype=torch.long)
    # target[b, t] = the token at position t if it is a reply token, else -100
    target = torch.full((batch, length), -100, dtype=torch.long)
    for b, (item, seq) in enumerate(zip(items, seqs)):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : n_virtual + len(seq)] = 1
        start = len(item.prompt_ids)
        target[b, start : len(seq)] = torch.tensor(item.reply_ids)
    device = next(model.parameters()).device
    ids, mask, target = ids.to(device), mask.to(device), target.to(device)
    embeds = model.get_input_embeddings()(ids)
    if soft is not None:
        prefix = soft.to(device=device, dtype=embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
        embeds = torch.cat([prefix, embeds], dim=1)
    # Position p of the full sequence predicts position p + 1. Token t sits at n_virtual + t, so it
    # is predicted by position n_virtual + t - 1: only those of reply tokens need the output head.
    rows, cols = torch.nonzero(target >= 0, as_tuple=True)
    positions = n_virtual + cols - 1
    decoder, head = _decoder_and_head(model)
    if decoder is not None:
        hidden = decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        logits = head(hidden[rows, positions]).float()
    else:
        logits = model(inputs_embeds=embeds, attention_mask=mask).logits[rows, positions].float()
    token_nll = torch.nn.functional.cross_entropy(logits, target[rows, cols], reduction="none")
    sums = torch.zeros(batch, dtype=token_nll.dtype, device=device).index_add(0, rows, token_nll)
    counts = torch.bincount(rows, minlength=batch)
    return sums, counts


def full_logits(model, ids: list[int], soft: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [len(ids), vocab] of a token sequence after an optional soft prompt (the positions of
    the soft prompt itself are left out). Used to check our path against PEFT's."""
    device = next(model.parameters()).device
    embeds = model.get_input_embeddings()(torch.tensor([ids], device=device))
    if soft is not None:
        embeds = torch.cat([soft.to(device=device, dtype=embeds.dtype).unsqueeze(0), embeds], dim=1)
    logits = model(inputs_embeds=embeds).logits[0]
    return logits[logits.shape[0] - len(ids) :]


def mean_nll(model, items: list[Encoded], soft: torch.Tensor | None = None, batch_size: int = 8, pad_id: int = 0) -> tuple[float, list[float]]:
    """Token-weighted mean reply NLL over all items, and each item's own mean, without gradients."""
    total, tokens, per_item = 0.0, 0, []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            sums, counts = reply_nll(model, items[start : start + batch_size], soft, pad_id)
            total += float(sums.sum())
            tokens += int(counts.sum())
            per_item.extend((sums / counts.clamp(min=1)).tolist())
    return (total / tokens if tokens else float("nan")), per_item
