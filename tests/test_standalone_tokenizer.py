"""The tokenizer the fast path opens without transformers equals `AutoTokenizer` on the bundled
model: ids, text, chat template, special ids, and the prompts the context builder makes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.engine.standalone_tokenizer import StandaloneTokenizer
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.schema import Persona

pytestmark = pytest.mark.slow

TEXTS = [
    "Hello, world!",
    "  leading and trailing spaces  ",
    "line one\nline two\n\n\ttabbed",
    "東京は日本の首都です。 🙂 naïve café",
    "[bold]markup[/] and \x1b[31mANSI\x1b[0m and <|im_end|> typed by a user",
    "don't, won't, it's -- \"quoted\" (parens) 3.14 1,000",
    "",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three 🙂"}],
]


@pytest.fixture(scope="module")
def pair(bundled_fp32):
    standalone = StandaloneTokenizer.open(bundled_fp32.info.cache_path)
    assert standalone is not None
    return standalone, bundled_fp32.tokenizer


def test_ids_and_text_equal_transformers(pair):
    ours, theirs = pair
    for text in TEXTS:
        for special in (False, True):
            ids = ours(text, add_special_tokens=special)["input_ids"]
            assert ids == theirs(text, add_special_tokens=special)["input_ids"], text
        ids = theirs(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False) == theirs.decode(
                ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False)


def test_chat_template_and_special_ids_equal_transformers(pair):
    ours, theirs = pair
    for messages in CONVERSATIONS:
        for open_turn in (False, True):
            assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn) == \
                theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)
    assert (ours.eos_token_id, ours.pad_token_id, ours.bos_token_id) == (
        theirs.eos_token_id, theirs.pad_token_id, theirs.bos_token_id)
    assert ours.get_vocab() == theirs.get_vocab()


def test_context_builder_makes_the_same_prompt(pair):
    ours, theirs = pair
    persona = Persona(name="pirate", control_code="Talk like a pirate.", placement="user")
    history = [Turn("Hello there", "Arr, hello!"), Turn("What is 2+2?", "Four, matey.")]
    for tokenizer_budget in (2048, 64):  # the second drops turns and cuts the message
        a = ContextBuilder(ours, tokenizer_budget).build(persona, history, "Tell me a long story " * 20)
        b = ContextBuilder(theirs, tokenizer_budget).build(persona, history, "Tell me a long story " * 20)
        assert tokenizer_budget == 2048 or a.message_cut_to
        assert (a.text, a.prompt_ids, a.dropped_turns) == (b.text, b.prompt_ids, b.dropped_turns)


def test_folders_it_cannot_serve_exactly_are_left_to_transformers(tmp_path, bundled_fp32):
    assert StandaloneTokenizer.open(tmp_path) is None  # no tokenizer files at all
    folder = tmp_path / "tagged"
    folder.mkdir()
    source = bundled_fp32.info.cache_path
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((Path(source) / name).read_bytes())
    (folder / "chat_template.jinja").write_text("{% generation %}{{ messages[0].content }}{% endgeneration %}")
    assert StandaloneTokenizer.open(folder) is None  # transformers' own template tag


def test_ask_on_the_fast_path_never_imports_transformers(isolated_settings, bundled_fp32):
    script = (
        "import sys\n"
        "from chatbot.cli import main\n"
        "code = main(['ask', '--max-new-tokens', '4', '--temperature', '0', 'Hi'])\n"
        "print('TRANSFORMERS' if any(m == 'transformers' or m.startswith('transformers.') for m in sys.modules) else 'CLEAN')\n"
        "raise SystemExit(code)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    *reply, marker = out.stdout.strip().splitlines()
    assert marker == "CLEAN" and "".join(reply).strip()  # a reply, then the check
