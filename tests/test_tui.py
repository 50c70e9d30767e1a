"""The chat UI driven like a person would (Textual Pilot), over a fast fake model and a real
SQLite file: send, stream, store; cancel; regenerate and siblings; edit; personas; old
conversations and their memory; replay; search; literal text; dialogs; config."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console
from tui_fakes import FakeEngine, idle, make_app, make_settings, seed_conversation, wait_for

from chatbot.store import Store
from chatbot.tui.keys import KEYS
from chatbot.tui.preferences import Preferences
from chatbot.tui.widgets.chat_log import MessageView
from chatbot.tui.widgets.replay import ReplayScreen

pytestmark = pytest.mark.asyncio
SIZE = (110, 34)


def chat(app):
    return app.get_screen("chat")


def shown(app) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in chat(app).log_view.messages]


def body_text(view: MessageView) -> str:
    """The text a message shows: a reply rendered as Markdown, its blocks' text."""
    body = view.query_one(".body")
    if body.query("MarkdownBlock"):
        return "\n".join(str(block.render()) for block in body.query("MarkdownBlock"))
    return str(body.render())


def header_text(view: MessageView) -> str:
    return str(view.query_one(".header").render())


async def type_and_send(pilot, text: str) -> None:
    composer = chat(pilot.app).composer
    composer.focus()
    composer.text = text
    await pilot.press("enter")


def branch(settings, cid=None):
    with Store.open(settings.database_url()) as store:
        cid = cid or store.latest_conversation_id()
        return store.active_branch(cid)


async def test_send_streams_reply_and_stores_it(tmp_path):
    engine = FakeEngine(delay_s=0.02, reply_for=lambda p: "one two three four five six seven eight nine ten",
                        gate=threading.Event(), gate_after=3)
    app = make_app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await pilot.press(*"hello")
        await pilot.press("enter")
        # Held after 3 tokens: the reply is on screen in part, still streaming.
        await wait_for(pilot, lambda: chat(app).log_view.messages[-1].content == "one two three", what="partial reply")
        assert chat(app).streaming is not None and chat(app).busy
        engine.gate.set()
        await wait_for(pilot, lambda: not chat(app).busy, what="reply end")
        assert shown(app) == [("user", "hello"), ("assistant", "one two three four five six seven eight nine ten")]
        status = chat(app).status
        assert status.speed is not None and status.context is not None and status.model == "fake-model"
    stored = branch(app.controller.settings)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "hello", "complete"),
        ("assistant", "one two three four five six seven eight nine ten", "complete"),
    ]
    assert stored[1].stats["new_tokens"] == 10


async def test_message_typed_while_loading_is_sent_when_ready(tmp_path):
    gate = threading.Event()
    app = make_app(tmp_path, runtime_gate=gate)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert not chat(app).controller.ready
        await type_and_send(pilot, "early bird")
        await pilot.pause(0.1)
        assert "waiting for the model" in header_text(chat(app).log_view.messages[-1])
        assert app.fake_runtime.engine.calls == 0
        gate.set()
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2, what="queued send")
        assert shown(app) == [("user", "early bird"), ("assistant", "You said: early bird")]


async def test_escape_cancels_and_keeps_the_partial_reply(tmp_path):
    engine = FakeEngine(delay_s=0.05, reply_for=lambda p: " ".join(f"w{i}" for i in range(200)))
    app = make_app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "talk a lot")
        await wait_for(pilot, lambda: len(chat(app).log_view.messages[-1].content) > 6, what="some text")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not chat(app).busy, what="cancel")
        last = chat(app).log_view.messages[-1]
        assert last.status == "interrupted" and "[interrupted]" in header_text(last)
        kept = last.content
    stored = branch(app.controller.settings)[-1]
    assert stored.status == "interrupted"
    assert stored.content == kept and kept.startswith("w0 w1") and len(kept.split()) < 200


async def test_regenerate_makes_a_sibling_and_siblings_can_be_browsed(tmp_path):
    counter = iter(range(1, 100))
    engine = FakeEngine(reply_for=lambda p: f"answer {next(counter)}")
    app = make_app(tmp_path, engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "question")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: idle(app) and shown(app)[-1] == ("assistant", "answer 2"), what="regenerate")
        reply = chat(app).log_view.messages[-1]
        assert reply.sibling_pos == (2, 2) and "2/2" in header_text(reply)
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: shown(app)[-1] == ("assistant", "answer 1"), what="previous sibling")
        assert chat(app).log_view.messages[-1].sibling_pos == (1, 2)
        # the conversation goes on from the branch shown
        await type_and_send(pilot, "and then?")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 4)
        assert "answer 1" in engine.prompts[-1] and "answer 2" not in engine.prompts[-1]
        await pilot.press("alt+up", "alt+up")  # select the first reply, then go to its sibling
        await pilot.press("alt+right")
        await wait_for(pilot, lambda: shown(app)[-1] == ("assistant", "answer 2"), what="next sibling")
        assert len(shown(app)) == 2
    settings = app.controller.settings
    with Store.open(settings.database_url()) as store:
        record = store.conversation(store.latest_conversation_id())
    user = [m for m in record.messages if m.role == "user"]
    assert len(user) == 2, "regenerate must not store the question again"
    replies = [m for m in record.messages if m.parent_id == user[0].id]
    assert [m.content for m in replies] == ["answer 1", "answer 2"]


async def test_edit_and_resend_makes_a_new_branch(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "frist try")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("f4")
        assert chat(app).composer.text == "frist try" and chat(app).editing is not None
        chat(app).composer.text = "first try"
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and shown(app)[-1] == ("assistant", "You said: first try"))
        assert shown(app) == [("user", "first try"), ("assistant", "You said: first try")]
        assert chat(app).log_view.messages[0].sibling_pos == (2, 2)
    with Store.open(app.controller.settings.database_url()) as store:
        record = store.conversation(store.latest_conversation_id())
    roots = [m.content for m in record.messages if m.parent_id is None]
    assert roots == ["frist try", "first try"]


async def test_copy_puts_the_selected_or_last_message_on_the_clipboard(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f5")
        assert app.clipboard == ""  # nothing yet: a notice, not an error
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "copy [b]this[/b]\n  exactly")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("f5")
        assert app.clipboard == "You said: copy [b]this[/b]\n  exactly"
        await pilot.press("alt+up")
        await pilot.press("f5")
        assert app.clipboard == "copy [b]this[/b]\n  exactly"
        await pilot.press("alt+down", "ctrl+p")  # the same from the command palette
        await pilot.pause(0.2)
        await pilot.press(*"Copy message")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.clipboard.startswith("You said"), what="palette copy")


async def test_every_palette_entry_is_an_action_of_the_chat_screen():
    from chatbot.tui.commands import ACTIONS
    from chatbot.tui.screen import ChatScreen

    missing = [action for _label, action, _help in ACTIONS if not callable(getattr(ChatScreen, f"action_{action}", None))]
    assert missing == []


async def test_conversation_list_follows_the_width_until_toggled(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause(0.1)
        sidebar = chat(app).sidebar
        assert not sidebar.display  # narrow: the conversation gets the whole width
        await pilot.resize_terminal(*SIZE)
        await pilot.pause(0.1)
        assert sidebar.display
        await pilot.resize_terminal(60, 20)
        await pilot.pause(0.1)
        assert not sidebar.display
        await pilot.press("ctrl+b")  # the user's choice holds from then on
        await pilot.resize_terminal(61, 20)
        await pilot.pause(0.1)
        assert sidebar.display
        await pilot.press("ctrl+b")
        await pilot.resize_terminal(*SIZE)
        await pilot.pause(0.1)
        assert not sidebar.display
    app = make_app(tmp_path)
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause(0.1)
        await pilot.press("ctrl+f")  # search shows the list: that too is the user's choice
        await pilot.resize_terminal(59, 20)
        await pilot.pause(0.1)
        assert chat(app).sidebar.display


async def test_switch_persona_from_picker_and_palette(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "hi")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("f2")
        await pilot.pause(0.1)
        options = app.screen.query_one("#personas")
        options.highlighted = options.get_option_index("pirate")
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert app.controller.persona.persona.name == "pirate"
        events = [str(e.render()) for e in chat(app).log_view.query(".event")]
        assert any("persona: Pirate" in e for e in events)
        assert chat(app).status.persona == "Pirate"
        await type_and_send(pilot, "ahoy")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 4)
        assert "Talk like a pirate." in app.fake_runtime.engine.prompts[-1]
        reply = chat(app).log_view.messages[-1]
        assert reply.label == "Pirate" and reply.color == "red"
        # back to the assistant through the command palette
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Persona: Assistant")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.controller.persona.persona.name == "assistant", what="palette switch")
    stored = branch(app.controller.settings)
    assert [m.persona.name for m in stored if m.role == "assistant"] == ["assistant", "pirate"]
    with Store.open(app.controller.settings.database_url()) as store:
        switches = store.conversation(stored[0].conversation_id).persona_switches
    assert [s.persona.name for s in switches] == ["pirate", "assistant"]


async def test_open_old_conversation_and_continue_with_its_memory(tmp_path):
    settings = make_settings(tmp_path)
    old = seed_conversation(settings, [("The secret word is PINEAPPLE. Say OK.", "OK.")], title="secret")
    seed_conversation(settings, [("something else", "sure")], title="other")
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        assert shown(app) == []
        items = list(chat(app).sidebar.query("ConversationItem"))
        assert [i.title for i in items] == ["other", "secret"]
        listing = chat(app).sidebar.query_one("#conversations")
        listing.focus()
        listing.index = 1
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(shown(app)) == 2, what="open")
        assert shown(app)[0] == ("user", "The secret word is PINEAPPLE. Say OK.")
        await type_and_send(pilot, "What is the secret word?")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 4)
        assert shown(app)[-1] == ("assistant", "The secret word is PINEAPPLE.")
    assert len(branch(settings, old)) == 4


async def test_resume_last_on_the_command_line(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("first", "one")])
    seed_conversation(settings, [("second", "two")])
    app = make_app(tmp_path, settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(shown(app)) == 2, what="resume")
        assert shown(app) == [("user", "second"), ("assistant", "two")]


async def test_persona_on_the_command_line_wins_over_the_resumed_conversations(tmp_path):
    """`chatbot --resume --persona pirate`: go on as the pirate, a switch recorded, as `ask
    --continue --persona pirate` does; without --persona the conversation keeps its own."""
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("first", "one")])
    app = make_app(tmp_path, settings=settings, resume="last", persona="pirate", command_line_persona="pirate")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2, what="resume")
        assert app.controller.persona.persona.name == "pirate" and chat(app).status.persona == "Pirate"
        await type_and_send(pilot, "ahoy")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 4)
    stored = branch(settings)
    assert [m.persona.name for m in stored if m.role == "assistant"] == ["assistant", "pirate"]
    with Store.open(settings.database_url()) as store:
        switches = store.conversation(stored[0].conversation_id).persona_switches
    assert [s.persona.name for s in switches] == ["pirate"]
    # the same start without --persona goes on with the conversation's last persona
    app = make_app(tmp_path, settings=settings, resume="last", persona="assistant")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 4, what="resume")
        assert app.controller.persona.persona.name == "pirate"


async def test_persona_on_the_command_line_applies_only_to_the_start(tmp_path):
    """Opening another conversation later goes on with its own persona; Ctrl+N keeps the current."""
    settings = make_settings(tmp_path)
    other = seed_conversation(settings, [("older", "written by the assistant")], title="older")
    seed_conversation(settings, [("newest", "fine")], title="newest")
    app = make_app(tmp_path, settings=settings, resume="last", persona="pirate", command_line_persona="pirate")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and app.controller.persona.persona.name == "pirate", what="resume")
        await chat(app).open_conversation(other)
        await pilot.pause(0.1)
        assert app.controller.conversation_id == other and app.controller.persona.persona.name == "assistant"
        chat(app).switch_persona("pirate")
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert app.controller.conversation_id is None and app.controller.persona.persona.name == "pirate"


async def test_context_use_shows_as_soon_as_a_conversation_opens(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("a question " * 20, "an answer " * 30)])
    app = make_app(tmp_path, settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app) and chat(app).status.context is not None, what="context")
        used, budget, dropped = chat(app).status.context
        assert used == app.controller.session.context_for("").tokens and used > 50
        assert budget == settings.context_budget and dropped == 0
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert chat(app).status.context is None  # nothing to hold yet


async def test_resume_last_with_nothing_saved_starts_a_new_conversation(tmp_path):
    app = make_app(tmp_path, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "first ever")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
    assert app.fatal is None and [m.content for m in branch(app.controller.settings)][0] == "first ever"


async def test_until_the_settings_are_read_keys_needing_them_wait_and_a_message_is_kept(tmp_path):
    """`chatbot` on a terminal reads its settings and personas behind the first frame
    (cli/tui_start.py, `prepare`): until they are there, F2 and F9 do nothing (they are shown
    disabled), a message sent waits; then the persona shows and everything works."""
    from chatbot.tui.app import ChatApp
    from chatbot.tui.widgets.dialogs import PersonaPicker

    made = make_app(tmp_path)  # what `prepare` makes behind the first frame
    gate = threading.Event()

    def prepare(app):
        gate.wait(10)
        app.open_store, app.open_runtime = made.open_store, made.open_runtime
        return made.controller

    app = ChatApp(None, None, None, Preferences(tmp_path / "tui.toml"), prepare=prepare)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        screen = chat(app)
        assert screen.controller is None and screen.status.persona == ""
        await pilot.press("f2", "f9")
        assert app.screen is screen
        await type_and_send(pilot, "early bird")
        gate.set()
        await wait_for(pilot, lambda: screen.controller is not None and idle(app) and len(shown(app)) == 2, what="reply")
        assert shown(app) == [("user", "early bird"), ("assistant", "You said: early bird")]
        assert screen.status.persona == made.controller.persona.persona.title
        await pilot.press("f2")
        assert isinstance(app.screen, PersonaPicker)


async def test_resume_unknown_id_ends_with_one_line_error(tmp_path):
    app = make_app(tmp_path, resume="999")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.fatal is not None, what="fatal")
    assert "999" in str(app.fatal)


async def test_replay_plays_back_with_pause_and_skip(tmp_path):
    settings = make_settings(tmp_path)
    slow = {"new_tokens": 40, "tokens_per_s": 10.0, "ttft_ms": 100.0}  # 4 s a reply at speed 1
    reply = " ".join(f"word{i}" for i in range(40))
    seed_conversation(settings, [("tell me", reply), ("more", "fine")], stats=slow)
    app = make_app(tmp_path, settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(shown(app)) == 4, what="resume")
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, ReplayScreen), what="replay screen")
        replay = app.screen
        log = replay.query_one("#replay-log")
        await wait_for(pilot, lambda: len(log.messages) == 2 and log.messages[1].content, what="first words")
        await pilot.press("space")
        assert replay.paused
        await pilot.pause(0.3)
        frozen = log.messages[1].content
        await pilot.pause(0.3)
        assert log.messages[1].content == frozen and frozen != reply
        await pilot.press("space", "s")
        await wait_for(pilot, lambda: log.messages[1].content == reply, what="skip")
        await pilot.press("plus", "plus", "plus", "plus")
        await wait_for(pilot, lambda: replay.finished, timeout=15, what="end of replay")
        assert [(m.role, m.content) for m in log.messages] == [
            ("user", "tell me"), ("assistant", reply), ("user", "more"), ("assistant", "fine"),
        ]
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is chat(app), what="back")


async def test_search_finds_conversations_by_message_text(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("I like pineapple pizza", "ok")], title="food")
    seed_conversation(settings, [("What about the weather", "rain")], title="weather")
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(chat(app).sidebar.query("ConversationItem")) == 2, what="list")
        await pilot.press("ctrl+f")
        await pilot.press(*"pineapple")
        await wait_for(pilot, lambda: len(chat(app).sidebar.query("ConversationItem")) == 1, what="hits")
        hit = chat(app).sidebar.query_one("ConversationItem")
        assert hit.title == "food" and "pineapple" in hit.detail
        await pilot.press("enter")  # in the search box: opens the best match
        await wait_for(pilot, lambda: len(shown(app)) == 2, what="open hit")
        assert shown(app)[0] == ("user", "I like pineapple pizza")
        await pilot.press("ctrl+f")
        chat(app).sidebar.query_one("#search").value = ""  # every conversation: ↓ to choose one
        await wait_for(pilot, lambda: len(chat(app).sidebar.query("ConversationItem")) == 2, what="all")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: shown(app)[0] == ("user", "What about the weather"), what="open chosen")



def screen_lines(app) -> list[str]:
    """The screen as drawn, line by line (where a cut or a shifted border shows)."""
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


async def test_the_message_count_in_the_list_is_never_cut(tmp_path):
    settings = make_settings(tmp_path)
    for i in range(20):  # enough that the list scrolls: its scrollbar takes cells of its width
        seed_conversation(settings, [("one question", "one answer")], title=f"short one {i}")
    seed_conversation(settings, [(f"question {i}", f"answer {i}") for i in range(8)], title="long one")
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(chat(app).sidebar.query("ConversationItem")) == 21, what="list")
        await pilot.pause(0.1)
        lines = screen_lines(app)
    assert any(re.search(r"\b16 (messages|msgs)\b", line) for line in lines), lines
    assert any(re.search(r"\b2 (messages|msgs)\b", line) for line in lines), lines


@pytest.mark.parametrize("width", [70, 56])
async def test_a_narrow_status_bar_keeps_the_context_figures(tmp_path, width):
    app = make_app(tmp_path)
    async with app.run_test(size=(140, SIZE[1])) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        status = chat(app).status
        status.model, status.context, status.speed = "SmolLM2-135M-Instruct", (39, 300, 2), (120.0, 42.0)
        await pilot.pause(0.1)
        wide = screen_lines(app)[status.region.y]
        assert "context 39/300 (2 turns dropped)  │  last reply TTFT 120 ms" in wide, wide  # room for all
        await pilot.resize_terminal(width, SIZE[1])
        await pilot.pause(0.2)
        bottom = screen_lines(app)[status.region.y]
    assert "39/300" in bottom and "2 turns dropped" in bottom, bottom

MARKUPISH = "[bold]x[/] and [/] and [link=x]y[/link] \x1b[31mred\x1b[0m bell\x07 [red"


async def test_markup_looking_text_is_shown_literally(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [(MARKUPISH, MARKUPISH)], title="[b]title[/b] \x1b[1m")
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, MARKUPISH)
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        user, reply = chat(app).log_view.messages
        visible = "[bold]x[/] and [/] and [link=x]y[/link] ␛[31mred␛[0m bell␇ [red"
        assert body_text(user) == visible
        assert body_text(reply) == "You said: " + visible
        assert user.content == MARKUPISH
        titles = [i.title for i in chat(app).sidebar.query("ConversationItem")]
        assert "[b]title[/b] \x1b[1m" in titles
        await pilot.pause(0.1)
    assert branch(settings)[0].content == MARKUPISH



async def test_a_paste_reaches_the_store_exactly(tmp_path):
    """The TUI's half of a paste (the terminal's half: test_tui_terminal.py): what the driver's
    `Paste` carries is what is stored, control characters, NUL and tabs included; a line break
    (CR LF or CR, as terminals send it) is LF."""
    from textual import events

    pasted = "xyz\x1b[31mQ a\x07b\x01c\td\x00e \x9b1m 👍🏽\r\nsecond\rthird"
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        chat(app).composer.focus()
        app.post_message(events.Paste(pasted))
        await wait_for(pilot, lambda: chat(app).composer.text, what="paste")
        await pilot.press("enter")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2, what="reply")
    assert branch(app.controller.settings)[0].content == pasted.replace("\r\n", "\n").replace("\r", "\n")


async def test_the_message_box_shows_control_characters_it_holds_visibly(tmp_path):
    """Text waiting in the message box is drawn as the log draws it: an ESC in a paste is never
    sent to the terminal (it recoloured the box and broke its border), yet it is sent exactly."""
    from textual import events

    pasted = "xyz\x1b[31mQ a\x07b \u202eevil"
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        composer = chat(app).composer
        composer.focus()
        app.post_message(events.Paste(pasted))
        await wait_for(pilot, lambda: composer.text, what="paste")
        drawn = "".join(segment.text for segment in composer.render_line(0))
        assert composer.text == pasted
    assert "xyz␛[31mQ a␇b" in drawn and "\\u202eevil" in drawn
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]", drawn), repr(drawn)

async def test_rename_delete_and_new_conversation(tmp_path):
    settings = make_settings(tmp_path)
    cid = seed_conversation(settings, [("hello", "hi")], title="old name")
    app = make_app(tmp_path, settings=settings, resume=str(cid))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(shown(app)) == 2, what="resume")
        await pilot.press("f3")
        await pilot.pause(0.1)
        field = app.screen.query_one("#answer")
        field.value = "new name"
        await pilot.press("enter")
        await wait_for(pilot, lambda: [i.title for i in chat(app).sidebar.query("ConversationItem")] == ["new name"])
        await pilot.press("f8")
        await pilot.pause(0.1)
        await pilot.press("escape")  # asks first: Esc keeps it
        await pilot.pause(0.1)
        assert len(chat(app).sidebar.query("ConversationItem")) == 1
        await pilot.press("f8")
        await pilot.pause(0.1)
        await pilot.click("#yes")
        await wait_for(pilot, lambda: not chat(app).sidebar.query("ConversationItem"), what="delete")
        assert shown(app) == [] and chat(app).controller.conversation_id is None
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "fresh start")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert shown(app) == []
    with Store.open(settings.database_url()) as store:
        assert [c.title for c in store.list_conversations()] == ["fresh start"]


async def test_export_markdown_and_json_from_the_ui(tmp_path):
    settings = make_settings(tmp_path)
    seed_conversation(settings, [("export me", "done")], title="exported")
    app = make_app(tmp_path, settings=settings, resume="last")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(shown(app)) == 2, what="resume")
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        app.screen.query_one("#path").value = str(tmp_path / "out.md")
        await pilot.click("#export")
        await wait_for(pilot, lambda: (tmp_path / "out.md").exists(), what="md file")
        assert chat(app).export("json", tmp_path / "out.json") is not None
    md = (tmp_path / "out.md").read_text()
    assert "export me" in md and "done" in md
    assert '"export me"' in (tmp_path / "out.json").read_text()
    assert (tmp_path / "out.md").stat().st_mode & 0o077 == 0


async def test_help_lists_every_binding(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(120, 60)) as pilot:
        await pilot.press("f1")
        await pilot.pause(0.2)
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(app.screen.table)
        text = console.export_text()
        for key in KEYS:
            assert key.id in text and key.description in text, key.id
        await pilot.press("escape")


async def test_keys_from_config_file_and_theme_remembered(tmp_path):
    config = tmp_path / "tui.toml"
    config.write_text('theme = "nord"\n[keys]\nregenerate = "ctrl+g"\nbogus = "x"\n')
    counter = iter(range(1, 100))
    engine = FakeEngine(reply_for=lambda p: f"answer {next(counter)}")
    prefs = Preferences.load(config)
    assert any("bogus" in p for p in prefs.problems)
    app = make_app(tmp_path, engine, prefs=prefs)
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme == "nord"
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "q")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)
        await pilot.press("ctrl+r")  # no longer bound
        await pilot.pause(0.2)
        assert shown(app)[-1] == ("assistant", "answer 1")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: idle(app) and shown(app)[-1] == ("assistant", "answer 2"), what="rebound")
        app.theme = "gruvbox"
        await pilot.pause(0.1)
    assert Preferences.load(config).theme == "gruvbox"
    assert Preferences.load(config).keys == {"regenerate": "ctrl+g"}


async def test_cursor_blink_from_config_file(tmp_path):
    config = tmp_path / "tui.toml"
    config.write_text("cursor_blink = false\n")
    app = make_app(tmp_path, prefs=Preferences.load(config))
    async with app.run_test(size=SIZE):
        assert app.screen.composer.cursor_blink is False
        app.theme = "nord"  # saving the theme keeps the setting
    assert Preferences.load(config).cursor_blink is False
    config.write_text('cursor_blink = "no"\n')
    assert Preferences.load(config).cursor_blink is True
    assert any("cursor_blink must be true or false" in p for p in Preferences.load(config).problems)
    app = make_app(tmp_path, prefs=Preferences(None))
    async with app.run_test(size=SIZE):
        assert app.screen.composer.cursor_blink is True  # Textual's default


async def test_a_broken_config_file_does_not_stop_the_ui(tmp_path):
    config = tmp_path / "tui.toml"
    config.write_text("theme = [unclosed\n")
    app = make_app(tmp_path, prefs=Preferences.load(config))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await type_and_send(pilot, "still works")
        await wait_for(pilot, lambda: idle(app) and len(shown(app)) == 2)


async def test_picker_shows_a_persona_kind_once(tmp_path):
    settings = make_settings(tmp_path)
    folder = settings.data_dir / "personas" / "tidy"
    folder.mkdir(parents=True)
    # `persona distill` names its results like this: the kind must not be shown twice.
    (folder / "persona.toml").write_text('name = "tidy"\ndisplay_name = "Tidy (control code)"\ncontrol_code = "Be tidy."\n')
    app = make_app(tmp_path, settings=settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        await pilot.press("f2")
        await pilot.pause(0.1)
        options = app.screen.query_one("#personas")
        tidy = str(options.get_option("tidy").prompt)
        pirate = str(options.get_option("pirate").prompt)
    assert tidy.count("(control code)") == 1
    assert "(control code)" in pirate  # a title without it still gets the kind


@pytest.fixture
def rich_widths():
    """The emoji width probe changes Rich's width table for the process: put it back."""
    from chatbot.tui import emoji_width

    yield emoji_width
    emoji_width.set_modifier_width(0)


async def test_the_message_box_fits_a_skin_tone_emoji_as_the_terminal_draws_it(tmp_path, rich_widths):
    """xterm, VTE and tmux draw 👍🏽 4 cells wide, Rich counts 2: the box's border was pushed out by
    2 cells. The app asks the terminal (a cursor position report after drawing the pair) and lays
    the line out as drawn."""
    from textual import events

    def drawn_padding(composer) -> int:
        text = "".join(segment.text for segment in composer.render_line(0))
        return len(text) - len(text.rstrip(" "))

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        composer = chat(app).composer
        composer.focus()
        composer.insert("ok 👍🏽 fine")
        await pilot.pause()
        before = drawn_padding(composer)
        app.probe_emoji_width()
        app.post_message(events.CursorPosition(4, 0))  # the terminal's answer: column 4 (0-based)
        await pilot.pause()
        await pilot.pause()
        after = drawn_padding(composer)
    assert before - after == 2


@pytest.mark.asyncio
async def test_once_the_model_is_ready_what_startup_made_is_kept_out_of_the_collectors_full_passes(tmp_path):
    """A full pass of the garbage collector walked every module, the tokenizer and the store's
    mappings: one frame of ~0.1-0.2 s of CPU, several times in a long streamed reply."""
    import gc

    app = make_app(tmp_path, FakeEngine())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: idle(app), what="model")
        assert gc.get_freeze_count() > 10_000
