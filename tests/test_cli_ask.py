"""`chatbot ask`, `chatbot chat --plain` and `chatbot model info` as a user runs them."""

import json
import os
import subprocess
import sys

import pytest
from cli_invoke import run_like_subprocess


def run_process(args, env_dirs, stdin=None):
    env = {**os.environ, **env_dirs, "TQDM_DISABLE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chatbot", *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def env_dirs(tmp_path, model_cache_dir):
    return {
        "CHATBOT_DATA_DIR": str(tmp_path / "data"),
        "CHATBOT_CACHE_DIR": str(model_cache_dir),
        "CHATBOT_DB": str(tmp_path / "chat.db"),
    }


@pytest.fixture
def run(bundled_cli, monkeypatch):
    """`chatbot ARGS` in this process, over the session's bundled model: what the commands do is
    the point here; the process itself is tested by run_process (a fresh one gives the same reply)
    and the Ctrl+C test."""
    return run_like_subprocess(bundled_cli, monkeypatch)


def test_ask_json_reply_and_stats(env_dirs, run):
    result = run(["ask", "What is the capital of France?", "--temperature", "0", "--json"], env_dirs)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert "Paris" in payload["reply"]
    assert payload["persona"] == "assistant"
    assert isinstance(payload["conversation_id"], int)
    assert set(payload["stats"]) >= {"prompt_tokens", "reused_tokens", "new_tokens", "ttft_ms", "tokens_per_s"}
    assert payload["stats"]["new_tokens"] > 0


def test_ask_streams_and_continue_remembers(env_dirs, run):
    first = run(["ask", "The secret word is PINEAPPLE. Say OK.", "--temperature", "0"], env_dirs)
    assert first.returncode == 0, first.stderr
    second = run(["ask", "What is the secret word?", "--continue", "--temperature", "0", "--verbose"], env_dirs)
    assert second.returncode == 0, second.stderr
    assert "PINEAPPLE" in second.stdout.upper()
    assert "tok/s" in second.stderr


def test_same_seed_same_reply(env_dirs, run):
    args = ["ask", "Tell me a short story about a cat.", "--seed", "11", "--max-new-tokens", "24", "--no-save"]
    # a fresh process and this one (the session's model, after other replies) give the same reply
    assert run_process(args, env_dirs).stdout == run(args, env_dirs).stdout


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "hi", "--temperature", "-1"],
        ["ask", "hi", "--top-p", "0"],
        ["ask", "hi", "--top-p", "1.5"],
        ["ask", "hi", "--top-k", "-2"],
        ["ask", "hi", "--max-new-tokens", "0"],
        ["ask", "   "],
        ["ask"],
        ["ask", "hi", "--temperature", "warm"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(env_dirs, run, args):
    result = run(args, env_dirs)
    assert result.returncode == 2
    assert result.stderr.startswith("chatbot: error:") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_missing_things_exit_1(env_dirs, run, tmp_path):
    for args in (["--model", str(tmp_path / "none.gguf"), "ask", "hi"], ["ask", "hi", "--persona", "nobody"]):
        result = run(args, env_dirs)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("chatbot: error:") and "Traceback" not in result.stderr


def test_plain_chat_in_a_pipe_keeps_memory(env_dirs, run):
    stdin = "My name is Zorblax. Say hello.\n\nWhat is my name?\n"
    result = run(["chat", "--plain", "--temperature", "0", "--max-new-tokens", "40"], env_dirs, stdin=stdin)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2
    assert "Zorblax" in result.stdout.split("\n", 1)[1]
    assert "empty message" in result.stderr


def test_model_info_json(env_dirs, run):
    result = run(["model", "info", "--json"], env_dirs)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["context_length"] == 8192
    assert info["source_kind"] == "bundled gguf" and info["cache_path"]


def _interrupt_after_output(args, env_dirs, stdout_bytes=20):
    """Start `chatbot ARGS`, send SIGINT (a Ctrl+C) once it has printed `stdout_bytes` bytes."""
    import select
    import signal

    env = {**os.environ, **env_dirs, "TQDM_DISABLE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    printed = b""
    while len(printed) < stdout_bytes and process.poll() is None:
        if select.select([process.stdout], [], [], 1.0)[0]:
            printed += os.read(process.stdout.fileno(), 4096)
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=120)
    return process.returncode, (printed + rest).decode(), err.decode()


def test_ctrl_c_exits_130_and_keeps_the_partial_reply(env_dirs, bundled_runtime):
    from chatbot.store import Store

    story = ["ask", "Tell me a very long story about a dragon.", "--temperature", "0", "--max-new-tokens", "600"]
    code, out, err = _interrupt_after_output(story, env_dirs)
    assert code == 130, err
    assert err.splitlines() == ["chatbot: error: interrupted: the reply so far is saved as message 2, marked interrupted"]
    with Store.open(f"sqlite:///{env_dirs['CHATBOT_DB']}") as store:
        reply = store.active_branch(store.latest_conversation_id())[-1]
    assert reply.status == "interrupted"
    assert reply.content and out == reply.content + "\n"  # all that was printed, and only that


def test_ask_jsonl_streams_one_event_per_delta_then_done(env_dirs, run):
    from chatbot.store import Store

    result = run(["ask", "Name three colours.", "--temperature", "0", "--max-new-tokens", "16", "--jsonl"], env_dirs)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    *deltas, done = events
    assert len(deltas) > 1 and all(e["type"] == "delta" and set(e) == {"type", "text"} for e in deltas)
    assert done["type"] == "done" and done["status"] == "complete" and done["persona"] == "assistant"
    assert "".join(e["text"] for e in deltas) == done["reply"]
    assert done["stats"]["new_tokens"] > 0 and set(done["stats"]) >= {"ttft_ms", "tokens_per_s", "prompt_tokens"}
    with Store.open(f"sqlite:///{env_dirs['CHATBOT_DB']}") as store:
        reply = store.active_branch(done["conversation_id"])[-1]
    assert reply.id == done["message_id"] and reply.content == done["reply"]


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "hi", "--json", "--jsonl"],
        ["chat", "--plain", "--top-k", "-2"],
        ["chat", "--plain", "--top-p", "1.5"],
        ["chat", "--plain", "--repetition-penalty", "0"],
    ],
)
def test_bad_streaming_and_plain_chat_options_are_one_line_and_exit_2(env_dirs, run, args):
    result = run(args, env_dirs, stdin="hi\n")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("chatbot: error:") and result.stderr.count("\n") == 1
    assert "no such option" not in result.stderr.lower()  # refused as a value, so the option exists


def test_plain_chat_takes_the_sampling_options_of_ask(env_dirs, run):
    from chatbot.store import Store

    args = ["chat", "--plain", "--temperature", "0.5", "--top-p", "0.5", "--top-k", "3", "--repetition-penalty", "1.0",
            "--max-new-tokens", "4", "--seed", "7"]
    result = run(args, env_dirs, stdin="Hello there.\n")
    assert result.returncode == 0, result.stderr
    with Store.open(f"sqlite:///{env_dirs['CHATBOT_DB']}") as store:
        reply = store.active_branch(store.latest_conversation_id())[-1]
    assert {k: reply.settings[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens")} == {
        "temperature": 0.5, "top_p": 0.5, "top_k": 3, "repetition_penalty": 1.0, "max_new_tokens": 4,
    }
    assert reply.seed == 7


def test_ask_continuing_a_conversation_keeps_its_own_settings_and_options_win(env_dirs, run):
    """Settings kept with a conversation (the TUI's settings panel) apply when `ask` continues it."""
    from chatbot.store import Store

    url = f"sqlite:///{env_dirs['CHATBOT_DB']}"
    first = run(["ask", "Say hello.", "--temperature", "0", "--max-new-tokens", "4"], env_dirs)
    assert first.returncode == 0, first.stderr
    with Store.open(url) as store:
        cid = store.latest_conversation_id()
        store.set_conversation_settings(cid, {"max_new_tokens": 3, "top_k": 7, "temperature": 0.0})
    second = run(["ask", "Again.", "--continue", "--json"], env_dirs)
    third = run(["ask", "Once more.", "--continue", "--json", "--max-new-tokens", "5"], env_dirs)
    assert second.returncode == 0 and third.returncode == 0, second.stderr + third.stderr
    with Store.open(url) as store:
        replies = [m for m in store.active_branch(cid) if m.role == "assistant"]
    assert [(m.settings["max_new_tokens"], m.settings["top_k"]) for m in replies] == [(4, 50), (3, 7), (5, 7)]
    assert json.loads(second.stdout)["stats"]["new_tokens"] <= 3
