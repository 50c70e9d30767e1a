"""The model in its own process: `python -m chatbot.engine.worker`, driven by `engine.remote`.

Why a process: decoding from a thread of the UI process ran at about half the speed of
`chatbot ask` on 2 cores (torch's OpenMP teams and the UI's event loop share the CPU and the GIL
badly). Here the main thread loads the model and decodes, exactly as `chatbot ask` does; a reader
thread only parses requests and raises the cancel flag.

The protocol is JSON lines. stdin takes requests:
    {"op": "open", "settings": {...}}                       first, once
    {"op": "generate", "id": N, "prompt_ids": [...], "params": {...}, "reuse": bool,
     "prefix": null | {"key": str, "shape": [n, hidden], "data": base64 float32}}
    {"op": "cancel", "id": N}
    {"op": "reset"}
stdout gives events (nothing else is written there: stray prints go to stderr):
    {"event": "progress", "message": str}
    {"event": "ready", "info": {...}, "eos_token_ids": [...], "max_context": int}
    {"event": "error", "message": str}                      loading failed; the process ends
    {"event": "delta", "id": N, "text": str}
    {"event": "done", "id": N, "stats": {...}, "token_ids": [...]}
    {"event": "failed", "id": N, "message": str}
The process ends when stdin closes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import queue
import sys
import threading
import time

# Before torch is imported: a conversion progress bar must not write into the protocol.
os.environ.setdefault("TQDM_DISABLE", "1")

# Deltas go out at most this often (the first at once): every message wakes two threads of the UI
# process, whose CPU time on 2 cores is taken from the decoder. The UI repaints at 10 fps anyway.
DELTA_BATCH_S = 0.05


class Channel:
    """Events out on the original stdout; fd 1 itself is pointed at stderr."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, event: str, **fields) -> None:
        self._out.write(json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n")
        self._out.flush()


class Requests:
    """Reads stdin on a thread: `cancel` flags the running generation at once (or one still
    queued, which then never starts); the rest queue up."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict | None] = queue.Queue()
        self.cancel = threading.Event()
        self.cancelled: set[int] = set()
        self.running_id: int | None = None
        threading.Thread(target=self._read, name="requests", daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            try:
                request = json.loads(line)
            except ValueError:
                continue
            if request.get("op") == "cancel":
                self.cancelled.add(request.get("id"))
                if request.get("id") == self.running_id:
                    self.cancel.set()
            else:
                self.queue.put(request)
        self.queue.put(None)  # the parent closed our stdin (or went away)


def decode_prefix(spec: dict | None):
    if spec is None:
        return None
    import torch

    from chatbot.engine.decoding import Prefix

    raw = bytearray(base64.b64decode(spec["data"]))
    embeddings = torch.frombuffer(raw, dtype=torch.float32).reshape(spec["shape"])
    return Prefix(key=spec["key"], embeddings=embeddings)


def serve(channel: Channel, requests: Requests) -> int:
    first = requests.queue.get()
    if first is None or first.get("op") != "open":
        return 0
    try:
        from chatbot.config import Settings
        from chatbot.runtime import open_runtime

        runtime = open_runtime(Settings(**first["settings"]), progress=lambda m: channel.send("progress", message=m))
    except Exception as exc:  # noqa: BLE001 - reported as one line; the parent shows it
        channel.send("error", message=_one_line(exc))
        return 1
    engine, loaded = runtime.engine, runtime.loaded
    channel.send(
        "ready", info=loaded.info.as_dict(), eos_token_ids=sorted(loaded.eos_token_ids), max_context=engine.max_context,
    )
    from chatbot.engine.sampling import SamplingParams

    while (request := requests.queue.get()) is not None:
        if request.get("op") == "reset":
            engine.reset()
            continue
        if request.get("op") != "generate":
            continue
        gen_id = request["id"]
        requests.cancel.clear()
        requests.running_id = gen_id
        if gen_id in requests.cancelled:  # given up before it started
            requests.cancel.set()
        try:
            generation = engine.generate(
                request["prompt_ids"], SamplingParams(**request["params"]), decode_prefix(request.get("prefix")),
                cancel=requests.cancel, reuse=request.get("reuse", True),
            )
            pending: list[str] = []
            sent_at = 0.0
            for delta in generation:
                pending.append(delta)
                if time.monotonic() - sent_at >= DELTA_BATCH_S:  # the first at once, then batched
                    channel.send("delta", id=gen_id, text="".join(pending))
                    pending.clear()
                    sent_at = time.monotonic()
            if pending:
                channel.send("delta", id=gen_id, text="".join(pending))
        except Exception as exc:  # noqa: BLE001 - this reply failed; the process serves on
            channel.send("failed", id=gen_id, message=_one_line(exc))
        else:
            channel.send("done", id=gen_id, stats=dataclasses.asdict(generation.stats), token_ids=generation.token_ids)
        finally:
            requests.running_id = None
            requests.cancelled.discard(gen_id)
    return 0


def _one_line(exc: Exception) -> str:
    """The parent shows this as is: a user error's own line, anything else with its type."""
    from chatbot.engine.loading import _one_line as first_line
    from chatbot.errors import UserError

    return first_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"


def main() -> int:
    channel = Channel()
    return serve(channel, Requests())


if __name__ == "__main__":
    raise SystemExit(main())
