"""A user's own GGUF file through the runtime and the CLI: the fast path when it can take the file
(chat template and stop tokens from the file's metadata), the reference path with one note when
it cannot, and one line on `--engine fast` then. Tiny random files written by the suite."""

from __future__ import annotations

import pytest
from cli_invoke import invoke_main
from gguf_tiny import stepped_and_prefilled, vocabulary, write_tiny_gguf

from chatbot.config import Settings
from chatbot.memory.context import ContextBuilder
from chatbot.personas.schema import Persona
from chatbot.runtime import open_runtime


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CHATBOT_DB", raising=False)

    return lambda *args: invoke_main(capsys, *args)


def test_chat_template_and_stop_tokens_come_from_the_file(tmp_path):
    path = write_tiny_gguf(tmp_path / "qwen2-chat.gguf", "qwen2", "Q4_K", eot=True)
    runtime = open_runtime(Settings(model=str(path), cache_dir=tmp_path / "cache"))
    tokens = vocabulary()[0]
    assert runtime.engine.name == "fast" and runtime.loaded.info.has_chat_template
    assert runtime.loaded.info.architecture == "Qwen2ForCausalLM"
    # EOS (<|im_end|>) and the file's end-of-turn id, here deliberately <|im_start|>
    assert {tokens.index("<|im_end|>"), tokens.index("<|im_start|>")} <= runtime.loaded.eos_token_ids
    prompt = ContextBuilder(runtime.tokenizer, budget=512).build(Persona(name="assistant"), [], "hi")
    assert "<|im_start|>user\nhi<|im_end|>" in prompt.text and prompt.text.endswith("<|im_start|>assistant\n")
    assert not list((tmp_path / "cache" / "models").glob("*/model.safetensors"))  # no fp32 conversion


def test_a_file_without_a_template_gets_the_plain_transcript(tmp_path):
    path = write_tiny_gguf(tmp_path / "plain.gguf", "llama", "Q8_0", template=False)
    runtime = open_runtime(Settings(model=str(path), cache_dir=tmp_path / "cache"))
    assert runtime.engine.name == "fast" and not runtime.loaded.info.has_chat_template
    prompt = ContextBuilder(runtime.tokenizer, budget=512).build(Persona(name="assistant"), [], "hi")
    assert "User: hi" in prompt.text and "<|im_start|>" not in prompt.text


def test_a_type_the_fast_path_cannot_take_falls_back_with_one_note(cli, tmp_path):
    path = str(write_tiny_gguf(tmp_path / "q3k.gguf", "llama", "Q4_K", kinds={"ffn_down": "Q3_K"}))
    code, out, err = cli("ask", "hi", "--model", path, "--max-new-tokens", "3", "--no-save", "--json")
    assert code == 0, err
    assert "Traceback" not in err and '"reply"' in out
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == ["note: q3k.gguf: blk.0.ffn_down.weight is Q3_K, which the fast engine cannot take; using the reference engine"]
    code, out, err = cli("model", "info", "--model", path, "--engine", "fast")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "chatbot: error: the fast engine cannot take q3k.gguf: blk.0.ffn_down.weight is Q3_K (use --engine auto or reference)"]


def test_an_architecture_nothing_here_runs_is_one_line(cli, tmp_path):
    """Neither the fast path nor transformers takes it: one line, not a traceback."""
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "no-such-arch")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    code, _, err = cli("ask", "hi", "--model", str(path))
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("chatbot: error: cannot load model")
    code, _, err = cli("ask", "hi", "--model", str(path), "--engine", "fast")
    assert (code, err.splitlines()) == (1, [
        "chatbot: error: the fast engine cannot take odd.gguf: architecture 'no-such-arch' (use --engine auto or reference)"])


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_decode_steps_compute_what_the_prefill_computes(arch, tmp_path):
    """Whatever runs a one-token step (the torch forward, or native kernels where they are
    chosen), it computes the architecture's own parts (Qwen2's QKV bias, Qwen3's Q/K norm): step
    by step, the logits of a prefill. Q4_0: a type every decode path takes."""
    path = write_tiny_gguf(tmp_path / f"{arch}.gguf", arch, "Q4_0", seed=2)
    engine = open_runtime(Settings(model=str(path), cache_dir=tmp_path / "cache")).engine
    stepped, prefilled = stepped_and_prefilled(engine, [5, 70, 100, 33, 200, 9])
    # measured: the torch step 2e-6 apart; native kernels on a Llama 0.016 (their bf16 rounding);
    # native kernels that leave Qwen2's bias or Qwen3's Q/K norm out: 0.13-0.14
    assert (stepped - prefilled).abs().max().item() < 0.05
