"""Real servers on 127.0.0.1 for the scale-out tests: `chatbot serve`'s app under uvicorn in a
thread, and a tiny scripted OpenAI-compatible server (http.server) that fails on purpose."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(app):
    """`app` served on a free port of 127.0.0.1 until the block ends; yields the /v1 base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(15)


def make_runtime(tiny_llama, tokenizer, gated: bool = False):
    from chatbot.engine.decoding import Engine
    from chatbot.engine.loading import LoadedModel, ModelInfo
    from chatbot.runtime import Runtime

    info = ModelInfo("tiny", "memory", "test", "float32", 1024, None, "LlamaForCausalLM", True)
    engine = Engine(tiny_llama, tokenizer, {-1}, 1024)
    return Runtime(LoadedModel(tiny_llama, tokenizer, info, eos_token_ids={-1}), GatedEngine(engine) if gated else engine)


def make_settings(folder):
    from chatbot.config import Settings

    return Settings(data_dir=folder / "data", db=str(folder / "chat.db"))


def make_app(runtime, settings, **options):
    from chatbot.cli.state import AppState
    from chatbot.serve.app import create_app

    state = AppState(settings=settings)
    return create_app(runtime, settings, state.store, **options), state


class GatedEngine:
    """Wraps an engine so each reply waits at its first step until `release` is set: a test can
    hold the one engine busy without timing anything."""

    def __init__(self, engine):
        self.inner = engine
        self.release = threading.Event()
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompt_ids, params, prefix=None, cancel=None, reuse=True):
        generation = self.inner.generate(prompt_ids, params, prefix, cancel, reuse)
        inner = generation._deltas

        def gated():
            self.started.set()
            self.release.wait(30)
            yield from inner

        generation._deltas = gated()
        return generation


def write_soft_persona(data_dir, name: str, hidden: int, tokens: int = 4, seed: int = 0) -> None:
    """A user persona with a random soft prompt of the given width (no base model declared)."""
    from chatbot.personas.soft_prompt import adapter_config, save_soft_prompt

    folder = data_dir / "personas" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "persona.toml").write_text(
        f'name = "{name}"\nkind = "soft_prompt"\n\n[soft_prompt]\npath = "soft_prompt"\n', encoding="utf-8"
    )
    generator = torch.Generator().manual_seed(seed)
    save_soft_prompt(folder / "soft_prompt", torch.randn(tokens, hidden, generator=generator),
                     adapter_config(tokens, hidden, "", None))


class ScriptedServer:
    """An OpenAI-compatible server that answers as told: `mode` is "ok" (streams `chunks`),
    "status" (answers `status` with an error body), "stall" (streams `chunks`, then sends
    nothing until the test ends) or "cut" (streams `chunks`, then [DONE] with no finish_reason). Request bodies are kept in `bodies`."""

    def __init__(self):
        self.mode = "ok"
        self.status = 500
        self.chunks = ["Hello", " there"]
        self.bodies: list[dict] = []
        self.hold = threading.Event()
        self.stalled = 0  # requests held in "stall" right now
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                scripted.bodies.append(body)
                if scripted.mode == "status":
                    self._json(scripted.status, {"error": {"message": "boom from the test server", "type": "x"}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                chat = self.path.endswith("/chat/completions")
                for text in scripted.chunks:
                    choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
                    self._event({"id": "x", "object": "chunk", "created": 0, "model": "scripted",
                                 "choices": [{**choice, "finish_reason": None}]})
                if scripted.mode == "stall":
                    scripted.stalled += 1
                    scripted.hold.wait(120)
                    scripted.stalled -= 1
                    return
                if scripted.mode == "cut":
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                done = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
                self._event({"id": "x", "object": "chunk", "created": 0, "model": "scripted",
                             "choices": [{**done, "finish_reason": "stop"}]})
                self.wfile.write(b"data: [DONE]\n\n")

            def _event(self, data: dict) -> None:
                self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def _json(self, status: int, data: dict) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()
