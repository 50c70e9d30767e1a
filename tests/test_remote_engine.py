"""The engine in a child process (what the TUI uses): same replies as in-process, cancel,
abandoned streams, soft-prompt prefixes, and a child that fails or dies, all on the real
bundled model."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from chatbot.config import Settings
from chatbot.engine.remote import open_remote_runtime
from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UserError

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


@pytest.fixture(scope="module")
def settings(model_cache_dir, tmp_path_factory):
    data = tmp_path_factory.mktemp("remote")
    return Settings(model="", cache_dir=model_cache_dir, data_dir=data / "data", db=str(data / "chat.db"))


@pytest.fixture(scope="module")
def remote(settings):
    runtime = open_remote_runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def local(settings):
    from chatbot.runtime import open_runtime

    return open_runtime(settings)


def prompt_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False))


def test_opens_the_same_model_in_a_child(remote, local):
    assert remote.engine.worker.process.pid != os.getpid()
    assert remote.engine.name == local.engine.name == "fast"
    assert remote.loaded.info.name == local.loaded.info.name
    assert remote.loaded.eos_token_ids == local.loaded.eos_token_ids
    assert remote.engine.max_context == local.engine.max_context


def test_greedy_reply_equals_the_in_process_engine(remote, local):
    ids = prompt_ids(remote.tokenizer, "What is the capital of France?")
    here = local.engine.generate(ids, GREEDY, reuse=False)
    there = remote.engine.generate(ids, GREEDY, reuse=False)
    deltas = list(there)
    assert there.text == here.run() and "".join(deltas) == there.text
    assert there.token_ids == here.token_ids and there.stats.new_tokens == here.stats.new_tokens
    assert there.stats.tokens_per_s > 0 and there.stats.stop_reason == here.stats.stop_reason


def test_soft_prompt_prefix_reaches_the_child(remote, local):
    from chatbot.personas.registry import scan
    from chatbot.personas.soft_prompt import prefix_for

    personas, _ = scan(Settings().data_dir)
    prefix = prefix_for(personas["cowboy"], local.loaded)
    ids = prompt_ids(remote.tokenizer, "How is the weather today?")
    here = local.engine.generate(ids, GREEDY, prefix=prefix).run()
    there = remote.engine.generate(ids, GREEDY, prefix=prefix)
    assert there.run() == here and there.stats.prefix_tokens == prefix.embeddings.shape[0]
    plain = remote.engine.generate(ids, GREEDY).run()
    assert plain != here  # the prefix did change the reply


def test_cancel_stops_within_a_step_and_the_next_reply_is_clean(remote, local):
    ids = prompt_ids(remote.tokenizer, "Write a long story about a lighthouse.")
    cancel = threading.Event()
    generation = remote.engine.generate(ids, SamplingParams(temperature=0, max_new_tokens=200), cancel=cancel)
    for _ in generation:
        # at the first delta: later ones are batched by time (worker.DELTA_BATCH_S), so the third
        # came after ~25 tokens on a fast CPU and the bound below measured the batching, not the
        # cancel; what the child makes after the flag is the pipe's latency times its rate
        cancel.set()
    assert generation.stats.stop_reason == "cancelled"
    assert generation.stats.new_tokens < 20 and generation.text
    again = remote.engine.generate(ids, GREEDY).run()
    assert again == local.engine.generate(ids, GREEDY).run()


def test_an_abandoned_stream_is_ended_in_the_child(remote, local):
    ids = prompt_ids(remote.tokenizer, "Name three rivers.")
    stream = iter(remote.engine.generate(ids, SamplingParams(temperature=0, max_new_tokens=200)))
    next(stream)
    stream.close()  # the reader went away mid-reply
    after = remote.engine.generate(ids, GREEDY).run()
    assert after == local.engine.generate(ids, GREEDY).run()


def test_a_failed_reply_is_one_line_and_the_child_serves_on(remote):
    with pytest.raises(UserError) as failure:
        remote.engine.generate([10**9], GREEDY).run()  # no such token id
    assert "\n" not in str(failure.value) and "IndexError" in str(failure.value)
    ids = prompt_ids(remote.tokenizer, "Say hello.")
    assert remote.engine.generate(ids, GREEDY).run()


def test_a_bad_model_is_refused_with_one_line(settings, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf")
    with pytest.raises(UserError) as refused:
        open_remote_runtime(settings.model_copy(update={"model": str(broken)}))
    assert "\n" not in str(refused.value) and "broken.gguf" in str(refused.value)


def test_a_child_that_dies_mid_reply_ends_the_reply_with_one_line(settings):
    runtime = open_remote_runtime(settings)
    try:
        ids = prompt_ids(runtime.tokenizer, "Write a long story about a lighthouse.")
        generation = runtime.engine.generate(ids, SamplingParams(temperature=0, max_new_tokens=200))
        with pytest.raises(UserError) as stopped:
            for count, _ in enumerate(generation, 1):
                if count == 2:
                    os.kill(runtime.engine.worker.process.pid, signal.SIGKILL)
        assert str(stopped.value).startswith("the model process stopped")
        with pytest.raises(UserError):
            runtime.engine.generate(ids, GREEDY).run()
    finally:
        runtime.close()
    assert runtime.engine.worker.process.poll() is not None
