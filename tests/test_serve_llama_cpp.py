"""The openai engine against llama.cpp's own OpenAI-compatible server (llama-cpp-python's
`llama_cpp.server`, from the `bench` extra with its server dependencies) on the bundled GGUF.
Skipped with a note where that server is not installed; it has not run on the machine that wrote
it (no llama-cpp-python there)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import urllib.request

import pytest

from serve_helpers import free_port

SERVER_MODULES = ("llama_cpp", "llama_cpp.server", "sse_starlette", "starlette_context")


def _missing() -> str | None:
    for name in SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ModuleNotFoundError:
            return name
    return None


pytestmark = pytest.mark.skipif(
    _missing() is not None,
    reason=f"llama.cpp's server is not installed (no {_missing()}): pip install 'llama-cpp-python[server]==0.3.16'",
)


@pytest.fixture(scope="module")
def llama_server():
    from chatbot.engine.loading import bundled_gguf

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            if process.poll() is not None:
                pytest.fail(f"llama.cpp's server exited ({process.returncode})")
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_a_persona_turn_through_llama_cpps_server_is_streamed_and_stored(llama_server, tmp_path, monkeypatch):
    from chatbot.config import Settings
    from chatbot.personas.registry import find
    from chatbot.runtime import open_runtime
    from chatbot.session import ChatSession
    from chatbot.store import Store

    settings = Settings(data_dir=tmp_path / "data", db=str(tmp_path / "chat.db"), engine="openai",
                        base_url=llama_server, remote_model="smollm2")
    runtime = open_runtime(settings)
    with Store.open(settings.database_url()) as store:
        session = ChatSession(runtime, settings, find("pirate", settings.data_dir), store=store)
        reply = session.send("Who are you?", session.sampling_params(max_new_tokens=24, seed=4))
        text = reply.run()
        assert text.strip() and reply.status == "complete"
        assert reply.stats.new_tokens > 0 and reply.stats.ttft_ms > 0
        assert store.active_branch(reply.conversation_id)[-1].content == text
