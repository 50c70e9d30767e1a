"""Replies rendered as Markdown in the chat UI (Pilot, fake model, real SQLite): rendered while
they stream, code highlighted and copyable, links shown with their target and never opened, HTML
and control characters shown as text, what you typed shown as typed, the raw-text toggle (F7,
remembered), and the stored text exact throughout."""

from __future__ import annotations

import re
import threading

import pytest
from textual.containers import Horizontal
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownBullet, MarkdownBulletList, MarkdownOrderedList
from textual.widgets.markdown import MarkdownBlock, MarkdownFence
from tui_fakes import FakeEngine, idle, make_app, wait_for

from chatbot.store import Store
from chatbot.tui.preferences import Preferences
from chatbot.tui.widgets.reply_markdown import ReplyMarkdown, code_blocks

SIZE = (110, 40)

REPLY = (
    "Here is **strong** and `code`, a [docs](http://example.com/x) link, [bold]kept[/] and <b>tags</b> \x1b[31mred.\n\n"
    "```python\ndef f(x):\n    return x + 1\n```\n\n- one\n- two"
)


def chat(app):
    return app.get_screen("chat")


def screen_text(app) -> str:
    return "\n".join("".join(s.text for s in strip) for strip in app.screen._compositor.render_strips())


def last_reply(app):
    return chat(app).log_view.messages[-1]


def stored_branch(app):
    with Store.open(app.controller.settings.database_url()) as store:
        return store.active_branch(store.latest_conversation_id())


async def send(pilot, text: str) -> None:
    composer = chat(pilot.app).composer
    composer.text = text
    await pilot.press("enter")


@pytest.mark.asyncio
async def test_a_reply_is_rendered_and_what_you_typed_is_shown_as_typed(tmp_path):
    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: REPLY))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "**not bold** [bold]x[/] `y`")
        await wait_for(pilot, lambda: idle(app) and len(chat(app).log_view.messages) == 2)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "**not bold** [bold]x[/] `y`" in text  # the user's message: never rendered
        assert "Here is strong and code, a docs <http://example.com/x> link," in text
        assert "[bold]kept[/] and <b>tags</b> ␛[31mred." in text  # text, not markup, HTML or escapes
        rendered = text.split("Assistant", 1)[1]
        assert "**" not in rendered and "```" not in rendered
        assert "def f(x):" in text and "• one" in text
        fence = last_reply(app).query_one(MarkdownFence)
        assert fence.lexer == "python" and len(fence._highlighted_code.spans) > 2  # highlighted
        await pilot.press("ctrl+y")  # the code block, exactly
        assert app.clipboard == "def f(x):\n    return x + 1\n"
        await pilot.press("f5")  # the whole reply, exactly
        assert app.clipboard == last_reply(app).content
    user, reply = stored_branch(app)
    assert user.content == "**not bold** [bold]x[/] `y`"
    assert reply.content == REPLY


@pytest.mark.asyncio
async def test_a_reply_renders_while_it_streams(tmp_path):
    engine = FakeEngine(
        reply_for=lambda p: "# Title\n\nsome **strong** words and more words after them",
        gate=threading.Event(), gate_after=4,
    )
    app = make_app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "go")
        # Held after 4 tokens: the reply is half there and still streaming.
        await wait_for(pilot, lambda: last_reply(app).content == "# Title\n\nsome **strong**", what="half a reply")
        await wait_for(pilot, lambda: "some strong" in screen_text(app), what="rendered while streaming")
        assert chat(app).busy and last_reply(app).query("MarkdownH1")
        assert chat(app).composer.cursor_blink is False  # no blink repaints while it streams
        engine.gate.set()
        await wait_for(pilot, lambda: idle(app), what="reply end")
        await pilot.pause(0.2)
        assert chat(app).composer.cursor_blink is True  # as tui.toml says (the default)
        assert "some strong words and more words after them" in screen_text(app)
    assert stored_branch(app)[-1].content == "# Title\n\nsome **strong** words and more words after them"


@pytest.mark.asyncio
async def test_a_link_is_shown_and_not_opened(tmp_path, monkeypatch):
    opened = []
    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: "see [here](https://example.org/a?b=1) now"))
    monkeypatch.setattr(app, "open_url", lambda *a, **k: opened.append(a))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "link please")
        await wait_for(pilot, lambda: idle(app) and len(chat(app).log_view.messages) == 2)
        await pilot.pause(0.2)
        lines = screen_text(app).splitlines()
        row = next(i for i, line in enumerate(lines) if "see here <https://example.org/a?b=1> now" in line)
        await pilot.click(offset=(lines[row].index("here") + 1, row))
        await pilot.pause(0.3)
        assert opened == []
        assert any("Not opened: https://example.org/a?b=1" in n.message for n in app._notifications)


@pytest.mark.asyncio
async def test_raw_text_toggle_is_remembered(tmp_path):
    config = tmp_path / "tui.toml"
    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: "a **b** c"), prefs=Preferences(config))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "x")
        await wait_for(pilot, lambda: idle(app) and len(chat(app).log_view.messages) == 2)
        await pilot.pause(0.2)
        assert "a b c" in screen_text(app)
        await pilot.press("f7")
        await pilot.pause(0.2)
        assert "a **b** c" in screen_text(app) and not last_reply(app).query(Markdown)
    assert Preferences.load(config).markdown is False
    app = make_app(tmp_path, FakeEngine(reply_for=lambda p: "d **e** f"), prefs=Preferences.load(config), resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and chat(app).log_view.messages, what="resumed")
        await send(pilot, "y")
        await wait_for(pilot, lambda: idle(app) and len(chat(app).log_view.messages) == 4)
        await pilot.pause(0.2)
        assert "a **b** c" in screen_text(app) and "d **e** f" in screen_text(app)  # raw from the start
        await pilot.press("f7")
        await pilot.pause(0.2)
        assert "a b c" in screen_text(app) and "d e f" in screen_text(app)
        assert all(isinstance(m.query_one(".body"), ReplyMarkdown) for m in chat(app).log_view.messages
                   if m.role == "assistant")
    assert Preferences.load(config).markdown is True


def test_code_blocks_are_taken_exactly():
    text = "a\n\n```sh\nrm -rf /tmp/x  # two spaces\n```\n\n    indented\n"
    assert code_blocks(text) == ["rm -rf /tmp/x  # two spaces\n", "indented\n"]


def _rooms(view) -> list:
    body = view.query_one(".body")
    return [w for w in (body, *body.query("*")) if w.styles.min_height is not None]


@pytest.mark.asyncio
@pytest.mark.parametrize("markdown", [True, False], ids=["markdown", "raw"])
async def test_a_streaming_reply_grows_into_room_and_gives_it_back(tmp_path, markdown):
    """While a reply streams its body keeps room below the text: a line more moves nothing else
    (the log does not scroll, a Markdown reply's other blocks stay put); at its end the room goes."""
    words = " ".join(f"word{i}" for i in range(60))
    engine = FakeEngine(reply_for=lambda p: f"# Title\n\n{words}", gate=threading.Event(), gate_after=30)
    prefs = Preferences(tmp_path / "tui.toml")
    prefs.markdown = markdown
    app = make_app(tmp_path, engine, prefs=prefs)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "go")
        await wait_for(pilot, lambda: last_reply(app).content.endswith("word27"), what="half a reply")
        await pilot.pause(0.5)  # flushed and laid out
        view, log = last_reply(app), chat(app).log_view
        assert _rooms(view), "no room kept while streaming"
        before = (log.virtual_size.height, view.region, [b.region for b in view.query(".body > *")][:-1])
        view.push(" " + "more " * 25)  # a line and a half more
        await view.flush()
        await pilot.pause(0.3)
        assert (log.virtual_size.height, view.region, [b.region for b in view.query(".body > *")][:-1]) == before
        engine.gate.set()
        await wait_for(pilot, lambda: idle(app), what="reply end")
        await pilot.pause(0.2)
        assert _rooms(last_reply(app)) == []
        assert "word59" in screen_text(app) and "more more" not in screen_text(app)  # the reply as generated
    assert stored_branch(app)[-1].content == f"# Title\n\n{words}"


STREAMED = (
    "# Title\n\nA paragraph with **strong** words.\n\n- first item\n- second item that goes on\n  over two lines\n"
    "  - nested one\n  - nested two\n- third\n\n## Steps\n\n" + "".join(f"{n}. step {n}\n" for n in range(1, 12))
    + "\n```python\nprint(1)\n```\n\n> a quote\n\nThe end.\n"
)


def _tree(markdown: Markdown) -> list[tuple]:
    """What a rendered document is made of: each widget's kind, bullet, text and place, in order."""
    shown, origin = [], markdown.region.offset
    for widget in markdown.walk_children():
        symbol = widget.symbol if isinstance(widget, MarkdownBullet) else None
        text = widget._content.plain if isinstance(widget, MarkdownBlock) else None
        shown.append((type(widget).__name__, symbol, text, widget.region.offset - origin, widget.region.size))
    return shown


@pytest.mark.asyncio
async def test_a_reply_streamed_token_by_token_renders_as_the_whole_text_does_and_lists_grow_in_place():
    """Each token appended (Textual re-parses from the last block): the same blocks, bullets and
    text as the whole reply rendered at once; a growing list is the same widget throughout (not
    taken down and mounted again), its earlier items too."""
    from textual.app import App

    class Page(App):
        def compose(self):
            yield ReplyMarkdown("", id="streamed")

    tokens = re.findall(r"\s*\S+\s*", STREAMED)
    app = Page()
    async with app.run_test(size=(100, 200)) as pilot:
        streamed = app.query_one("#streamed", ReplyMarkdown)
        streamed.streaming = True
        text, first_list, first_item = "", None, None
        for token in tokens:
            text += token
            await streamed.grow(text)
            lists = streamed.query(MarkdownBulletList)
            if first_list is None and lists and len(lists.first().query(Horizontal)) >= 2:
                first_list, first_item = lists.first(), lists.first().query_one(Horizontal)
        streamed.end_stream()
        await app.mount(ReplyMarkdown(STREAMED, id="whole"))
        await pilot.pause(0.1)
        assert text == STREAMED
        assert _tree(streamed) == _tree(app.query_one("#whole", ReplyMarkdown))
        assert streamed.query(MarkdownBulletList).first() is first_list and first_item.is_attached
        assert first_list.query_one(Horizontal) is first_item
        assert [b.symbol for b in streamed.query(MarkdownOrderedList).first().query(MarkdownBullet)][8:10] == ["  9. ", " 10. "]


@pytest.mark.asyncio
async def test_a_streaming_markdown_reply_repaints_half_as_often_and_raw_text_at_the_raw_rate(tmp_path):
    """A Markdown frame costs about two raw ones: its frame cap is twice as long; F7 while the
    reply streams switches the rate with the look."""
    from chatbot.tui.widgets.chat_log import STREAM_REPAINT_MARKDOWN_S, STREAM_REPAINT_S

    engine = FakeEngine(reply_for=lambda p: "some **strong** words and more words", gate=threading.Event(), gate_after=3)
    app = make_app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await send(pilot, "go")
        await wait_for(pilot, lambda: last_reply(app).content == "some **strong** words", what="half a reply")
        view = last_reply(app)
        assert STREAM_REPAINT_MARKDOWN_S == 2 * STREAM_REPAINT_S
        assert view._timer._interval == STREAM_REPAINT_MARKDOWN_S
        await pilot.press("f7")
        await pilot.pause(0.2)
        assert view._timer._interval == STREAM_REPAINT_S and not view.query(Markdown)
        engine.gate.set()
        await wait_for(pilot, lambda: idle(app), what="reply end")
        await pilot.pause(0.3)
        assert view._timer is None and "some **strong** words and more words" in screen_text(app)
