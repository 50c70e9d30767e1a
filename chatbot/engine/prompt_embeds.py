"""Prompt embeddings for a server that takes them (vLLM's `prompt_embeds` on /v1/completions): the
prompt's token embeddings looked up in the local model's own embedding table (only that tensor is
read, from the converted safetensors), a soft prompt prepended, sent as base64 of a `torch.save`d
`[seq, hidden]` tensor, as vLLM expects.

This is the one place the project WRITES a torch.save file (for the server to read); it never
reads one.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import torch

from chatbot.engine.decoding import Prefix
from chatbot.errors import UserError

EMBEDDING_KEYS = ("model.embed_tokens.weight", "embed_tokens.weight", "transformer.wte.weight")


class PromptEmbedder:
    def __init__(self, table: torch.Tensor):
        self.table = table  # [vocab, hidden]

    @classmethod
    def from_folder(cls, folder: Path) -> PromptEmbedder:
        from safetensors import safe_open

        for path in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(path), "pt") as handle:
                for key in EMBEDDING_KEYS:
                    if key in handle.keys():
                        return cls(handle.get_tensor(key))
        raise UserError(f"no token embedding table in {folder}: prompt embeddings need the model's safetensors")

    def embeddings(self, prompt_ids: list[int], prefix: Prefix | None) -> torch.Tensor:
        tokens = self.table[torch.tensor(prompt_ids, dtype=torch.long)]
        if prefix is not None:
            tokens = torch.cat([prefix.embeddings.to(tokens.dtype), tokens])
        return tokens.contiguous()

    def encode(self, prompt_ids: list[int], prefix: Prefix | None) -> str:
        buffer = io.BytesIO()
        torch.save(self.embeddings(prompt_ids, prefix), buffer)
        return base64.b64encode(buffer.getvalue()).decode("ascii")
