"""FastEngine: the reference Engine's decode loop (sampling, streaming, stop strings, cancel,
stats, prefix reuse) over a FastLlama and its static KV cache.

Only the cache/forward internals differ: cropping the kept sequence moves a length pointer, a
soft-prompt prefix's KV is computed once per key and restored by a slice copy, and a step feeds one
token id through the lean forward.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path

import torch

from chatbot.engine import loading
from chatbot.engine.decoding import Engine, Prefix
from chatbot.engine.fast import loader
from chatbot.engine.fast.gguf_weights import GGUFWeights
from chatbot.engine.fast.model import FastLlama, KVCache
from chatbot.engine.fast.pages import trim_heap
from chatbot.engine.loading import LoadedModel
from chatbot.engine.threads import ThreadChoice
from chatbot.errors import UserError


# Below this many tokens a forward runs in the native kernels (where they are on): a decode step
# and the short prefills of a turn. From it on, torch's batched kernels (the dense bf16 prefill
# copies, as the torch path uses from 64 rows) are faster.
NATIVE_MAX_TOKENS = 64


class FastEngine(Engine):
    name = "fast"

    def __init__(self, model: FastLlama, tokenizer, eos_token_ids: set[int], max_context: int, prefix_slots: int = 4):
        super().__init__(model, tokenizer, eos_token_ids, max_context, prefix_slots)
        self.max_context = min(max_context, model.shape.max_seq_len)
        self._prefix_caches: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.native = None  # a NativeDecoder (chatbot.engine.native): steps and short prefills in native code
        self.step_threads = ThreadChoice()

    @property
    def kernels(self) -> str:
        """What a decode step runs on: "native-<isa>" or "torch"."""
        return f"native-{self.native.isa}" if self.native is not None else "torch"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _run(self, x: torch.Tensor, logits: str = "last") -> torch.Tensor | None:
        """The forward over token ids or input embeddings: natively where the kernels take it (a
        decode step or a short prefill), else through torch (a long prefill's batched kernels)."""
        if self.native is not None and x.shape[0] < NATIVE_MAX_TOKENS:
            return self.native.forward(x, logits)
        return self.model(x, logits=logits)

    def _one_token(self, x: torch.Tensor) -> torch.Tensor:
        """One decode step, on the thread count that has been faster lately (see engine.threads)."""
        most = torch.get_num_threads()
        threads, start = self.step_threads.pick(most), time.perf_counter()
        torch.set_num_threads(threads)
        try:
            logits = self._run(x)
        finally:
            torch.set_num_threads(most)
        self.step_threads.record(threads, time.perf_counter() - start)
        return logits

    def _forward(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor(ids, dtype=torch.long)
        logits = self._one_token(x) if len(ids) == 1 else self._run(x)
        self._cached_ids.extend(ids)
        return logits.unsqueeze(0)  # [1, 1, vocab], as the reference engine returns

    def _fresh_cache(self, prefix: Prefix | None) -> KVCache:
        cache: KVCache = self.model.cache
        cache.length = 0
        if prefix is None:
            return cache
        snapshot = self._prefix_caches.get(prefix.key)
        if snapshot is None:
            self._run(prefix.embeddings.to(self.model.dtype), logits="none")
            snapshot = cache.snapshot()
            self._prefix_caches[prefix.key] = snapshot
            while len(self._prefix_caches) > self._prefix_slots:
                self._prefix_caches.popitem(last=False)
        else:
            cache.restore(snapshot)
        self._prefix_caches.move_to_end(prefix.key)
        return cache


# -- choosing and opening the fast path ------------------------------------------------------------


def fast_folder(cache_path: str | Path) -> Path:
    """Where the repacked weights of a converted GGUF model live (beside the converted folder)."""
    cache_path = Path(cache_path)
    return cache_path.parent / f"{cache_path.name}.fast"


def supports(loaded: LoadedModel) -> bool:
    """The fast path serves Llama-family models (loaded by transformers or already fast)."""
    model = loaded.model
    if isinstance(model, FastLlama):
        return True
    return loader.is_llama(model)


def fast_model_for(loaded: LoadedModel, progress=None) -> FastLlama:
    """The FastLlama behind `loaded`: itself, the GGUF source repacked (cached), or the
    transformers model's own weights (dense, same dtype) for other Llama checkpoints."""
    model = loaded.model
    if isinstance(model, FastLlama):
        return model
    if "gguf" in loaded.info.source_kind and loaded.info.cache_path:
        folder = fast_folder(loaded.info.cache_path)
        source = Path(loaded.info.source)
        fast = _load_for_decoding(source, folder, progress)
        fast.config, fast.generation_config = model.config, getattr(model, "generation_config", None)
        return fast
    return loader.from_hf(model)


def _load_for_decoding(gguf_path: Path, folder: Path, progress=None) -> FastLlama:
    """The cached model as the decoder that will run it needs it: where the native kernels
    decode, no int4 weights (packed=False) and, where their layout holds the file's own head
    blocks, no int8 head either (both would be read only to be dropped)."""
    from chatbot.engine.native import weights as native_weights
    from chatbot.engine.native.decoder import will_decode

    native = will_decode(gguf_path, folder, progress)
    head = not native or native_weights.HEAD not in json.loads(
        loader.read_metadata(native_weights.path_in(folder)).get("types", "{}"))
    return loader.load_or_build(gguf_path, folder, progress=progress, packed=not native, head=head)


def build_fast_engine(loaded: LoadedModel, progress=None) -> FastEngine:
    engine = FastEngine(fast_model_for(loaded, progress), loaded.tokenizer, loaded.eos_token_ids, loaded.info.context_length)
    if "gguf" in loaded.info.source_kind and loaded.info.cache_path:
        from chatbot.engine.native.decoder import decoder_for

        engine.native = decoder_for(engine.model, Path(loaded.info.source), fast_folder(loaded.info.cache_path), progress)
        if engine.model.output is None and engine.model.exact_head is None:
            # loaded without its head (and int4 weights) for kernels that then did not take the
            # model: the torch path decodes, with all of it
            headless, engine.model = engine.model, loader.load_or_build(Path(loaded.info.source), fast_folder(loaded.info.cache_path))
            engine.model.config, engine.model.generation_config = headless.config, headless.generation_config
    trim_heap()  # what reading the weights freed (headers, small tensors read and dropped): ~15 MB
    return engine


def load_fast(spec: str, cache_dir: Path, progress=None) -> LoadedModel | None:
    """Open a Llama-family GGUF (Llama, Mistral, Qwen2, Qwen3) for the fast path only: tokenizer
    and config from a folder of the file's metadata (or the converted folder, where one exists),
    weights from the repacked cache; the transformers model is never loaded, nor its weights
    dequantized (a fraction of the memory and start-up), nor, once the folder exists, transformers
    itself. None when the source is not a GGUF file; NotOnFastPath (before anything is converted)
    when a tensor type, the architecture or the rope scaling has no fast form."""
    source = loading.resolve_source(spec)
    if source.kind != "gguf":
        return None
    progress = progress or (lambda message: None)
    gguf_path = Path(source.location)
    cache_path = loading.converted_dir(gguf_path, cache_dir)
    if not loader.is_cached(fast_folder(cache_path)):
        try:
            weights = GGUFWeights(gguf_path)
        except (ValueError, OSError) as exc:  # not a GGUF, cut short, unreadable: name the file
            raise UserError(f"cannot read {gguf_path.name}: {loading._one_line(exc)}") from exc
        weights.check()
    metadata_path = loading.metadata_folder(gguf_path, cache_path, progress)
    tokenizer, config, generation_config = loading.open_tokenizer_and_config(metadata_path)
    trim_heap()  # what parsing the tokenizer freed, before the weights add to the peak
    if getattr(config, "model_type", "") not in loader.FAST_HF_ARCHITECTURES.values():
        return None
    folder = fast_folder(cache_path)
    model = _load_for_decoding(gguf_path, folder, progress)
    model.config, model.generation_config = config, generation_config
    info = loading.ModelInfo(
        name=source.name,
        source=source.location,
        source_kind=("bundled " if source.bundled else "") + source.kind,
        dtype=f"{str(model.dtype).removeprefix('torch.')} activations, {model.layout.linear} weights",
        context_length=int(getattr(config, "max_position_embeddings", 0) or 2048),
        cache_path=str(cache_path),
        architecture=(getattr(config, "architectures", None) or ["LlamaForCausalLM"])[0],
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        engine=FastEngine.name,
    )
    stop_ids = loading.end_token_ids(model, tokenizer) | model.stop_token_ids  # the file's own EOS/EOT/EOM
    return loading.LoadedModel(model, tokenizer, info, stop_ids)
