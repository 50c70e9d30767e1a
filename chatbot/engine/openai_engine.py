"""The openai engine: replies streamed from an OpenAI-compatible server (vLLM, llama.cpp, Ollama,
another `chatbot serve`), behind the same `Generation` as the local engines.

The session still builds the context locally (memory, budget, persona placement) with the local
model's tokenizer; this engine sends the messages that context renders to, to
`/v1/chat/completions`, and streams the answer through the `openai` client (no SSE parsing here).
A soft-prompt persona cannot be a message: it goes to `/v1/completions` as `prompt_embeds` where
the server takes them (`prompt_embeds.py`), and is refused with one line elsewhere.

Any failure of the server (down, a 4xx/5xx answer, a stream that stalls past the timeout or ends
with no finish_reason) is one line (UserError) raised from the stream: the session then stores the partial reply as `error`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

from chatbot.engine.decoding import Generation, GenerationStats, StreamingEngine
from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UserError
from chatbot.memory.render import Turn, chat_messages

SOFT_PROMPT_REFUSED = (
    "soft-prompt personas need a server that takes prompt embeddings (vLLM --enable-prompt-embeds, "
    "then CHATBOT_REMOTE_PROMPT_EMBEDS=1); {url} was not declared so: choose a control-code persona"
)
FINISH_REASONS = {"stop": "eos", "length": "max_new_tokens"}
POLL_S = 0.05  # how often a waiting reply looks at the caller's cancel flag


def messages_for(persona, history: list[Turn], context) -> list[dict]:
    """The chat messages of the turns a context kept (its window), the latest message as the model
    sees it (cut if it was too long)."""
    turns = [*history, Turn(context.message)][context.dropped_turns :]
    return chat_messages(persona, turns)


class OpenAIEngine(StreamingEngine):
    name = "openai"
    takes_messages = True  # the session hands it messages (generate_messages), not token ids

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, max_context: int,
                 embedder=None):
        from openai import OpenAI

        # No retries: a failed request is shown at once, and a retried one could answer twice.
        self.client = OpenAI(base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=0)
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_context = max_context
        self.embedder = embedder  # PromptEmbedder, where the server takes prompt embeddings

    def generate(self, prompt_ids, params, prefix=None, cancel=None, reuse=True) -> Generation:
        """Token ids in: only through prompt embeddings (a soft prompt prepended). Refused at once,
        before anything is stored, where the server takes none."""
        if self.embedder is None:
            raise UserError(SOFT_PROMPT_REFUSED.format(url=self.base_url))
        return super().generate(prompt_ids, params, prefix, cancel, reuse)

    def generate_messages(self, messages: list[dict], prompt_ids: list[int], params: SamplingParams,
                          cancel: threading.Event | None = None) -> Generation:
        """The reply to `messages`; `prompt_ids` (the local tokenizer's) count the prompt where the
        server reports no usage."""
        generation = Generation(_deltas=iter(()), stats=GenerationStats(prompt_tokens=len(prompt_ids)))

        def open_stream():
            return self.client.chat.completions.create(
                model=self.model, messages=messages, stream=True, stream_options={"include_usage": True},
                **_sampling(params),
            )

        generation._deltas = self._consume(generation, open_stream, _chat_text, cancel)
        return generation

    def _decode(self, generation, prompt_ids, params, prefix, cancel, reuse) -> Iterator[str]:
        embeds = self.embedder.encode(prompt_ids, prefix)
        generation.stats.prefix_tokens = 0 if prefix is None else int(prefix.embeddings.shape[0])
        sampling = _sampling(params)
        extra = {**sampling.pop("extra_body"), "prompt_embeds": embeds}

        def open_stream():
            return self.client.completions.create(
                model=self.model, prompt="", stream=True, stream_options={"include_usage": True},
                extra_body=extra, **sampling,
            )

        return self._consume(generation, open_stream, _completion_text, cancel)

    def _consume(self, generation: Generation, open_stream: Callable, text_of: Callable, cancel) -> Iterator[str]:
        """Stream the answer's text, keeping TTFT, tokens/s and the stop reason as the local
        engine does. The stream is read by a thread of its own, so a cancel ends the reply at
        once even while a read waits on a stalled server; the stream is then closed (the server
        sees the connection go) and the thread left to end with it."""
        stats = generation.stats
        started = time.perf_counter()
        first_at = last_at = None
        pieces = 0
        usage = None
        finish = None
        reader = StreamReader(open_stream)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    finish = "cancelled"
                    break
                try:
                    kind, value = reader.events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise UserError(self.explain(value)) from value
                usage = getattr(value, "usage", None) or usage
                for choice in value.choices:
                    text = text_of(choice)
                    if text:
                        last_at = time.perf_counter()
                        if first_at is None:
                            first_at = last_at
                            stats.ttft_ms = (first_at - started) * 1000
                        pieces += 1
                        yield text
                    finish = choice.finish_reason or finish
        finally:
            reader.stop()
        stats.stop_reason = "cancelled" if finish == "cancelled" else FINISH_REASONS.get(finish, "eos")
        stats.new_tokens = int(getattr(usage, "completion_tokens", 0) or pieces)
        if usage is not None and getattr(usage, "prompt_tokens", None):
            stats.prompt_tokens = int(usage.prompt_tokens)
        if stats.new_tokens > 1 and first_at is not None and last_at > first_at:
            stats.tokens_per_s = (stats.new_tokens - 1) / (last_at - first_at)
        if finish is None:  # e.g. llama.cpp's server ends a stream early for a newer request
            raise UserError(f"the model server at {self.base_url} ended the stream without finishing the "
                            "reply (no finish_reason): reply cut")

    def explain(self, exc: Exception) -> str:
        """One line for what went wrong with the server."""
        import openai

        if isinstance(exc, openai.APIStatusError):
            detail = _error_message(exc)
            return f"the model server at {self.base_url} answered {exc.status_code}" + (f": {detail}" if detail else "")
        if isinstance(exc, openai.APITimeoutError) or "timeout" in type(exc).__name__.lower():
            return f"the model server at {self.base_url} sent nothing for {self.timeout_s:g} s (stalled): reply cut"
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach the model server at {self.base_url}: is it running?"
        return f"the model server at {self.base_url} broke off the reply ({type(exc).__name__}: {exc})"

    def list_models(self) -> list[str]:
        try:
            return [model.id for model in self.client.models.list()]
        except Exception as exc:
            raise UserError(self.explain(exc)) from exc


class StreamReader:
    """Reads an opened stream's chunks into `events` ("chunk", then "end" or "error") on a daemon
    thread. `stop()` closes the stream; a read blocked on the server then ends with it."""

    def __init__(self, open_stream: Callable):
        self.events: queue.Queue = queue.Queue()
        self._stream = None
        self._stopped = threading.Event()
        threading.Thread(target=self._read, args=(open_stream,), name="openai-stream", daemon=True).start()

    def _read(self, open_stream: Callable) -> None:
        try:
            self._stream = open_stream()
            for chunk in self._stream:
                if self._stopped.is_set():
                    break
                self.events.put(("chunk", chunk))
            self.events.put(("end", None))
        except Exception as exc:  # the openai client's errors, and the HTTP library's under a stream
            self.events.put(("error", exc))
        finally:
            self._close()

    def stop(self) -> None:
        self._stopped.set()
        self._close()

    def _close(self) -> None:
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # closing from another thread mid-read: the read fails instead
                pass


def _sampling(params: SamplingParams) -> dict:
    """OpenAI's sampling fields, and top_k / repetition_penalty in the body as vLLM, llama.cpp and
    `chatbot serve` take them."""
    values = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_new_tokens,
        "extra_body": {"top_k": params.top_k, "repetition_penalty": params.repetition_penalty,
                       "repeat_penalty": params.repetition_penalty, "min_p": 0.0},
    }
    if params.seed is not None:
        values["seed"] = params.seed
    if params.stop:
        values["stop"] = list(params.stop)
    return values


def _chat_text(choice) -> str:
    delta = getattr(choice, "delta", None)
    return (getattr(delta, "content", None) or "") if delta is not None else ""


def _completion_text(choice) -> str:
    return getattr(choice, "text", None) or ""


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:200]
    return ""
