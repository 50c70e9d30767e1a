"""Durability with real processes: concurrent appends lose nothing, a killed writer's reply is
recovered as interrupted, a live writer's reply is left alone."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal

from chatbot.store import Store

TURNS = 30
SPAWN = mp.get_context("spawn")


def _append_turns(path: str, conversation_id: int | None, tag: str, start, errors) -> None:
    try:
        start.wait(30)
        store = Store.open(path)  # several processes may migrate a new file at once
        c = conversation_id or store.new_conversation(f"from {tag}", "m")
        for i in range(TURNS):
            u = store.add_user_message(c, f"{tag} question {i}", None)
            r = store.start_reply(c, u, None, {}, i, "m")
            store.update_reply(r, f"{tag} answer")
            store.finish_reply(r, f"{tag} answer {i}", "complete", {"new_tokens": 3, "tokens_per_s": 10.0})
        store.close()
    except BaseException as exc:  # reported to the parent: any "database is locked" fails the test
        errors.put(f"{tag}: {exc!r}")
        raise


def _run_writers(path: str, conversation_ids: list[int | None]) -> list[str]:
    start = SPAWN.Event()
    errors = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_append_turns, args=(path, cid, f"p{n}", start, errors))
        for n, cid in enumerate(conversation_ids)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert [p.exitcode for p in procs] == [0] * len(procs), found
    return found


def test_two_processes_append_to_one_conversation(tmp_path):
    path = str(tmp_path / "shared.db")
    with Store.open(path) as store:
        c = store.new_conversation("shared", "m")
    assert _run_writers(path, [c, c]) == []
    with Store.open(path) as store:
        messages = store.conversation(c).messages
    assert len(messages) == 2 * TURNS * 2
    assert all(m.status == "complete" for m in messages)
    for tag in ("p0", "p1"):
        assert sorted(m.content for m in messages if m.content.startswith(f"{tag} question")) == sorted(
            f"{tag} question {i}" for i in range(TURNS)
        )


def test_two_processes_create_a_new_database_at_once(tmp_path):
    path = str(tmp_path / "fresh.db")
    assert _run_writers(path, [None, None]) == []
    with Store.open(path) as store:
        rows = store.list_conversations()
        assert sorted(r.title for r in rows) == ["from p0", "from p1"]
        assert all(r.message_count == 2 * TURNS for r in rows)


def _stream_forever(path: str, ready) -> None:
    store = Store.open(path)
    c = store.latest_conversation_id()
    u = store.add_user_message(c, "tell me a long story", store.active_branch(c)[-1].id)
    r = store.start_reply(c, u, None, {}, 7, "m")
    store.update_reply(r, "Once upon a time")
    ready.set()
    signal.pause()  # killed here, mid-reply


def test_killed_writer_leaves_an_interrupted_reply(tmp_path):
    path = str(tmp_path / "crash.db")
    with Store.open(path) as store:
        c = store.new_conversation(None, "m")
        u = store.add_user_message(c, "first turn", None)
        r = store.start_reply(c, u, None, {}, None, "m")
        store.finish_reply(r, "first reply", "complete", {})
    ready = SPAWN.Event()
    proc = SPAWN.Process(target=_stream_forever, args=(path, ready))
    proc.start()
    try:
        assert ready.wait(60)
        with Store.open(path) as store:  # the writer is alive: its reply stays streaming
            assert store.report.recovered == 0
            assert store.active_branch(c)[-1].status == "streaming"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    with Store.open(path) as store:
        assert store.report.recovered == 1
        branch = store.active_branch(c)
    assert [(m.role, m.content, m.status) for m in branch] == [
        ("user", "first turn", "complete"),
        ("assistant", "first reply", "complete"),
        ("user", "tell me a long story", "complete"),
        ("assistant", "Once upon a time", "interrupted"),
    ]
    assert branch[-1].seed == 7 and branch[-1].finished_at is not None


def test_leftover_streaming_row_of_this_process_is_recovered(tmp_path):
    path = str(tmp_path / "own.db")
    store = Store.open(path)
    c = store.new_conversation(None, "m")
    u = store.add_user_message(c, "hi", None)
    r = store.start_reply(c, u, None, {}, None, "m")
    with Store.open(path) as again:  # same process, reply still being streamed: spared
        assert again.report.recovered == 0
    store.close()
    from chatbot.store import store as store_module

    store_module._live_replies.clear()  # as if this process had died and a new one had our pid
    with Store.open(path) as again:
        assert again.report.recovered == 1
        assert again.active_branch(c)[-1].id == r
        assert again.active_branch(c)[-1].status == "interrupted"
