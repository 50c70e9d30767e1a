"""Global options (--db, --model, --engine) after the command mean what they mean before it.
Run through the console script's entry point (`chatbot.cli.app.main`), in process."""

import pytest
from cli_invoke import invoke_main


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CHATBOT_DB", raising=False)
    monkeypatch.delenv("CHATBOT_MODEL", raising=False)

    return lambda args: invoke_main(capsys, *args)


def test_model_after_the_command_is_the_global_model(run, tmp_path):
    missing = tmp_path / "nowhere.gguf"
    for args in (["ask", "hi", "--model", str(missing)], ["ask", f"--model={missing}", "hi"],
                 ["--model", str(missing), "ask", "hi"]):
        code, _, err = run(args)
        assert (code, err.strip()) == (1, f"chatbot: error: no such model file: {missing}"), args


def test_db_and_engine_after_a_nested_command(run, tmp_path):
    missing_db = tmp_path / "none" / "chat.db"
    after = run(["history", "list", "--db", str(missing_db)])
    before = run(["--db", str(missing_db), "history", "list"])
    assert after == before and after[0] == 1 and str(missing_db) in after[2]
    code, _, err = run(["model", "info", "--engine", "turbo"])
    assert code == 2 and err.startswith("chatbot: error: invalid setting: engine")


def test_after_double_dash_an_option_name_is_text(run, tmp_path):
    missing = tmp_path / "nowhere.gguf"
    code, _, err = run(["--model", str(missing), "ask", "--", "--engine"])  # the prompt is "--engine"
    assert code == 1 and "no such model file" in err


def test_a_commands_own_option_value_is_not_taken_as_a_global_option(run, tmp_path):
    missing = tmp_path / "nowhere.gguf"
    code, _, err = run(["ask", "hi", "--persona", "--model", "--model", str(missing)])
    assert code == 1 and "no persona named '--model'" in err  # its value, not the global option


def test_help_names_the_options_that_may_follow_the_command(run):
    code, out, _ = run(["--help"])
    assert code == 0 and "may also follow the command" in " ".join(out.split())
