"""`chatbot history rerun ID --persona X`: a saved conversation answered again as a new branch."""

from __future__ import annotations

from test_persona_support import run_cli, tiny_dir, tokenizer  # noqa: F401

from chatbot.store import Store


def pirate_conversation(db, opening: str | None = None) -> tuple[int, list[int]]:
    """A conversation of two answered questions with the pirate (after an opening, if given);
    returns its id and its replies' ids."""
    with Store.open(str(db)) as store:
        pirate = store.persona_version("pirate", "control_code", {"name": "pirate"})
        c = store.new_conversation(None, "tiny")
        parent = store.add_openings(c, [opening], pirate, "tiny")[0] if opening else None
        replies = []
        for question, answer in (("Where to?", "Arr, Tortuga."), ("Why?", "For the rum.")):
            _, parent = store.add_turn(c, question, parent, pirate, {}, None, "tiny")
            store.finish_reply(parent, answer, "complete", {})
            replies.append(parent)
    return c, replies


def test_rerun_answers_every_question_again_as_a_new_branch(tiny_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "r.db"
    c, _ = pirate_conversation(db)
    with Store.open(str(db)) as store:
        old = [m.id for m in store.active_branch(c)]
    base = ["--model", str(tiny_dir), "--db", str(db), "history", "rerun", str(c)]
    assert run_cli([*base, "--persona", "nobody"]) == 1  # refused before the model loads
    capsys.readouterr()
    assert run_cli([*base, "--persona", "robot", "--max-new-tokens", "3"]) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    leaf = int(out.strip().splitlines()[-1])
    assert f"ending at message {leaf}" in err and "user> Where to?" in out
    with Store.open(str(db)) as store:
        new = store.active_branch(c, leaf)
        assert [m.role for m in new] == ["user", "assistant", "user", "assistant"]
        assert [m.content for m in new if m.role == "user"] == ["Where to?", "Why?"]
        assert {m.persona.name for m in new if m.role == "assistant"} == {"robot"}
        assert [m.id for m in store.siblings(new[0].id)] == [old[0], new[0].id]  # beside the old branch
        assert [m.id for m in store.active_branch(c, old[-1])] == old  # which is untouched


def test_persona_eval_scores_a_branch(tiny_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    import json

    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "r.db"
    c, (first, _) = pirate_conversation(db, opening="Ahoy!")
    base = ["--model", str(tiny_dir), "--db", str(db), "persona", "eval", "pirate", "--conversation", str(c)]
    assert run_cli([*base, "--json"]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)
    assert result["n_replies"] == 2 and result["nll_control_code"] is not None  # the opening is not scored
    assert run_cli([*base, "--leaf", str(first), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_replies"] == 1
    assert run_cli([*base, "--all"]) == 2
    assert run_cli([*base[:-2], "--conversation", "99"]) == 1
