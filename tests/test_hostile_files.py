"""Hostile and malformed files and arguments: persona files, JSONL training data, conversation
imports, command-line arguments. Each gives a clear one-line error or works; never a traceback,
never a partial write. Plus: nothing is unpickled, persona paths stay in their folder, private
file modes, and an export holds only the conversation asked for."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import dump, run_cli, session_for, settings_for
from tui_fakes import FakeEngine, make_settings

from chatbot.errors import UserError
from chatbot.store import Store, exchange

ROOT = Path(__file__).resolve().parents[1]
FEW = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
ONE_LINE = re.compile(r"^[^\n]+$")


def calls(fn, *args, one_line=True):
    """('ok', value) or ('error', one-line message); anything else (a traceback) fails the test."""
    try:
        return "ok", fn(*args)
    except UserError as exc:
        assert ONE_LINE.match(str(exc).strip()) or not one_line, str(exc)
        return "error", str(exc)


# --- persona files ----------------------------------------------------------------------------

PERSONA_LINES = st.sampled_from(
    [
        'name = "p"', 'name = "P!"', 'kind = "soft_prompt"', 'kind = "nope"', 'control_code = "Arr"',
        'placement = "system"', 'placement = 3', "[generation]", "temperature = -1", "top_p = 2.0",
        "max_new_tokens = 0", "top_k = 5", "[soft_prompt]", 'path = "../../etc"', 'path = "/etc"',
        'unknown = 1', "= broken", '"\\u0000" = 1', "[[x]]", 'description = """multi\nline"""',
    ]
)


def persona_file(tmp_path: Path, content: bytes) -> Path:
    folder = tmp_path / "personas" / "p"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "persona.toml"
    path.write_bytes(content)
    return path


@FEW
@given(lines=st.lists(PERSONA_LINES, max_size=8), junk=st.binary(max_size=40))
def test_persona_loader_never_crashes(tmp_path_factory, lines, junk):
    from chatbot.personas.registry import load_persona_file

    path = persona_file(tmp_path_factory.mktemp("p"), "\n".join(lines).encode() + b"\n" + junk)
    outcome, value = calls(load_persona_file, path)
    if outcome == "error":
        assert str(path) in value  # names the file


@pytest.mark.parametrize(
    "content",
    [
        b'name = "p"\ndescription = ' + b"[" * 100_000,  # nesting deep enough to overflow a recursive parser
        b'name = "p"\n[generation]\ntop_k = 1' + b"0" * 5000,  # an integer Python refuses to convert
    ],
    ids=["deep-nesting", "huge-integer"],
)
def test_persona_loader_pathological_toml(tmp_path, content):
    from chatbot.personas.registry import load_persona_file

    with pytest.raises(UserError):
        load_persona_file(persona_file(tmp_path, content))


@FEW
@given(rel=st.one_of(st.sampled_from(["..", "../x", "a/../../b", "/etc", "//x", "a/./../..", "~/x"]), st.text(max_size=20)))
def test_soft_prompt_path_cannot_leave_its_folder(tmp_path_factory, rel):
    from chatbot.personas.registry import InstalledPersona
    from chatbot.personas.schema import Persona
    from chatbot.personas.soft_prompt import adapter_dir

    folder = tmp_path_factory.mktemp("persona")
    persona = Persona(name="p", kind="soft_prompt", soft_prompt={"path": rel})
    try:
        target = adapter_dir(InstalledPersona(persona, "user", folder))
    except (UserError, ValueError):  # ValueError: a NUL in a path
        return
    assert target == folder.resolve() or folder.resolve() in target.parents


def test_soft_prompt_symlink_out_of_its_folder_is_refused(tmp_path):
    from chatbot.personas.registry import InstalledPersona
    from chatbot.personas.schema import Persona
    from chatbot.personas.soft_prompt import adapter_dir

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "soft_prompt").symlink_to(tmp_path)
    persona = Persona(name="p", kind="soft_prompt", soft_prompt={"path": "soft_prompt"})
    with pytest.raises(UserError, match="outside"):
        adapter_dir(InstalledPersona(persona, "user", folder))


# --- JSONL training data (chatbot/personas/data.py) ------------------------------------------------

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr"}]}


@FEW
@given(
    lines=st.lists(
        st.one_of(
            st.just(json.dumps(GOOD)),
            st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                         lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                         max_leaves=8).map(json.dumps),
            st.text(max_size=30),
        ),
        max_size=6,
    )
)
def test_training_data_loader_never_crashes(tmp_path_factory, lines):
    from chatbot.personas.data import read_jsonl

    path = tmp_path_factory.mktemp("d") / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    outcome, value = calls(read_jsonl, path, one_line=True)
    if outcome == "ok":
        assert all(json.loads(line) == GOOD for line in lines if line.strip())


@pytest.mark.parametrize(
    "line, why",
    [
        ("[" * 100_000, "RecursionError escapes read_jsonl"),
        ('{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "x"}]}',
         "a lone surrogate is accepted; the tokenizer fails later with a TypeError"),
    ],
    ids=["deep-nesting", "lone-surrogate"],
)
def test_training_data_pathological_lines(tmp_path, line, why):
    from chatbot.personas.data import read_jsonl

    path = tmp_path / "data.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UserError):
        read_jsonl(path)


def test_training_data_bad_bytes_one_line(tmp_path):
    from chatbot.personas.data import read_jsonl

    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\x00\xff\xfe garbage\n")
    assert calls(read_jsonl, path)[0] == "error"


# --- conversation import ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_text(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    with Store.open(str(tmp / "chat.db")) as store:
        session = session_for(store, settings_for(tmp), FakeEngine(reply_for=lambda p: "fine reply"))
        session.send("a question", session.sampling_params()).run()
        return exchange.to_json(store.export_conversation(session.conversation_id))


def mutations():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=8),
                       st.floats(allow_nan=True))
    return st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), scalar), min_size=1, max_size=3)


def mutate(doc, choices):
    """Replace some value deep in the document (picked by index over all its paths)."""
    paths = []

    def walk(node, path):
        paths.append(path)
        children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in children:
            walk(child, path + [key])

    walk(doc, [])
    for index, value in choices:
        path = paths[index % len(paths)]
        if not path:
            continue
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        except (TypeError, KeyError, IndexError):  # an earlier change replaced a parent
            continue
    return doc


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(choices=mutations())
def test_import_of_a_damaged_export(tmp_path_factory, export_text, choices):
    path = tmp_path_factory.mktemp("imp") / "chat.db"
    text = json.dumps(mutate(json.loads(export_text), choices))
    with Store.open(str(path)) as store:
        before = dump(path)
        outcome, doc = calls(exchange.parse_document, text, "x.json")
        if outcome == "ok":
            outcome, _ = calls(store.import_conversation, doc)
        if outcome == "error":
            assert dump(path) == before  # nothing written


@pytest.mark.parametrize(
    "text",
    ["", "null", "[]", "{", "[" * 100_000, '{"format": "persona-chatbot.conversation"}', "\x00", "\ufeff{}"],
)
def test_import_garbage_is_one_line(tmp_path, text):
    assert calls(exchange.parse_document, text, "x.json")[0] == "error"


# --- command-line arguments -----------------------------------------------------------------------


ARGS = st.sampled_from(
    [
        "ask", "history", "show", "list", "search", "export", "import", "rename", "delete", "replay", "db",
        "current", "backup", "persona", "--json", "--seed", "--temperature", "--top-p", "--top-k",
        "--max-new-tokens", "--conversation", "--continue", "--format", "--output", "--leaf", "--speed",
        "--no-save", "-1", "0", "1", "nan", "inf", "1e309", str(2**64), "9" * 30, "", "-", "--", "x\x00y",
        "\x1b[31m", "[bold]", "999999", "md", "json", "--db", "--resume", "--persona", "../../etc/passwd",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(args=st.lists(ARGS, min_size=1, max_size=5))
def test_cli_arguments_never_traceback(tmp_path_factory, monkeypatch, capsys, args):
    tmp = tmp_path_factory.mktemp("cli")
    settings_ = make_settings(tmp)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings_.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings_.db)
    monkeypatch.chdir(tmp)  # export --output lands here
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("{}"))  # import -, ask -, chat
    if args[:1] == ["persona"] and any(a in ("train", "distill", "eval") for a in args):
        return
    code, out, err, _ = run_cli(args, monkeypatch, capsys)
    assert "Traceback" not in err
    assert code in (0, 1, 2), (args, code, err)
    if code:
        assert err.startswith("chatbot: error: ") or err.startswith("Usage"), (args, err)
        assert err.count("chatbot: error:") == 1, err


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "hi", "--seed", str(2**64)],
        ["ask", "hi", "--seed", "-1"],
        ["ask", "hi", "--temperature", "nan"],
        ["ask", "hi", "--max-new-tokens", "0"],
        ["ask", "hi", "--top-p", "inf"],
        ["history", "show", str(2**64)],
        ["history", "export", "1", "--output", "/nonexistent-dir/x.json"],
        ["--db", "postgresql+nosuchdriver://x", "history", "list"],
        ["--db", "sqlite:///", "history", "list"],
    ],
)
def test_cli_bad_values_are_one_line(tmp_path, monkeypatch, capsys, args):
    settings_ = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings_.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings_.db)
    code, out, err, _ = run_cli(args, monkeypatch, capsys)
    assert "Traceback" not in err, err
    if code:
        assert err.startswith("chatbot: error: ") and err.count("\n") == 1, err


# --- nothing unpickled ------------------------------------------------------------------------------


def python_sources():
    for folder in ("chatbot", "benchmarks", "migrations"):
        yield from (ROOT / folder).rglob("*.py")


def test_no_pickle_and_no_unsafe_torch_load_in_the_source():
    problems = []
    for path in python_sources():
        text = path.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            code = line.split("#", 1)[0]
            if re.search(r"\b(c?[pP]ickle|dill|joblib|marshal\.loads?|shelve)\b", code) and "import" in code or re.search(
                r"\bpickle\.", code
            ):
                problems.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
            if "torch.load(" in code:
                call = text.splitlines()[number - 1 : number + 3]
                if "weights_only=True" not in " ".join(call):
                    problems.append(f"{path.relative_to(ROOT)}:{number}: torch.load without weights_only=True")
            if re.search(r"trust_remote_code\s*=\s*True", code):
                problems.append(f"{path.relative_to(ROOT)}:{number}: trust_remote_code=True")
    assert problems == []


def test_a_model_folder_with_only_pickled_weights_is_refused(tmp_path, monkeypatch, tiny_llama):
    import torch

    from chatbot.engine.loading import load_model

    folder = tmp_path / "model"
    tiny_llama.save_pretrained(folder)
    weights = folder / "model.safetensors"
    torch.save(dict(tiny_llama.state_dict()), folder / "pytorch_model.bin")
    weights.unlink()
    from tokenizers import Tokenizer, models

    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, "<unk>"))).save_pretrained(folder)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(UserError, match="safetensors"):
        load_model(str(folder), tmp_path / "cache", dtype="float32")


# --- files: private modes, exports of one conversation ----------------------------------------------


def test_data_dir_0700_and_database_0600(tmp_path, monkeypatch):
    monkeypatch.setattr("os.umask", __import__("os").umask)  # (no-op: the process umask stays)
    data = tmp_path / "deep" / "data"
    path = data / "chatbot.db"
    with Store.open(f"sqlite:///{path}") as store:
        store.new_conversation("x", "m")
        backup = store.backup()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for f in (path, backup):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for sidecar in data.glob("chatbot.db-*"):  # WAL and shared-memory files
        assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar


def test_export_holds_only_the_conversation_asked_for(tmp_path, monkeypatch, capsys):
    settings_ = make_settings(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings_.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings_.db)
    with Store.open(settings_.db) as store:
        ids = []
        for n in range(3):
            s = session_for(store, settings_for(tmp_path), FakeEngine(reply_for=lambda p, n=n: f"secret reply {n}"))
            s.send(f"secret question {n}", s.sampling_params()).run()
            ids.append(s.conversation_id)
    out = tmp_path / "one.json"
    code, _, err, _ = run_cli(["history", "export", str(ids[1]), "--format", "json", "--output", str(out)], monkeypatch, capsys)
    assert code == 0, err
    text = out.read_text()
    assert "secret question 1" in text and "secret reply 1" in text
    assert "secret question 0" not in text and "secret reply 2" not in text
    assert {m["conversation_id"] for m in json.loads(text)["conversation"]["messages"]} == {ids[1]}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    code, md, err, _ = run_cli(["history", "export", str(ids[2]), "--format", "md"], monkeypatch, capsys)
    assert code == 0 and "secret reply 2" in md and "secret reply 1" not in md
