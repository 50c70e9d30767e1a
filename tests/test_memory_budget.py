"""The prompt always fits the model and always carries the user's message (issue 13: a budget
over the model's positions crashed the fast engine; a control code longer than the budget cut
the message to 0 tokens)."""

import json
import os

import pytest
from cli_invoke import run_like_subprocess

from chatbot.config import Settings
from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UsageError, UserError
from chatbot.memory.context import ContextBuilder
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.schema import Persona
from chatbot.session import ChatSession, prompt_budget

pytestmark = pytest.mark.slow


@pytest.fixture
def run(bundled_cli, monkeypatch):
    """`chatbot ARGS` in this process, over the session's bundled model."""
    return run_like_subprocess(bundled_cli, monkeypatch)


@pytest.fixture
def env(tmp_path, model_cache_dir):
    return {"CHATBOT_DATA_DIR": str(tmp_path / "data"), "CHATBOT_CACHE_DIR": str(model_cache_dir),
            "CHATBOT_DB": str(tmp_path / "chat.db")}


def add_persona(env, name, control_code):
    folder = os.path.join(env["CHATBOT_DATA_DIR"], "personas", name)
    os.makedirs(folder)
    with open(os.path.join(folder, "persona.toml"), "w") as f:
        f.write(f'name = "{name}"\ndisplay_name = "Huge"\ndescription = "d"\ncontrol_code = """{control_code}"""\n')


def test_a_budget_beyond_the_model_is_clamped_with_a_note(env, run):
    result = run(["ask", "hi", "--max-new-tokens", "4", "--temperature", "0", "--json"],
                 {**env, "CHATBOT_CONTEXT_BUDGET": "20000"})
    assert result.returncode == 0, result.stderr
    assert "chatbot: warning: the context budget of 20000 tokens is more than the model's context of 8192 " \
        "leaves beside 4 new tokens: using 8188" in result.stderr.splitlines()  # (a first run also says it repacks)
    assert json.loads(result.stdout)["reply"]


def test_a_prompt_never_exceeds_the_model_s_positions(tiny_runtime, isolated_settings, monkeypatch):
    """A message longer than the model's context (1024 positions here) under a budget of 20000:
    cut to what the model holds beside the reply, so the engine never sees too many positions."""
    monkeypatch.setenv("CHATBOT_CONTEXT_BUDGET", "20000")
    session = ChatSession(tiny_runtime, Settings(), InstalledPersona(Persona(name="assistant"), "shipped", None))
    params = SamplingParams(temperature=0, max_new_tokens=24)
    reply = session.send("word " * 2000, params)
    reply.run()
    assert reply.context.budget == 1000 and reply.context.tokens <= 1000
    assert reply.warnings[0].endswith("using 1000") and "your message was cut" in reply.warnings[1]
    assert reply.stats.new_tokens == 24  # the whole reply fits beside the prompt


def test_no_room_for_a_prompt_is_a_usage_error(env, run):
    result = run(["ask", "hi", "--max-new-tokens", "8192"], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "chatbot: error: max_new_tokens 8192 leaves no room for a prompt in the model's context of 8192 tokens")


def test_a_control_code_that_leaves_no_room_is_refused_and_nothing_is_stored(env, run):
    add_persona(env, "huge", "Talk like a pirate. " * 600)  # ~3000 tokens, budget 2048
    result = run(["ask", "What is the capital of France?", "-p", "huge"], env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("chatbot: error: persona 'huge' takes ") and "too little is left for your message" in line
    listed = run(["history", "list", "--json"], env)
    assert json.loads(listed.stdout or "[]") == []


def test_a_10_mb_control_code_is_refused_in_one_line(env, run):
    add_persona(env, "vast", "Talk like a pirate. " * 500_000)
    result = run(["ask", "hi", "-p", "vast"], env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "chatbot: error: persona 'vast' takes over 8192 of the context budget of 2048 tokens, too little is left "
        "for your message: shorten its control code or raise CHATBOT_CONTEXT_BUDGET")


def test_a_long_control_code_that_leaves_room_keeps_a_quarter_of_the_budget_for_the_message(smol_tokenizer):
    builder = ContextBuilder(smol_tokenizer, budget=2048)
    persona = Persona(name="long", control_code="Talk like a pirate. " * 250)  # ~1250 tokens
    context = builder.build(persona, [], "blah " * 3000)
    assert context.tokens <= 2048 and context.message_cut_to >= 512
    assert context.message and "Talk like a pirate." in context.text
    too_long = Persona(name="long", control_code="Talk like a pirate. " * 340)  # ~1700 tokens
    with pytest.raises(UserError, match="too little is left for your message"):
        builder.build(too_long, [], "blah " * 3000)
    assert builder.build(too_long, [], "hi").message == "hi"  # a short message still fits


def test_prompt_budget():
    assert prompt_budget(2048, 8192, 256) == (2048, None)
    assert prompt_budget(20000, 8192, 256)[0] == 7936
    with pytest.raises(UsageError):
        prompt_budget(2048, 8192, 8192)
