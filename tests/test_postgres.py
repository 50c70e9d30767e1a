"""`--db postgresql+psycopg://...` on a real PostgreSQL server (started for the session by
postgres_server.py, on 127.0.0.1): migrations, tsvector search, concurrent writers, a writer
killed mid-reply, export/import and the CLI. Skipped, with one line saying why, where no
PostgreSQL can be had."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import postgres_server
from reliability_helpers import run_together

from chatbot.store import Store

WRITERS = 6
TURNS = 30


@pytest.fixture(scope="session")
def postgres():
    reason = postgres_server.why_not()
    if reason:
        pytest.skip(reason)
    try:
        server = postgres_server.server()
    except Exception:
        pytest.skip(postgres_server.why_not())
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    return postgres.new_database()


def scalar(store, sql: str, **params):
    from sqlalchemy import text

    with store._engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_migrations_run_to_head_and_back_with_the_tsvector_index(pg_url):
    from chatbot.store import database

    with Store.open(pg_url) as store:
        assert store.report.revision == database.head_revision() == "0004_postgres_search"
        assert scalar(store, "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_content_tsv'").startswith(
            "CREATE INDEX messages_content_tsv ON public.messages USING gin (to_tsvector('simple'::regconfig")
        database.downgrade(store._engine, store.location, "0001_initial")
        assert scalar(store, "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_content_tsv'") == 0
        assert scalar(store, "SELECT version_num FROM alembic_version") == "0001_initial"
    with Store.open(pg_url) as store:  # opening upgrades it again, the same versions as SQLite's
        assert store.report.previous_revision == "0001_initial" and store.report.upgraded
        assert scalar(store, "SELECT version_num FROM alembic_version") == "0004_postgres_search"


def test_search_uses_the_tsvector_index_and_takes_words_as_text(pg_url):
    with Store.open(pg_url) as store:
        c = store.new_conversation("animals", "m")
        fox = store.add_user_message(c, "The quick brown fox jumps over the lazy dog", None)
        twice = store.add_user_message(c, "fox! a fox, and no dog at all", None)
        store.add_user_message(c, "東京 and 🙂 and café: OR NOT (x) * \"", None)
        assert [h.message_id for h in store.search("fox")] == [twice, fox]  # two hits rank first
        assert [h.message_id for h in store.search("QUICK fox")] == [fox]  # every word, any case
        hit = store.search("lazy")[0]
        assert hit.snippet[hit.highlights[0][0] : hit.highlights[0][1]] == "lazy"
        assert store.search("cat") == [] and store.search('" * :') == []
        assert len(store.search("OR NOT (x)")) == 1 and len(store.search("東京")) == 1
        assert len(store.search("café")) == 1
        with store._engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(
                "EXPLAIN SELECT id FROM messages m WHERE "
                "to_tsvector('simple'::regconfig, left(m.content, 100000)) @@ phraseto_tsquery('simple', 'fox')"
            ))
        assert "messages_content_tsv" in plan


def test_nul_text_and_a_server_that_is_down_are_one_line(pg_url, tmp_path):
    from chatbot.errors import UserError
    from chatbot.store.database import WriteFailure

    with Store.open(pg_url) as store:
        c = store.new_conversation("t", "m")
        with pytest.raises(WriteFailure, match="cannot store the NUL character"):
            store.add_user_message(c, "nul \x00 here", None)
        assert store.conversation(c).messages == []
    from postgres_server import _free_port

    with pytest.raises(UserError, match=r"^cannot use postgresql\+psycopg://chatbot@127.0.0.1:\d+/x: "):
        Store.open(f"postgresql+psycopg://chatbot@127.0.0.1:{_free_port()}/x")


def _write_turns(url: str, tag: str, shared: int, start, errors) -> None:
    """TURNS turns on a conversation of its own (the turn protocol: question and streaming reply
    in one transaction, then finished), and every third on the one all writers share, continuing
    its single branch: a refusal ('moved on': another writer got there first) reloads and retries,
    as a user would; any other error fails the test."""
    from chatbot.store.repository import ConversationMovedOn

    try:
        start.wait(60)
        with Store.open(url) as store:
            own = store.new_conversation(f"{tag} own", "m")
            leaf = None
            for i in range(TURNS):
                _, reply = store.add_turn(own, f"{tag} q{i}", leaf, None, {"i": i}, i, "m")
                store.update_reply(reply, f"{tag} a")
                store.finish_reply(reply, f"{tag} a{i}", "complete", {"new_tokens": 2})
                leaf = reply
                if i % 3 == 0:
                    while True:
                        branch = store.active_branch(shared)
                        try:
                            _, r = store.add_turn(shared, f"{tag} s{i}", branch[-1].id if branch else None, None, {}, i, "m")
                        except ConversationMovedOn:
                            continue
                        store.finish_reply(r, f"{tag} t{i}", "complete", {})
                        break
    except BaseException as exc:
        errors.put(f"{tag}: {exc!r}")
        raise


def test_six_writers_thirty_turns_each_with_no_error_and_no_fork(pg_url):
    with Store.open(pg_url) as store:
        shared = store.new_conversation("shared", "m")
    found, exit_codes = run_together(_write_turns, [(pg_url, f"w{n}", shared) for n in range(WRITERS)])
    assert found == [] and exit_codes == [0] * WRITERS, found
    with Store.open(pg_url) as store:
        rows = {c.title: c for c in store.list_conversations()}
        for n in range(WRITERS):
            assert [m.content for m in store.active_branch(rows[f"w{n} own"].id)] == [
                text for i in range(TURNS) for text in (f"w{n} q{i}", f"w{n} a{i}")
            ]
        everything = store.conversation(shared).messages
        branch = store.active_branch(shared)
        assert len(branch) == len(everything) == WRITERS * len(range(0, TURNS, 3)) * 2  # one branch, no fork
        assert all(m.status == "complete" for m in everything)


KILLED_WRITER = """
import sys, time
from chatbot.store import Store
store = Store.open(sys.argv[1])
c = store.new_conversation("killed", "m")
_, reply = store.add_turn(c, "a question", None, None, {}, 1, "m")
store.update_reply(reply, "half a rep")
print(c, flush=True)
time.sleep(120)
"""


def test_a_writer_killed_mid_reply_leaves_it_interrupted_with_its_text(pg_url):
    with Store.open(pg_url):
        pass  # migrated before the child starts
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        conversation = int(child.stdout.readline())
    finally:
        child.kill()  # SIGKILL: no cleanup of any kind
        child.wait(30)
    with Store.open(pg_url) as store:
        assert store.report.recovered == 1
        question, reply = store.active_branch(conversation)
        assert (question.content, reply.content, reply.status) == ("a question", "half a rep", "interrupted")


def test_export_and_import_between_postgresql_and_sqlite_keep_every_message(pg_url, tmp_path):
    from chatbot.store import exchange

    texts = ["Hello! 🙂 東京", "esc \x1b[31m red [bold]markup[/] <b>", "a long one: " + "lorem ipsum " * 5000]
    with Store.open(pg_url) as store:
        c = store.new_conversation("to move", "m")
        leaf = None
        for text in texts:
            _, leaf = store.add_turn(c, text, leaf, None, {"temperature": 0.5}, 2**62, "m")
            store.finish_reply(leaf, text[::-1], "complete", {"new_tokens": 3, "ttft_ms": 1.5})
        document = exchange.to_json(store.export_conversation(c))
    with Store.open(str(tmp_path / "moved.db")) as sqlite_store:
        moved = sqlite_store.import_conversation(exchange.parse_document(document.encode(), "doc"))
        back = exchange.to_json(sqlite_store.export_conversation(moved))
    with Store.open(pg_url) as store:
        again = store.import_conversation(exchange.parse_document(back.encode(), "doc"))
        original, copy = store.active_branch(c), store.active_branch(again)
    assert [(m.role, m.content, m.status, m.seed, m.stats) for m in copy] == [
        (m.role, m.content, m.status, m.seed, m.stats) for m in original]


def test_the_cli_runs_a_turn_and_reads_history_on_postgresql(pg_url, tmp_path, monkeypatch, capsys):
    """`--db postgresql+psycopg://...` through the real entry point: a turn (the openai engine
    against a scripted server, so no model loads), history list, search and export."""
    from serve_helpers import ScriptedServer

    from chatbot.cli import main

    monkeypatch.setenv("CHATBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CHATBOT_REMOTE_MODEL", "scripted")
    with ScriptedServer() as scripted:
        monkeypatch.setenv("CHATBOT_BASE_URL", scripted.url)
        assert main(["--db", pg_url, "--engine", "openai", "ask", "where is the fox"]) == 0
    assert capsys.readouterr().out.strip() == "Hello there"
    assert main(["--db", pg_url, "history", "search", "fox", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [hit["role"] for hit in hits] == ["user"]
    assert main(["--db", pg_url, "history", "export", "last", "--format", "json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert "where is the fox" in json.dumps(exported) and "Hello there" in json.dumps(exported)


def test_the_skip_reason_is_one_line_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(postgres_server, "_bin_dir", lambda: None)
    reason = postgres_server.why_not()
    assert reason is not None and "\n" not in reason and "make postgres" in reason


def test_memory_recall_and_forget_work_on_postgresql(pg_url):
    from chatbot.store.recall import Scope

    with Store.open(pg_url) as store:
        c = store.new_conversation("memory", "m")
        leaf = None
        for text in ("my dog is called Rex", "I like green tea", "the weather is grey"):
            _, leaf = store.add_turn(c, text, leaf, None, {}, 1, "m")
            store.finish_reply(leaf, f"noted: {text}", "complete", {})
        hits = store.recall_candidates('"dog"', ["dog"], Scope(c, leaf, "all", None))
        assert {h.content for h in hits} == {"my dog is called Rex", "noted: my dog is called Rex"}
        first = store.active_branch(c)[0].id
        store.forget_message(first)
        assert [h.message_id for h in store.search("Rex")] == [first + 1]  # the index follows the erase


def _conversation(store, turns, persona_version=None) -> int:
    conversation = store.new_conversation(None, "m")
    leaf = None
    for user, reply in turns:
        _, leaf = store.add_turn(conversation, user, leaf, persona_version, {}, None, "m")
        store.finish_reply(leaf, reply, "complete", {})
    return conversation


def test_recall_uses_the_tsvector_index_ranks_any_word_and_keeps_the_scopes(pg_url, smol_tokenizer):
    """Memory recall through the real context builder on PostgreSQL: a dropped fact comes back,
    words are prefixes (a light stem) ranked by ts_rank, never tsquery syntax, and the scopes
    hold as on SQLite (tests/test_memory_recall.py)."""
    from sqlalchemy import text

    from chatbot.memory.context import ContextBuilder
    from chatbot.memory.recall import sources_for
    from chatbot.personas.schema import Persona
    from chatbot.session import turns_from_messages
    from chatbot.store import recall_postgres
    from chatbot.store.recall import Scope

    filler = [(f"Tell me about topic {i}.", f"Topic {i} is this: " + "more words " * 12) for i in range(30)]

    def build(store, conversation, message, scope, persona):
        history = turns_from_messages(store.active_branch(conversation)) if conversation else []
        return ContextBuilder(smol_tokenizer, 384).build(
            Persona(name=persona), history, message, memory=sources_for(store, scope, persona),
            conversation_id=conversation)

    with Store.open(pg_url) as store:
        pirate = store.persona_version("pirate", "control_code", {"name": "pirate"})
        robot = store.persona_version("robot", "control_code", {"name": "robot"})
        a = _conversation(store, [("My name is Talvoren and I live in Brisquella.", "Arr.")] + filler, pirate)
        b = _conversation(store, filler[:40], robot)
        fact = store.active_branch(a)[0]
        context = build(store, a, "What is my name?", "conversation", "pirate")
        assert context.dropped_turns > 0 and [p.message_id for p in context.recalled] == [fact.id]
        assert '"My name is Talvoren and I live in Brisquella."' in context.text
        assert build(store, a, "Where do I live? Which lives?", "conversation", "pirate").recalled[0].message_id == fact.id
        for scope, persona in (("off", "robot"), ("conversation", "robot"), ("persona", "robot")):
            assert "Talvoren" not in build(store, b, "What is my name?", scope, persona).text
        for scope, persona in (("persona", "pirate"), ("all", "robot")):
            recalled = build(store, b, "What is my name?", scope, persona).recalled
            assert [(p.message_id, p.conversation_id) for p in recalled if "Talvoren" in p.text] == [(fact.id, a)]
        # ranked: the message with both words first; words are text, never tsquery syntax
        hits = store.recall_candidates("", ["talvoren", "brisquell", "'|!:*&"], Scope(a, fact.id + 1))
        assert [h.message_id for h in hits] == [fact.id]
        other = store.active_branch(_conversation(store, [("a name only", "ok")]))[0].id
        hits = store.recall_candidates("", ["name", "talvoren"], Scope(None, None, "all"))
        assert [h.message_id for h in hits] == [fact.id, other] and hits[0].score > hits[1].score > 0
        assert store.recall_candidates("", ["!(", ":*"], Scope(None, None, "all")) == []
        assert store.recall_candidates("", ["quella"], Scope(None, None, "all")) == []  # lexemes, not LIKE
        with store._engine.connect() as connection:
            connection.exec_driver_sql("SET enable_seqscan = off")
            sql = recall_postgres._CANDIDATES.format(document=recall_postgres.PG_DOCUMENT,
                                                     query=recall_postgres._QUERY, where="1 = 1")
            plan = connection.execute(text("EXPLAIN " + sql), {"words": ["talvoren"], "limit": 8}).scalars()
            assert "messages_content_tsv" in "\n".join(plan)


SERVER_THEN_WAIT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import postgres_server
server = postgres_server.PostgresServer(postgres_server._bin_dir()).start()
print(server.port, server.folder, flush=True)
time.sleep(120)
"""


def test_a_killed_test_process_leaves_no_server_running(postgres, tmp_path):
    """SIGKILL runs no atexit: the watchdog stops the server and removes its folder."""
    import socket
    import time
    from pathlib import Path

    child = subprocess.Popen([sys.executable, "-c", SERVER_THEN_WAIT, str(Path(__file__).parent)],
                             stdout=subprocess.PIPE, text=True)
    try:
        port, folder = child.stdout.readline().split()
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            pass  # it is up
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30
    while Path(folder).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(folder).exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
