"""`chatbot serve` over real HTTP on 127.0.0.1 (uvicorn in a thread, a tiny random Llama behind the
real engine), spoken to by the `openai` client; one end-to-end run of the real command on the
bundled model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from serve_helpers import free_port, make_app, make_runtime, make_settings, uvicorn_server, write_soft_persona

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama, smol_tokenizer):
    folder = tmp_path_factory.mktemp("serve")
    settings = make_settings(folder)
    write_soft_persona(settings.data_dir, "softy", hidden=tiny_llama.config.hidden_size)
    (settings.data_dir / "personas" / "plainy").mkdir(parents=True)
    (settings.data_dir / "personas" / "plainy" / "persona.toml").write_text('name = "plainy"\n')
    app, state = make_app(make_runtime(tiny_llama, smol_tokenizer), settings)
    with uvicorn_server(app) as url:
        yield url, state
    state.close()


def client(url, key="none", **options):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60, **options)


def ask(url, model="tiny:pirate", text="Hello there", **options):
    return client(url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], max_tokens=options.pop("max_tokens", 8), **options
    )


def test_models_lists_every_persona_as_model_colon_persona(served):
    url, _ = served
    ids = [m.id for m in client(url).models.list()]
    assert "tiny:pirate" in ids and "tiny:assistant" in ids and "tiny:softy" in ids
    assert ids[0] == "tiny" and all(i.startswith("tiny:") for i in ids[1:])  # the model alone: no persona
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("other:pirate")


def test_a_seeded_reply_is_the_same_whole_and_streamed(served):
    url, _ = served
    whole = ask(url, seed=11, temperature=0.8, max_tokens=12)
    again = ask(url, seed=11, temperature=0.8, max_tokens=12)
    assert whole.choices[0].message.content == again.choices[0].message.content
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12 and whole.usage.prompt_tokens > 0
    stream = client(url).chat.completions.create(
        model="tiny:pirate", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, seed=11,
        temperature=0.8, stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 12


def test_stop_strings_end_the_reply_before_them(served):
    url, _ = served
    full = ask(url, temperature=0, max_tokens=24).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), full
    cut = ask(url, temperature=0, max_tokens=24, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_personas_and_a_client_system_message_change_the_prompt(served):
    url, _ = served
    plain = ask(url, model="tiny:assistant", temperature=0, max_tokens=4)
    pirate = ask(url, model="tiny:pirate", temperature=0, max_tokens=4)
    assert pirate.usage.prompt_tokens > plain.usage.prompt_tokens  # the pirate's control code
    with_system = client(url).chat.completions.create(
        model="tiny:assistant", max_tokens=4, temperature=0,
        messages=[{"role": "system", "content": "You are terse and speak only in lists."},
                  {"role": "user", "content": "Hello there"}],
    )
    assert with_system.usage.prompt_tokens > plain.usage.prompt_tokens


def test_a_soft_prompt_persona_is_served_with_its_virtual_tokens(served):
    url, _ = served
    plain = ask(url, model="tiny:plainy", temperature=0, max_tokens=6)
    soft = ask(url, model="tiny:softy", temperature=0, max_tokens=6)
    # The same text prompt (neither has a control code) plus the 4 virtual tokens.
    assert soft.usage.prompt_tokens == plain.usage.prompt_tokens + 4


def test_bad_requests_are_400_and_unknown_models_404_in_openais_error_shape(served):
    url, _ = served
    with pytest.raises(openai.NotFoundError, match="no model"):
        ask(url, model="tiny:nobody")
    with pytest.raises(openai.BadRequestError, match="temperature"):
        ask(url, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="last message"):
        client(url).chat.completions.create(model="tiny:pirate", messages=[{"role": "assistant", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="n"):
        ask(url, n=2)


def test_storing_when_asked_keeps_the_clients_turns_and_continues_by_id(served):
    url, state = served
    messages = [{"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "second question"}]
    raw = client(url).chat.completions.with_raw_response.create(
        model="tiny:pirate", messages=messages, max_tokens=5, temperature=0, store=True)
    conversation = int(raw.headers["x-chatbot-conversation"])
    reply = raw.parse().choices[0].message.content
    store = state.store()
    branch = store.active_branch(conversation)
    assert [(m.role, m.content) for m in branch] == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question"), ("assistant", reply)]
    assert branch[-1].status == "complete"
    client(url).chat.completions.create(model="tiny:pirate", messages=[{"role": "user", "content": "third"}],
                                        max_tokens=5, extra_headers={"X-Chatbot-Conversation": str(conversation)})
    assert [m.content for m in store.active_branch(conversation)][4] == "third"
    with pytest.raises(openai.NotFoundError):
        client(url).chat.completions.create(model="tiny:pirate", messages=[{"role": "user", "content": "x"}],
                                            max_tokens=2, extra_headers={"X-Chatbot-Conversation": "999999"})
    before = len(store.list_conversations())
    ask(url)  # not asked to store: nothing is
    assert len(store.list_conversations()) == before


def test_an_api_key_is_enforced_as_bearer(tmp_path, tiny_llama, smol_tokenizer):
    app, state = make_app(make_runtime(tiny_llama, smol_tokenizer), make_settings(tmp_path), api_key="s3cret")
    with uvicorn_server(app) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").models.list()
        with pytest.raises(urllib.error.HTTPError) as no_key:
            urllib.request.urlopen(f"{url}/models", timeout=30)
        assert no_key.value.code == 401
        assert client(url, key="s3cret").models.list().data


def test_one_engine_in_turn_beyond_the_queue_is_429_and_a_closed_stream_is_an_interrupted_reply(
    tmp_path, tiny_llama, smol_tokenizer
):
    runtime = make_runtime(tiny_llama, smol_tokenizer, gated=True)
    app, state = make_app(runtime, make_settings(tmp_path), queue_size=0)
    gate = runtime.engine
    with uvicorn_server(app) as url:
        stream = client(url).chat.completions.create(
            model="tiny:pirate", messages=[{"role": "user", "content": "hi"}], max_tokens=500, stream=True,
            store=True)
        first = next(iter(stream))  # the role chunk: the reply is stored and holds the engine
        assert first.choices[0].delta.role == "assistant"
        assert gate.started.wait(30)
        with pytest.raises(openai.RateLimitError, match="busy"):
            ask(url)
        conversation = int(stream.response.headers["x-chatbot-conversation"])
        stream.close()  # the client goes away mid-reply
        gate.release.set()
        store = state.store()
        deadline = time.monotonic() + 30
        while store.active_branch(conversation)[-1].status == "streaming" and time.monotonic() < deadline:
            time.sleep(0.05)
        reply = store.active_branch(conversation)[-1]
        assert reply.status == "interrupted"
        assert reply.stats["new_tokens"] < 500
        assert ask(url).choices[0].message.content is not None  # the engine is free again
    state.close()


def test_serve_refuses_another_address_without_an_api_key(tmp_path):
    env = dict(os.environ, CHATBOT_DATA_DIR=str(tmp_path), CHATBOT_DB=str(tmp_path / "x.db"))
    done = subprocess.run([sys.executable, "-m", "chatbot", "serve", "--host", "0.0.0.0"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "chatbot: error: listening on 0.0.0.0 lets other machines in: give --api-key KEY (or bind 127.0.0.1)"]


@pytest.mark.slow
def test_the_openai_engine_against_chatbot_serve_end_to_end(tmp_path):
    """The real commands on the bundled model: `chatbot serve`, and `chatbot --engine openai ask`
    through it, storing the turn on the client's side."""
    port = free_port()
    env = dict(os.environ, CHATBOT_DATA_DIR=str(tmp_path / "server"), CHATBOT_DB=str(tmp_path / "server.db"),
               TQDM_DISABLE="1")
    server = subprocess.Popen([sys.executable, "-m", "chatbot", "serve", "--port", str(port)], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()  # "serving N models ... on http://127.0.0.1:PORT/v1"
        assert f"http://127.0.0.1:{port}/v1" in line, line
        threading.Thread(target=server.stderr.read, daemon=True).start()
        # The model alone on the server (no persona there): the client's pirate becomes its messages.
        client_env = dict(os.environ, CHATBOT_DATA_DIR=str(tmp_path / "client"), CHATBOT_DB=str(tmp_path / "c.db"))
        asked = subprocess.run(
            [sys.executable, "-m", "chatbot", "--engine", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
             "--remote-model", "smollm2-135m", "ask", "--json", "--seed", "3", "--max-new-tokens", "16",
             "--persona", "pirate", "Who are you?"],
            env=client_env, capture_output=True, text=True, timeout=300,
        )
        assert asked.returncode == 0, asked.stderr
        import json

        result = json.loads(asked.stdout)
        assert result["reply"].strip()
        assert result["stats"]["new_tokens"] > 0 and result["stats"]["ttft_ms"] > 0
        from chatbot.store import Store

        with Store.open(str(tmp_path / "c.db"), create=False) as store:
            branch = store.active_branch(store.latest_conversation_id())
        assert [(m.role, m.status) for m in branch] == [("user", "complete"), ("assistant", "complete")]
        assert branch[1].content == result["reply"] and branch[1].model == "smollm2-135m"
    finally:
        server.terminate()
        server.wait(30)
