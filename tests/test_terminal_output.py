"""Stored text that would steer a terminal (escape sequences, OSC titles, a lone CR, bidi
overrides, C1 controls) is shown as visible stand-ins by every command that prints it for a person,
as the TUI shows it; `--json` and `export` to a file or a pipe stay exact."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from chatbot.store import Store
from chatbot.terminal_text import visible
from test_history_cli import run

TITLE = "evil\x1b]0;pwned title\x07 \u202egnp.exe"
CONTENT = "clear\x1b[2J\x1b[H gone\rhidden \x9b31m C1 \u2066iso\u2069 tab\tok\r\nnext \x7f end"
# What a terminal would obey: C0 but tab/newline, a CR outside CR LF, DEL, C1, bidi controls.
STEERING = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]|\r(?!\n)")


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "hostile.db"
    with Store.open(str(path)) as store:
        version = store.persona_version("assistant", "control", {"text": ""})
        c = store.new_conversation(TITLE, "m")
        asked = store.add_user_message(c, CONTENT, None)
        stats = {"new_tokens": 3, "tokens_per_s": 1000.0}
        store.finish_reply(store.start_reply(c, asked, version, {}, None, "m"), "reply " + CONTENT, "complete", stats)
    return path


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_visible_marks_what_steers_a_terminal_and_nothing_else():
    assert visible(CONTENT) == (
        "clear␛[2J␛[H gone␍hidden \\x9b31m C1 \\u2066iso\\u2069 tab\tok\nnext ␡ end"
    )
    ordinary = "plain é 東京 🏴\u200d☠️ 👍🏽 [bold]x[/bold]\ttab\nline"
    assert visible(ordinary) == ordinary


@pytest.mark.parametrize(
    "args",
    [
        ["history", "show", "1"],
        ["history", "list"],
        ["history", "search", "hidden"],
        ["history", "replay", "1", "--instant"],
    ],
)
def test_views_show_steering_characters_visibly(db, args):
    for stdout in (io.StringIO(), Terminal()):  # a pipe or a terminal: a view is for reading
        code, out, _ = run(db, *args, stdout=stdout)
        assert code == 0
        # search on a terminal bolds its hits: our own escapes, the only ones
        assert not STEERING.search(out.replace("\x1b[1m", "").replace("\x1b[0m", "")), repr(out)
        assert "␛]0;pwned title␇" in out or "␛[2J" in out
        assert "\\u202e" in out or "\\x9b" in out or "hidden" not in args


def test_history_context_shows_steering_characters_visibly(db, isolated_settings):
    code, out, _ = run(db, "history", "context", "1")
    assert code == 0 and "␛[2J" in out and "\\u2066iso" in out
    assert not STEERING.search(out), repr(out)


def test_json_is_exact_and_safe_on_a_terminal(db):
    for args in (["history", "show", "1", "--json"], ["history", "search", "hidden", "--json"]):
        code, out, _ = run(db, *args)
        assert code == 0 and not STEERING.search(out)
    shown = json.loads(run(db, "history", "show", "1", "--json")[1])
    assert shown["title"] == TITLE
    assert [m["content"] for m in shown["messages"]] == [CONTENT, "reply " + CONTENT]


def test_export_is_exact_into_a_file_or_pipe_and_visible_on_a_terminal(db, tmp_path):
    code, piped, _ = run(db, "history", "export", "1")
    assert code == 0 and CONTENT in piped and TITLE in piped
    assert run(db, "history", "export", "1", "-o", str(tmp_path / "c.md"))[0] == 0
    assert (tmp_path / "c.md").read_bytes().decode() == piped
    code, on_terminal, _ = run(db, "history", "export", "1", stdout=Terminal())
    assert code == 0 and on_terminal == visible(piped)
    code, as_json, _ = run(db, "history", "export", "1", "-f", "json", stdout=Terminal())
    assert code == 0 and not STEERING.search(as_json)
    _, exact_json, _ = run(db, "history", "export", "1", "-f", "json")
    assert json.loads(as_json)["conversation"] == json.loads(exact_json)["conversation"]  # the same text
    assert "\u202e" in exact_json and "\u202e" not in as_json


def test_an_error_quoting_what_was_typed_is_one_visible_line(db):
    code, _, err = run(db, "history", "show", "\x1b]0;pwned\x07")
    assert code == 2
    assert err == "chatbot: error: '␛]0;pwned␇' is not a conversation id (a number, or 'last')\n"


def test_persona_list_and_show_show_a_persona_files_escapes(tmp_path, monkeypatch):
    folder = tmp_path / "data" / "personas" / "evil"
    folder.mkdir(parents=True)
    (folder / "persona.toml").write_text(
        'name = "evil"\ndisplay_name = "E\\u001b]0;t\\u0007"\n'
        'description = "desc \\u001b[2J [bold]markup[/bold] \\u202eright"\n'
        'kind = "control_code"\ncontrol_code = "be \\u001b[31m red"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "400")
    for args in (["persona", "list"], ["persona", "show", "evil"]):
        code, out, err = run(tmp_path / "x.db", *args, stdout=Terminal())
        assert code == 0, err
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)  # Rich's own colours on a terminal
        assert not STEERING.search(plain), repr(out)
        assert "desc ␛[2J [bold]markup[/bold] \\u202eright" in plain
