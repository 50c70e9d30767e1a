"""The engine in a child process (`engine.worker`), behind the same `generate` as `Engine`.

The TUI uses it so decoding runs on the main thread of a process of its own, as fast as
`chatbot ask`, while the UI's event loop keeps its own process. Here live the tokenizer and the
model's config (the context builder and the persona checks need them); the weights live only in
the child. A child that dies mid-reply ends that reply with one line, not a hung UI.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatbot.config import Settings
from chatbot.engine.decoding import Prefix, StreamingEngine
from chatbot.engine.loading import LoadedModel, ModelInfo, Progress, open_tokenizer_and_config
from chatbot.errors import UserError

POLL_S = 0.05  # how often a waiting reply looks at the caller's cancel flag
STOP_WAIT_S = 5.0


@dataclass
class ModelElsewhere:
    """Stands for the model held by the child: its config, for the persona checks."""

    config: object
    generation_config: object | None = None


@dataclass(eq=False)
class WorkerProcess:
    """The child process and the two threads that read its stdout (events) and stderr (kept for
    the one line shown if it dies). Events of a reply go to that reply's own queue, so a reply
    abandoned half-way can never feed the next one; the rest go to `control`."""

    process: subprocess.Popen
    control: queue.Queue = field(default_factory=queue.Queue)
    stderr_tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))
    _routes: dict[int, queue.Queue] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # guards _routes and _gone
    _write_lock: threading.Lock = field(default_factory=threading.Lock)
    _gone: bool = False

    @classmethod
    def start(cls) -> WorkerProcess:
        env = dict(os.environ, TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
        process = subprocess.Popen(
            [sys.executable, "-m", "chatbot.engine.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", env=env,
        )
        worker = cls(process)
        _running.add(worker)
        threading.Thread(target=worker._read_events, name="worker-events", daemon=True).start()
        threading.Thread(target=worker._read_stderr, name="worker-stderr", daemon=True).start()
        return worker

    def _read_events(self) -> None:
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                self.stderr_tail.append(line.rstrip())
                continue
            with self._lock:
                route = self._routes.get(event["id"]) if "id" in event else self.control
            if route is not None:
                route.put(event)
        with self._lock:
            self._gone = True
            for route in [self.control, *self._routes.values()]:
                route.put({"event": "exit"})

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def route(self, gen_id: int) -> queue.Queue:
        """A queue for the events of reply `gen_id` (call before asking for it)."""
        events: queue.Queue = queue.Queue()
        with self._lock:
            self._routes[gen_id] = events
            if self._gone:
                events.put({"event": "exit"})
        return events

    def unroute(self, gen_id: int) -> None:
        with self._lock:
            self._routes.pop(gen_id, None)

    def send(self, op: str, **fields) -> None:
        line = json.dumps({"op": op, **fields}) + "\n"
        try:
            with self._write_lock:
                self.process.stdin.write(line)
                self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise UserError(self.death_notice()) from None

    def death_notice(self) -> str:
        code = self.process.poll()
        last = self.stderr_tail[-1] if self.stderr_tail else ""
        how = f"exit {code}" if code is not None else "no answer"
        return f"the model process stopped ({how})" + (f": {last}" if last else "")

    def stop(self, wait_s: float = STOP_WAIT_S) -> None:
        """Close stdin (the child ends its loop), then make sure it is gone."""
        _running.discard(self)
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_running: set[WorkerProcess] = set()


def stop_all_workers() -> None:
    """End every model process this process started, ready or still loading (the UI is closing:
    a load in progress must not hold the exit up)."""
    for worker in list(_running):
        worker.stop(wait_s=0.5)


class RemoteEngine(StreamingEngine):
    """`Engine.generate` over the child: same arguments, same streamed `Generation`."""

    def __init__(self, worker: WorkerProcess, tokenizer, eos_token_ids: set[int], max_context: int, name: str):
        self.worker = worker
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.max_context = max_context
        self.name = name  # the child's engine kind: "fast" or "reference"
        self._ids = itertools.count(1)

    def reset(self) -> None:
        self.worker.send("reset")

    def close(self) -> None:
        self.worker.stop()

    def _decode(self, generation, prompt_ids, params, prefix, cancel, reuse) -> Iterator[str]:
        gen_id = next(self._ids)
        events = self.worker.route(gen_id)
        finished = cancel_sent = False
        try:
            self.worker.send(
                "generate", id=gen_id, prompt_ids=prompt_ids, params=params.model_dump(mode="json"),
                prefix=_encode_prefix(prefix), reuse=reuse,
            )
            while True:
                if cancel is not None and cancel.is_set() and not cancel_sent:
                    self.worker.send("cancel", id=gen_id)
                    cancel_sent = True
                try:
                    event = events.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                kind = event.get("event")
                if kind == "delta":
                    yield event["text"]
                    continue
                finished = True
                if kind == "done":
                    for key, value in event["stats"].items():
                        setattr(generation.stats, key, value)
                    generation.token_ids = list(event["token_ids"])
                    return
                if kind == "failed":
                    raise UserError(event["message"])
                raise UserError(self.worker.death_notice())  # "exit"
        finally:
            self.worker.unroute(gen_id)
            if not finished and not cancel_sent:  # the reader stopped early: end it in the child too
                try:
                    self.worker.send("cancel", id=gen_id)
                except UserError:
                    pass


def _encode_prefix(prefix: Prefix | None) -> dict | None:
    if prefix is None:
        return None
    tensor = prefix.embeddings.detach().to("cpu").float().contiguous()
    return {
        "key": prefix.key,
        "shape": list(tensor.shape),
        "data": base64.b64encode(tensor.numpy().tobytes()).decode("ascii"),
    }


def open_remote_runtime(settings: Settings, progress: Progress | None = None, cancelled=None):
    """Start the child, let it open the model (its progress passed on), then open the tokenizer
    and config here. Errors: one line (UserError), the child gone. `cancelled()` returning True
    (the UI is closing) stops the child and the wait at once."""
    from chatbot.runtime import Runtime, open_runtime

    if settings.engine == "openai":  # the model is on a server already: no child needed
        return open_runtime(settings, progress)
    progress = progress or (lambda message: None)
    worker = WorkerProcess.start()
    try:
        worker.send("open", settings=settings.model_dump(mode="json"))
        while True:
            try:
                event = worker.control.get(timeout=POLL_S)
            except queue.Empty:
                if cancelled is not None and cancelled():
                    raise UserError("cancelled while the model was loading") from None
                continue
            kind = event.get("event")
            if kind == "progress":
                progress(event["message"])
            elif kind == "error":
                raise UserError(event["message"])
            elif kind == "exit":
                raise UserError(worker.death_notice())
            elif kind == "ready":
                break
        info = ModelInfo(**event["info"])
        tokenizer, config, generation_config = open_tokenizer_and_config(info.cache_path or info.source)
        loaded = LoadedModel(ModelElsewhere(config, generation_config), tokenizer, info, set(event["eos_token_ids"]))
        engine = RemoteEngine(worker, tokenizer, loaded.eos_token_ids, int(event["max_context"]), info.engine)
    except BaseException:
        worker.stop()
        raise
    return Runtime(loaded=loaded, engine=engine)

