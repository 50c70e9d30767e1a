"""Four processes each append 200 turns (the real turn protocol's writes: question, reply row,
finish) to one SQLite file at once: every row is there, in order, and no process saw an
error. (`test_store_durability.py` covers two writers on one conversation and a new file.)"""

from __future__ import annotations

from reliability_helpers import forkserver, integrity

from chatbot.store import Store

PROCESSES = 4
TURNS = 200


def _without_fsync() -> None:
    """synchronous=NORMAL in this child: WAL commits without an fsync each. Locking and busy
    handling, the point here, are the same; fsync only matters for a power cut, which no test
    makes; it would make this test take 20 s longer (the benchmark measures it)."""
    from sqlalchemy import event

    from chatbot.store import database

    real = database.create_engine_for

    def create_engine_for(location):
        engine = real(location)
        event.listen(engine, "connect", lambda conn, record: conn.execute("PRAGMA synchronous = NORMAL"))
        return engine

    database.create_engine_for = create_engine_for


def _append(path: str, tag: str, shared: int, start, errors) -> None:
    _without_fsync()
    try:
        start.wait(60)
        with Store.open(path) as store:
            own = store.new_conversation(f"{tag} own", "m")
            parent = None
            for i in range(TURNS):
                # alternate between a conversation of its own and the one all processes share
                c, p = (own, parent) if i % 2 else (shared, None)
                u = store.add_user_message(c, f"{tag} q{i}", p)
                r = store.start_reply(c, u, None, {"i": i}, i, "m")
                store.finish_reply(r, f"{tag} a{i}", "complete", {"new_tokens": 2})
                if i % 2:
                    parent = r
    except BaseException as exc:  # any error surfaced to a user fails the test
        errors.put(f"{tag}: {exc!r}")
        raise


def test_four_processes_append_200_turns_each(tmp_path):
    path = tmp_path / "shared.db"
    with Store.open(str(path)) as store:
        shared = store.new_conversation("shared", "m")
    ctx = forkserver()
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_append, args=(str(path), f"p{n}", shared, start, errors)) for n in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(300)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == [] and [p.exitcode for p in procs] == [0] * PROCESSES, found

    assert integrity(path) == "ok"
    with Store.open(str(path)) as store:
        rows = {c.title: c for c in store.list_conversations()}
        assert rows["shared"].message_count == PROCESSES * TURNS  # half the turns, 2 rows each
        everything = store.conversation(shared).messages
        for n in range(PROCESSES):
            own = store.conversation(rows[f"p{n} own"].id)
            assert [m.content for m in store.active_branch(own.id)] == [
                text for i in range(1, TURNS, 2) for text in (f"p{n} q{i}", f"p{n} a{i}")
            ]
            everything += own.messages
    assert len(everything) == PROCESSES * TURNS * 2
    assert all(m.status == "complete" for m in everything)
    assert len({m.id for m in everything}) == len(everything)
