"""An empty reply (a kill or Esc before the first token) is not a turn the model sees
(issue 13: after 20 of them every later reply was empty). The user's message before it stays."""

import threading

import pytest
from jinja2.exceptions import TemplateError

from chatbot.engine.sampling import SamplingParams
from chatbot.engine.standalone_tokenizer import StandaloneTokenizer
from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import Turn
from chatbot.personas.registry import InstalledPersona
from chatbot.personas.schema import Persona
from chatbot.session import ChatSession
from chatbot.store import Store

GREEDY = SamplingParams(temperature=0, repetition_penalty=1.0, max_new_tokens=8)
PLAIN = Persona(name="assistant")
EMPTY_ASSISTANT_TURN = "<|im_start|>assistant\n<|im_end|>"


@pytest.fixture
def runtime(tiny_runtime):
    return tiny_runtime


def test_replies_cancelled_before_their_first_token_stay_out_of_the_prompt(runtime, isolated_settings):
    with Store.open(isolated_settings.database_url()) as store:
        session = ChatSession(runtime, isolated_settings, InstalledPersona(PLAIN, "shipped", None), store)
        for i in range(3):
            cancelled = threading.Event()
            cancelled.set()  # Esc before the first token
            reply = session.send(f"question {i}", GREEDY, cancelled)
            reply.run()
            assert (reply.status, reply.text) == ("interrupted", "")
        live = session.context_for("question 3")
        reloaded = ChatSession(runtime, isolated_settings, InstalledPersona(PLAIN, "shipped", None), store,
                               session.conversation_id).context_for("question 3")
    for context in (live, reloaded):
        assert EMPTY_ASSISTANT_TURN not in context.text
        assert context.text.count("<|im_start|>assistant\n") == 1  # only the turn being answered
        for i in range(4):  # every question still reaches the model, each as a user message
            assert f"<|im_start|>user\nquestion {i}<|im_end|>" in context.text
    assert live.prompt_ids == reloaded.prompt_ids


def test_a_template_that_wants_alternating_roles_gets_unanswered_messages_joined(bundled_fp32):
    strict = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tokenizer = StandaloneTokenizer.open(bundled_fp32.info.cache_path)
    tokenizer = StandaloneTokenizer(tokenizer._tokenizer, tokenizer._config, strict)
    with pytest.raises(TemplateError):
        tokenizer.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tokenize=False)
    context = ContextBuilder(tokenizer).build(PLAIN, [Turn("one", "1"), Turn("lost", "")], "two")
    assert context.text == "[user]one<|im_end|>[assistant]1<|im_end|>[user]lost\n\ntwo<|im_end|>[assistant]"


def test_a_plain_transcript_skips_empty_replies(tiny_bpe_tokenizer):
    context = ContextBuilder(tiny_bpe_tokenizer).build(PLAIN, [Turn("hello", " "), Turn("there", "hi")], "and?")
    assert context.text == "User: hello\nUser: there\nAssistant: hi\nUser: and?\nAssistant:"
