"""Rendering history + persona and fitting it into the token budget."""

from chatbot.memory.context import ContextBuilder
from chatbot.memory.render import PlainRenderer, Turn
from chatbot.personas.schema import Persona

PIRATE = Persona(name="pirate", control_code="Always talk like a pirate.", placement="user")
SYSTEM_PIRATE = Persona(name="pirate", control_code="Always talk like a pirate.", placement="system")
PLAIN = Persona(name="assistant")


def history(n):
    return [Turn(f"question number {i} " + "word " * 20, f"answer number {i} " + "word " * 20) for i in range(n)]


def test_history_is_rendered_with_the_chat_template(smol_tokenizer):
    context = ContextBuilder(smol_tokenizer, budget=2048).build(PLAIN, history(2), "and now?")
    assert context.text.startswith("<|im_start|>system\n")
    assert "question number 0" in context.text and "answer number 1" in context.text
    assert context.text.endswith("<|im_start|>user\nand now?<|im_end|>\n<|im_start|>assistant\n")
    assert context.dropped_turns == 0 and context.total_turns == 3
    assert context.prompt_ids == smol_tokenizer(context.text, add_special_tokens=False)["input_ids"]


def test_control_code_placement(smol_tokenizer):
    in_user = ContextBuilder(smol_tokenizer).build(PIRATE, history(1), "hi").text
    assert "<|im_start|>user\nAlways talk like a pirate.\n\nhi<|im_end|>" in in_user
    assert in_user.count("pirate") == 1  # only the latest message carries it
    in_system = ContextBuilder(smol_tokenizer).build(SYSTEM_PIRATE, history(1), "hi").text
    assert in_system.startswith("<|im_start|>system\nAlways talk like a pirate.<|im_end|>")


def test_oldest_turns_are_dropped_first_and_the_persona_stays(smol_tokenizer):
    builder = ContextBuilder(smol_tokenizer, budget=300)
    context = builder.build(SYSTEM_PIRATE, history(12), "latest question")
    assert context.tokens <= 300
    assert context.dropped_turns > 0
    assert "question number 0 " not in context.text
    assert "answer number 11" in context.text and "latest question" in context.text
    assert "Always talk like a pirate." in context.text
    kept = [i for i in range(12) if f"question number {i} " in context.text]
    assert kept == list(range(context.dropped_turns, 12))  # whole turns, contiguous, newest kept


def test_the_window_moves_rarely(smol_tokenizer):
    builder = ContextBuilder(smol_tokenizer, budget=400)
    turns = history(6)
    starts = []
    for i in range(6, 14):
        context = builder.build(PLAIN, turns, f"message {i}")
        starts.append(context.dropped_turns)
        turns.append(Turn(f"message {i}", "short reply " * 10))
    # with a low-water mark the first kept turn changes less often than every turn
    changes = sum(1 for a, b in zip(starts, starts[1:]) if a != b)
    assert changes < len(starts) - 1
    assert all(b >= a for a, b in zip(starts, starts[1:]))


def test_an_overlong_message_is_cut_with_a_warning(smol_tokenizer):
    builder = ContextBuilder(smol_tokenizer, budget=200)
    context = builder.build(PIRATE, history(3), "blah " * 2000)
    assert context.tokens <= 200
    assert context.message_cut_to and context.warnings
    assert "Always talk like a pirate." in context.text
    assert context.dropped_turns == 3


def test_reserved_tokens_shrink_the_budget(smol_tokenizer):
    context = ContextBuilder(smol_tokenizer, budget=400).build(PLAIN, history(10), "q", reserved=150)
    assert context.tokens <= 250 and context.budget == 250


def test_plain_transcript_for_models_without_a_template(tiny_bpe_tokenizer):
    builder = ContextBuilder(tiny_bpe_tokenizer)
    assert isinstance(builder.renderer, PlainRenderer)
    context = builder.build(Persona(name="horror", control_code="Horror"), [Turn("hello", "hi")], "and?")
    assert context.text == "Horror\n\nUser: hello\nAssistant: hi\nUser: and?\nAssistant:"
    assert context.stops == ("\nUser:",)
