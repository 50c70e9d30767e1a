"""Incremental detokenization and stop strings: never a broken or duplicated character."""

from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot.engine.detokenize import IncrementalDetokenizer
from chatbot.engine.stopping import StopStringFilter

SAMPLES = [
    "Hello 🙂 world! 👩‍👩‍👧 family",
    "東京は日本の首都です。北京是中国的首都。",
    "Ünïcödé ça va? Ελληνικά — “quotes” and 🇫🇷 flags",
    "  leading spaces and\nnew\tlines  ",
]


def stream(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    return ids, deltas


def test_emoji_and_cjk_round_trip(smol_tokenizer):
    for text in SAMPLES:
        ids, deltas = stream(smol_tokenizer, text)
        assert "".join(deltas) == smol_tokenizer.decode(ids) == text
        assert all("\ufffd" not in d for d in deltas)
        if not text.isascii():  # some characters did span several tokens, and were held back
            assert len(ids) > len([d for d in deltas if d])


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_streams_to_its_decode(smol_tokenizer, text):
    ids, deltas = stream(smol_tokenizer, text)
    assert "".join(deltas) == smol_tokenizer.decode(ids)


def test_byte_level_bpe_without_template(tiny_bpe_tokenizer):
    text = "Paris is the capital 🙂 東京"
    ids, deltas = stream(tiny_bpe_tokenizer, text)
    assert "".join(deltas) == tiny_bpe_tokenizer.decode(ids) == text


def test_stop_string_split_over_deltas():
    stops = StopStringFilter(["\nUser:"])
    shown = [stops.feed(piece) for piece in ["Hi", " there\n", "Us", "er: more"]]
    assert "".join(shown) == "Hi there"
    assert stops.stopped


def test_partial_stop_string_is_released_at_the_end():
    stops = StopStringFilter(["\nUser:"])
    shown = stops.feed("Hello\nUs")
    assert shown == "Hello"
    assert stops.flush() == "\nUs"
    assert not stops.stopped


def test_no_stops_passes_through():
    stops = StopStringFilter([])
    assert stops.feed("a\nUser:") == "a\nUser:"
