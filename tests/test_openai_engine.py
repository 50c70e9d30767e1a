"""The openai engine (`--engine openai`): against our own `chatbot serve` (real HTTP and SSE on
127.0.0.1, a tiny random Llama behind it), and against a scripted server that fails on purpose
(down, 4xx/5xx, a stalled stream, a stream cut short)."""

from __future__ import annotations

import base64
import io
import threading
import zipfile

import pytest
import torch

from serve_helpers import ScriptedServer, free_port, make_app, make_runtime, make_settings, uvicorn_server

from chatbot.store import Store

pytest.importorskip("openai")


def remote_runtime(url, tokenizer, model="tiny", timeout_s=30.0, embedder=None):
    """The openai engine's runtime as open_openai_runtime builds it, on the test's tokenizer."""
    from chatbot.engine.loading import LoadedModel, ModelInfo
    from chatbot.engine.openai_engine import OpenAIEngine
    from chatbot.engine.remote import ModelElsewhere
    from chatbot.runtime import Runtime

    engine = OpenAIEngine(url, model, None, timeout_s, 1024, embedder)
    config = type("Config", (), {"hidden_size": 64})()
    info = ModelInfo(model, url, "openai", "remote", 1024, None, "LlamaForCausalLM", True, engine="openai")
    return Runtime(LoadedModel(ModelElsewhere(config), tokenizer, info, set()), engine)


@pytest.fixture(scope="module")
def local_and_served(tmp_path_factory, tiny_llama, smol_tokenizer):
    folder = tmp_path_factory.mktemp("served")
    app, state = make_app(make_runtime(tiny_llama, smol_tokenizer), make_settings(folder))
    with uvicorn_server(app) as url:
        yield make_runtime(tiny_llama, smol_tokenizer), url
    state.close()


def open_session(runtime, tmp_path, persona_name="pirate", store=True):
    from chatbot.personas.registry import find
    from chatbot.session import ChatSession
    from chatbot.store import Store

    settings = make_settings(tmp_path)
    opened = Store.open(str(tmp_path / "client.db")) if store else None
    return ChatSession(runtime, settings, find(persona_name, settings.data_dir), store=opened), opened


def test_replies_through_chatbot_serve_equal_the_local_engine_turn_after_turn(local_and_served, smol_tokenizer, tmp_path):
    """The control-code persona becomes messages, memory carries the earlier turns, and the server
    renders them to the same prompt: greedy replies equal the local engine's."""
    local, url = local_and_served
    remote = remote_runtime(url, smol_tokenizer)
    here, _ = open_session(local, tmp_path / "a", store=False)
    there, store = open_session(remote, tmp_path / "b")
    for text in ("Hello, who are you?", "And what do you do all day?"):
        params = here.sampling_params(temperature=0, max_new_tokens=10)
        expected = here.send(text, params).run()
        reply = there.send(text, params)
        assert reply.run() == expected
    assert reply.stats.new_tokens == 10 and reply.stats.stop_reason == "max_new_tokens"
    assert reply.stats.ttft_ms > 0 and reply.stats.tokens_per_s > 0
    assert reply.stats.prompt_tokens == len(reply.context.prompt_ids)  # the server's count, the same
    branch = store.active_branch(reply.conversation_id)
    assert [m.status for m in branch] == ["complete"] * 4 and branch[-1].content == expected


def test_cancel_closes_the_stream_and_marks_the_reply_interrupted(local_and_served, smol_tokenizer, tmp_path):
    _, url = local_and_served
    session, store = open_session(remote_runtime(url, smol_tokenizer), tmp_path)
    cancel = threading.Event()
    reply = session.send("Tell me a long story", session.sampling_params(max_new_tokens=400, seed=1), cancel)
    for _ in reply:
        cancel.set()
    assert reply.status == "interrupted" and reply.stats.stop_reason == "cancelled"
    stored = store.active_branch(reply.conversation_id)[-1]
    assert stored.status == "interrupted" and stored.content == reply.text and reply.text


def test_cancel_during_a_stalled_stream_closes_it_without_waiting_for_the_timeout(smol_tokenizer, tmp_path):
    with ScriptedServer() as scripted:
        scripted.mode = "stall"  # two chunks, then nothing: no chunk comes to notice the cancel at
        session, store = open_session(remote_runtime(scripted.url, smol_tokenizer, timeout_s=120), tmp_path)
        cancel = threading.Event()
        reply = session.send("a question", session.sampling_params(seed=1), cancel)
        for delta in reply:
            if reply.text == "Hello there":
                threading.Timer(0.2, cancel.set).start()
        assert reply.status == "interrupted" and reply.stats.stop_reason == "cancelled"
        assert scripted.stalled == 1  # ended while the server still held the stream, not by it
        assert store.active_branch(reply.conversation_id)[-1].content == "Hello there"


def test_a_soft_prompt_persona_is_refused_in_one_line_before_anything_is_stored(local_and_served, smol_tokenizer, tmp_path):
    from chatbot.errors import UserError
    from serve_helpers import write_soft_persona

    _, url = local_and_served
    settings = make_settings(tmp_path)
    write_soft_persona(settings.data_dir, "softy", hidden=64)
    session, store = open_session(remote_runtime(url, smol_tokenizer), tmp_path, persona_name="softy")
    with pytest.raises(UserError, match="soft-prompt personas need a server that takes prompt embeddings"):
        session.send("hi", session.sampling_params())
    assert store.list_conversations() == []


@pytest.mark.parametrize("failure", ["down", "status 500", "status 401", "stall", "cut"])
def test_server_failures_are_one_line_with_the_message_kept_and_the_partial_reply_marked(
    failure, smol_tokenizer, tmp_path
):
    from chatbot.errors import UserError

    with ScriptedServer() as scripted:
        url = scripted.url
        if failure == "down":
            url = f"http://127.0.0.1:{free_port()}/v1"
        elif failure.startswith("status"):
            scripted.mode, scripted.status = "status", int(failure.split()[1])
        else:
            scripted.mode = failure
        session, store = open_session(remote_runtime(url, smol_tokenizer, timeout_s=1.0), tmp_path)
        reply = session.send("my precious question", session.sampling_params(seed=1))
        with pytest.raises(UserError) as raised:
            reply.run()
    message = str(raised.value)
    assert "\n" not in message and url in message
    expected = {"down": "cannot reach", "status 500": "answered 500: boom from the test server",
                "status 401": "answered 401", "stall": "sent nothing for 1 s",
                "cut": "ended the stream without finishing the reply"}[failure]
    assert expected in message
    user, assistant = store.active_branch(reply.conversation_id)
    assert user.content == "my precious question"
    assert assistant.status == "error"
    assert assistant.content == ("Hello there" if failure in ("stall", "cut") else "")


def test_the_cli_says_one_line_when_the_server_is_down_and_keeps_the_message(tmp_path, monkeypatch, capsys):
    from chatbot.cli import main
    from chatbot.store import Store

    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_DB", str(tmp_path / "chat.db"))
    monkeypatch.setenv("CHATBOT_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("CHATBOT_REMOTE_MODEL", "anything")
    with pytest.raises(SystemExit) as exited:
        main(["--engine", "openai", "ask", "hello out there"])
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("chatbot: error: cannot reach the model server at http://127.0.0.1:")
    with Store.open(str(tmp_path / "chat.db"), create=False) as store:
        user, assistant = store.active_branch(store.latest_conversation_id())
    assert user.content == "hello out there" and assistant.status == "error"


def test_the_api_key_comes_from_the_named_environment_variable_only(tmp_path, monkeypatch):
    from chatbot.config import Settings
    from chatbot.engine.openai_runtime import api_key

    monkeypatch.setenv("MY_SERVER_KEY", "k-123")
    assert api_key(Settings(api_key_env="MY_SERVER_KEY")) == "k-123"
    assert "k-123" not in Settings(api_key_env="MY_SERVER_KEY").model_dump_json()


def test_prompt_embeddings_are_sent_as_a_saved_tensor_of_the_soft_prompt_then_the_prompt(smol_tokenizer, tmp_path):
    """Where the server takes prompt embeddings, a soft prompt runs there: /v1/completions gets
    base64 of a torch.save'd [virtual + prompt, hidden] tensor. Checked from the archive's raw
    storage bytes: the test never unpickles what was sent."""
    from chatbot.engine.decoding import Prefix
    from chatbot.engine.prompt_embeds import PromptEmbedder
    from chatbot.personas.registry import find
    from chatbot.session import ChatSession
    from serve_helpers import write_soft_persona

    table = torch.randn(smol_tokenizer.vocab_size + 64, 64)
    settings = make_settings(tmp_path)
    write_soft_persona(settings.data_dir, "softy", hidden=64)
    with ScriptedServer() as scripted:
        session = ChatSession(remote_runtime(scripted.url, smol_tokenizer, embedder=PromptEmbedder(table)), settings,
                              find("softy", settings.data_dir))
        reply = session.send("hi there", session.sampling_params(seed=2))
        assert reply.run() == "Hello there"
    body = scripted.bodies[-1]
    assert body["seed"] == 2 and body["prompt"] == ""
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(body["prompt_embeds"])))
    storages = [n for n in archive.namelist() if "/data/" in n and not n.endswith(".pkl")]
    assert len(storages) == 1
    sent = torch.frombuffer(bytearray(archive.read(storages[0])), dtype=torch.float32).reshape(-1, 64)
    prefix = session.prefix()
    assert isinstance(prefix, Prefix)
    expected = torch.cat([prefix.embeddings, table[torch.tensor(reply.context.prompt_ids)]])
    assert torch.equal(sent, expected)
    assert reply.stats.prefix_tokens == 4


@pytest.mark.asyncio
async def test_the_chat_ui_streams_a_reply_from_the_server_and_stores_it(local_and_served, smol_tokenizer, tmp_path):
    """The real chat UI (Pilot) on the openai engine: a reply through `chatbot serve`, on screen
    and stored, with its speed in the status bar."""
    from tui_fakes import idle, make_app, wait_for

    local, url = local_and_served
    app = make_app(tmp_path, persona="pirate", open_runtime=lambda progress: remote_runtime(url, smol_tokenizer))
    screen = lambda: app.get_screen("chat")  # noqa: E731
    async with app.run_test(size=(110, 34)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        composer = screen().composer
        composer.focus()
        composer.text = "hello"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and len(screen().log_view.messages) == 2, timeout=120, what="reply")
        reply = screen().log_view.messages[-1]
        assert reply.role == "assistant" and reply.content.strip()
        assert screen().status.speed is not None
    with Store.open(str(tmp_path / "chat.db"), create=False) as store:
        stored = store.active_branch(store.latest_conversation_id())
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1].content == reply.content and stored[1].model == "tiny"
