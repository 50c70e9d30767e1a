"""Full-text search: ranked hits with snippets, kept in step with edits and deletes, any query safe."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import UsageError
from chatbot.store.search import fts_query
from chatbot.store.snippets import SNIPPET_TOKENS, make_snippet
from test_store_support import db_path, store  # noqa: F401


@pytest.fixture
def filled(store):
    a = store.new_conversation("fruit", "m")
    b = store.new_conversation("mixed", "m")
    u = store.add_user_message(a, "pineapple pineapple pineapple on pizza", None)
    store.add_user_message(b, "the weather today, and a pineapple later maybe, among many other words here", None)
    store.add_user_message(b, "C++ (templates) AND \"quotes\" NEAR: col:umn -minus *star", None)
    return store, a, b, u


def test_ranked_with_snippets(filled):
    store, a, b, u = filled
    hits = store.search("pineapple")
    assert [h.conversation_id for h in hits] == [a, b]  # denser match first
    first = hits[0]
    assert first.message_id == u and first.conversation_title == "fruit" and first.role == "user"
    assert all(first.snippet[s:e].lower() == "pineapple" for s, e in first.highlights)
    assert len(first.highlights) == 3


def test_all_words_must_match(filled):
    store, a, b, _ = filled
    assert [h.conversation_id for h in store.search("pineapple weather")] == [b]
    assert store.search("pineapple nothinglikethis") == []


@pytest.mark.parametrize(
    "query", ["0\x00", '"', '"unbalanced', "AND", "OR NOT", "NEAR(", "col:umn", "-minus", "*", "C++", "(templates)", "^x", "a*b"]
)
def test_query_syntax_is_taken_literally(filled, query):
    store, *_ = filled
    store.search(query)  # no crash is the point; words match as words
    assert store.search("NEAR:")[0].snippet.startswith("C++")


def test_empty_query_is_a_usage_error(store):
    with pytest.raises(UsageError):
        store.search("   ")


def test_index_follows_updates_and_deletes(store):
    c = store.new_conversation(None, "m")
    u = store.add_user_message(c, "hi", None)
    r = store.start_reply(c, u, None, {}, None, "m")
    store.update_reply(r, "draft about walruses")
    assert [h.message_id for h in store.search("walruses")] == [r]
    store.finish_reply(r, "final about narwhals", "complete", {})
    assert store.search("walruses") == []
    assert [h.message_id for h in store.search("narwhals")] == [r]
    store.delete_conversation(c)
    assert store.search("narwhals") == []


def test_unicode_words(store):
    c = store.new_conversation(None, "m")
    store.add_user_message(c, "Crème brûlée à Zürich — 東京", None)
    assert store.search("creme")[0].conversation_id == c  # diacritics folded
    assert store.search("Zürich")[0].conversation_id == c


def test_query_words_are_quoted():
    assert fts_query('say "hi"') == '"say" """hi"""'
    assert fts_query("((( ***") is None
    assert fts_query("0\x00x") == '"0" "x"'  # found by hypothesis: a NUL ended FTS5's query string


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(min_size=1, max_size=40))
def test_any_query_is_safe(filled, query):
    store, *_ = filled
    if not query.replace("\x00", " ").split():  # nothing to look for (a NUL reads as a space)
        with pytest.raises(UsageError, match="empty"):
            store.search(query)
    else:
        assert isinstance(store.search(query), list)


def test_substring_fallback_for_databases_without_fts5(filled):
    """What a non-SQLite database gets, run here on the same SQLite file."""
    from chatbot.store.search import _search_like

    store, a, b, u = filled
    like = lambda query: store._read(lambda s: _search_like(s, query, 20))  # noqa: E731
    hits = like("PINEAPPLE later")
    assert [h.conversation_id for h in hits] == [b]  # every word, any case
    hit = hits[0]
    assert hit.snippet[slice(*hit.highlights[0])].lower() == "pineapple"
    assert [h.message_id for h in like("pineapple")][-1] == u  # newest first
    assert like("pine%pizza") == [] and like("col_umn") == []  # LIKE's wildcards are plain text here
    assert [h.conversation_id for h in like("-minus *star")] == [b]
    with pytest.raises(UsageError):
        like("   ")


def test_a_message_of_a_hundred_thousand_hits(store):
    """A long paste of one repeated word: the right hit and passage (the time it takes is measured
    by `benchmarks.store_load`: FTS5's own snippet() was quadratic in a message's hits)."""
    c = store.new_conversation("paste", "m")
    big = store.add_user_message(c, "intro text, then " + "Echo " * 100_000 + "and the end", None)
    other = store.add_user_message(c, "one echo only", big)
    hits = store.search("echo")
    assert [h.message_id for h in hits] == [big, other]  # denser first (bm25)
    first = hits[0]
    assert first.snippet == "intro text, then " + " ".join(["Echo"] * (SNIPPET_TOKENS - 3)) + "…"
    assert [first.snippet[s:e] for s, e in first.highlights] == ["Echo"] * (SNIPPET_TOKENS - 3)
    assert store.search("echo end")[0].snippet.endswith("Echo Echo and the end")


@pytest.mark.parametrize(
    ("content", "words", "snippet", "marked"),
    [
        ("Crème brûlée à Zürich", ["creme", "ZURICH"], "Crème brûlée à Zürich", ["Crème", "Zürich"]),
        ("say don't, do not", ["don't"], "say don't, do not", ["don't"]),
        ("C++ (templates) AND x", ["(templates)"], "C++ (templates) AND x", ["templates"]),
        ("pineapples and pine", ["pine"], "pineapples and pine", ["pine"]),  # whole words only
        (" ".join(f"w{i}" for i in range(40)) + " target " + " ".join(f"v{i}" for i in range(40)), ["target"],
         "…w37 w38 w39 target v0 v1 v2 v3 v4 v5 v6 v7…", ["target"]),
        ("a b c d e f g h i j k l m n o p target", ["target"], "…f g h i j k l m n o p target", ["target"]),
        ("far apart: alpha " + "x " * 100 + "beta, then alpha beta together", ["alpha", "beta"],
         "…x x x x x x x beta, then alpha beta together", ["beta", "alpha", "beta"]),
    ],
)
def test_snippets(content, words, snippet, marked):
    got = make_snippet(content, words)
    assert got.text == snippet
    assert [got.text[s:e] for s, e in got.highlights] == marked
