"""The token-by-token decode loop over a transformers causal LM with a KV cache.

One `Engine` serves one conversation view at a time. It keeps the KV cache of its last sequence
(optional soft-prompt prefix + prompt + generated tokens) and, for the next prompt, reuses the
longest common token prefix, so turn N only prefills what is new since turn N-1.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from chatbot.engine.detokenize import IncrementalDetokenizer
from chatbot.engine.sampling import SamplingParams, next_token
from chatbot.engine.stopping import StopStringFilter

if TYPE_CHECKING:
    from transformers import DynamicCache


@dataclass(frozen=True)
class Prefix:
    """Input embeddings placed before the first token (a soft prompt). `key` identifies them, so
    their KV is computed once and reused."""

    key: str
    embeddings: torch.Tensor  # [num_virtual_tokens, hidden]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_tokens: int = 0
    new_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    prefix_tokens: int = 0
    stop_reason: str = ""  # eos | stop_string | max_new_tokens | cancelled | context_full

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "new_tokens": self.new_tokens,
            "ttft_ms": round(self.ttft_ms, 2),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "prefix_tokens": self.prefix_tokens,
            "stop_reason": self.stop_reason,
        }


@dataclass(kw_only=True)
class TextStream:
    """Text that arrives in deltas: iterate to receive them; `text` holds all received so far."""

    _deltas: Iterator[str]
    text: str = ""

    def __iter__(self) -> Iterator[str]:
        for delta in self._deltas:
            self.text += delta
            yield delta

    def run(self) -> str:
        """Consume to the end without streaming; return the whole text."""
        for _ in self:
            pass
        return self.text


@dataclass(kw_only=True)
class Generation(TextStream):
    """A reply being decoded: `text` and `stats` are final once iteration ends."""

    stats: GenerationStats
    token_ids: list[int] = field(default_factory=list)


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class StreamingEngine:
    """What a session needs of an engine: `generate` returns a `Generation` that decodes lazily,
    as it is iterated (`_decode` yields its text deltas)."""

    name = "engine"
    max_context: int

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        prefix: Prefix | None = None,
        cancel: threading.Event | None = None,
        reuse: bool = True,
    ) -> Generation:
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        stats = GenerationStats(prompt_tokens=len(prompt_ids))
        generation = Generation(_deltas=iter(()), stats=stats)
        generation._deltas = self._decode(generation, list(prompt_ids), params, prefix, cancel, reuse)
        return generation

    def reset(self) -> None:
        """Forget any kept KV cache (the next call prefills everything)."""

    def close(self) -> None:
        """Let go of what the engine holds outside this process (the remote engine's child)."""

    def _decode(self, gen, prompt_ids, params, prefix, cancel, reuse) -> Iterator[str]:
        raise NotImplementedError


class Engine(StreamingEngine):
    """Prefill + one token per step, with prefix reuse across calls."""

    name = "reference"

    def __init__(self, model, tokenizer, eos_token_ids: set[int], max_context: int, prefix_slots: int = 4):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.max_context = max_context
        self._lock = threading.Lock()
        self._cache: DynamicCache | None = None
        self._cached_ids: list[int] = []  # tokens (after the prefix) whose KV is in _cache
        self._prefix_key: str | None = None
        self._prefix_caches: OrderedDict[str, DynamicCache] = OrderedDict()
        self._prefix_slots = prefix_slots

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self) -> None:
        """Forget the kept KV cache (the next call prefills everything)."""
        self._cache, self._cached_ids, self._prefix_key = None, [], None

    def next_token_logits(self, prompt_ids: list[int], prefix: Prefix | None = None, reuse: bool = True) -> torch.Tensor:
        """The logits for the token after `prompt_ids` (1-D, float32), through the same cache and
        prefix reuse as `generate`."""
        with self._lock, torch.inference_mode():
            return self._prefill(list(prompt_ids), prefix, reuse, GenerationStats())[0, -1].float()

    # -- internals ------------------------------------------------------------------------------

    def _decode(self, gen, prompt_ids, params, prefix, cancel, reuse) -> Iterator[str]:
        with self._lock, torch.inference_mode():
            stats = gen.stats
            started = time.perf_counter()
            logits = self._prefill(prompt_ids, prefix, reuse, stats)
            generator = None
            if not params.greedy:
                generator = torch.Generator(device="cpu")
                generator.manual_seed(params.seed if params.seed is not None else torch.seed())
            detok = IncrementalDetokenizer(self.tokenizer)
            stops = StopStringFilter(params.stop)
            room = self.max_context - stats.prefix_tokens - len(prompt_ids)
            budget = min(params.max_new_tokens, max(room, 0))
            first_at = last_at = started
            stats.stop_reason = "max_new_tokens" if budget == params.max_new_tokens else "context_full"
            while gen.stats.new_tokens < budget:
                if cancel is not None and cancel.is_set():
                    stats.stop_reason = "cancelled"
                    break
                token = next_token(logits[0, -1], params, generator, gen.token_ids)
                last_at = time.perf_counter()
                if stats.new_tokens == 0:
                    first_at = last_at
                    stats.ttft_ms = (first_at - started) * 1000
                if token in self.eos_token_ids:
                    stats.stop_reason = "eos"
                    break
                gen.token_ids.append(token)
                stats.new_tokens += 1
                text = stops.feed(detok.push(token))
                if text:
                    yield text
                if stops.stopped:
                    stats.stop_reason = "stop_string"
                    break
                if stats.new_tokens < budget:
                    logits = self._step(token)
            if not stops.stopped:
                tail = stops.feed(detok.flush())
                if stops.stopped:
                    stats.stop_reason = "stop_string"
                else:
                    tail += stops.flush()
                if tail:
                    yield tail
            if stats.new_tokens > 1 and last_at > first_at:
                stats.tokens_per_s = (stats.new_tokens - 1) / (last_at - first_at)

    def _prefill(self, prompt_ids: list[int], prefix: Prefix | None, reuse: bool, stats) -> torch.Tensor:
        key = prefix.key if prefix is not None else None
        if not reuse or self._cache is None or key != self._prefix_key:
            self._cache = self._fresh_cache(prefix)
            self._cached_ids = []
            self._prefix_key = key
        stats.prefix_tokens = 0 if prefix is None else int(prefix.embeddings.shape[0])
        # Keep at least one prompt token to feed: its logits choose the first new token.
        common = min(_common_prefix_length(self._cached_ids, prompt_ids), len(prompt_ids) - 1)
        surplus = len(self._cached_ids) - common
        if surplus > 0:
            self._cache.crop(-surplus)
        stats.reused_tokens = common
        self._cached_ids = self._cached_ids[:common]
        try:
            logits = self._forward(prompt_ids[common:])
        except BaseException:
            self.reset()
            raise
        return logits

    def _step(self, token: int) -> torch.Tensor:
        try:
            return self._forward([token])
        except BaseException:
            self.reset()
            raise

    def _forward(self, ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=input_ids, cache=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.cache
        self._cached_ids.extend(ids)
        return out.logits

    def _fresh_cache(self, prefix: Prefix | None) -> DynamicCache:
        from transformers import DynamicCache  # here: the fast path never needs transformers

        if prefix is None:
            return DynamicCache(config=self.model.config)
        cached = self._prefix_caches.get(prefix.key)
        if cached is None:
            embeds = prefix.embeddings.to(device=self.device, dtype=self.model.dtype).unsqueeze(0)
            out = self.model(inputs_embeds=embeds, cache=DynamicCache(config=self.model.config), use_cache=True)
            cached = out.cache
            self._prefix_caches[prefix.key] = cached
            while len(self._prefix_caches) > self._prefix_slots:
                self._prefix_caches.popitem(last=False)
        self._prefix_caches.move_to_end(prefix.key)
        return _copy_cache(cached, self.model.config)


def _copy_cache(cache: DynamicCache, config) -> DynamicCache:
    from transformers import DynamicCache

    layers = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=layers, config=config)
