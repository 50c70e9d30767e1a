"""The openai engine against llama.cpp's own OpenAI-compatible server (llama-cpp-python's
`llama_cpp.server`, from the `bench` extra with its server dependencies) on the bundled GGUF.
Skipped with a note where that server is not installed (it is not in `make test`'s install:
`pip install -e '.[bench]'`), and unless CHATBOT_INTEGRATION=1 (`make bench-serve` sets it)."""

from __future__ import annotations

import os

import pytest

from benchmarks.serve import free_port, llama_cpp_missing, start_llama_cpp_server, wait_for

# One line for the whole module, not one per test. Opt-in even where installed: a few minutes of
# CPU, so `make test` stays as it is and `make bench-serve` runs them.
if llama_cpp_missing() is not None:
    pytest.skip(f"llama.cpp's server is not installed (no {llama_cpp_missing()}): pip install -e '.[bench]'",
                allow_module_level=True)
if os.environ.get("CHATBOT_INTEGRATION") != "1":
    pytest.skip("llama.cpp integration tests: run by `make bench-serve` (CHATBOT_INTEGRATION=1)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def llama_server():
    port = free_port()
    process = start_llama_cpp_server(port)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def open_session(tmp_path, engine: str, url: str = "", db: str = "chat"):
    from chatbot.config import Settings
    from chatbot.personas.registry import find
    from chatbot.runtime import open_runtime
    from chatbot.session import ChatSession
    from chatbot.store import Store

    settings = Settings(data_dir=tmp_path / "data", db=str(tmp_path / f"{engine}-{db}.db"), engine=engine,
                        base_url=url, remote_model="smollm2")
    store = Store.open(settings.database_url())
    return ChatSession(open_runtime(settings), settings, find("pirate", settings.data_dir), store=store), store


GREEDY = dict(max_new_tokens=24, temperature=0, repetition_penalty=1.0, seed=4)


@pytest.mark.slow
def test_greedy_turns_through_llama_cpp_equal_our_fast_engine_on_the_same_gguf(llama_server, tmp_path):
    """The same GGUF, the same persona messages, greedy, over two turns (the second sees the
    first through the messages): llama.cpp's text is our fast engine's, so the chat template,
    the persona and the sampling fields (repeat_penalty, min_p 0) all reach it. Streamed and
    stored as on the local engine."""
    remote, store = open_session(tmp_path, "openai", llama_server)
    local, _ = open_session(tmp_path, "fast")
    for question in ("Who are you?", "Where is your ship?"):
        theirs = remote.send(question, remote.sampling_params(**GREEDY))
        ours = local.send(question, local.sampling_params(**GREEDY))
        assert theirs.run() == ours.run() and theirs.text.strip()
        assert theirs.status == "complete" and theirs.stats.stop_reason == "max_new_tokens"
        assert theirs.stats.new_tokens == 24 and theirs.stats.ttft_ms > 0 and theirs.stats.tokens_per_s > 0
        assert theirs.stats.prompt_tokens == ours.stats.prompt_tokens
    stored = store.active_branch(theirs.conversation_id)
    assert [m.content for m in stored][2:] == ["Where is your ship?", theirs.text]
    assert all(m.status == "complete" for m in stored)


@pytest.mark.slow
def test_stop_seed_and_cancel_through_llama_cpps_server(llama_server, tmp_path):
    import threading

    session, store = open_session(tmp_path, "openai", llama_server)
    stopped = session.send("Who are you?", session.sampling_params(**{**GREEDY, "stop": ("matey",)}))
    assert stopped.run() == "Arrr, " and stopped.stats.stop_reason == "eos"  # llama.cpp: finish "stop"
    sampled = []
    for db in ("one", "two"):  # the same question, each the first of its conversation
        fresh, _ = open_session(tmp_path, "openai", llama_server, db)
        sampled.append(fresh.send("Tell me a joke.", fresh.sampling_params(max_new_tokens=12, temperature=1.0, seed=9)).run())
    assert sampled[0] == sampled[1] and sampled[0].strip()  # the seed reaches llama.cpp
    cancel = threading.Event()
    long = session.send("Tell me a long story.", session.sampling_params(max_new_tokens=400, seed=1), cancel)
    for _ in long:
        cancel.set()
    assert long.status == "interrupted" and long.stats.stop_reason == "cancelled" and long.text
    assert store.active_branch(long.conversation_id)[-1].content == long.text
    after = session.send("And then?", session.sampling_params(**GREEDY))  # the server still answers
    assert after.run().strip() and after.status == "complete"
