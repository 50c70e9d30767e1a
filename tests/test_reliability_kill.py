"""SIGKILL at random moments of a real turn loop (real store, real ChatSession turn protocol, a
fake engine streaming word by word), many times over one database: every completed turn is still
there and exact, every question that was committed is there, a partial reply is a prefix of the
reply it was becoming and reads `interrupted` after restart, and `PRAGMA integrity_check` = ok."""

from __future__ import annotations

import os
import random
import signal
import time

from reliability_helpers import forkserver, integrity, read_reports, report, session_for, settings_for

from chatbot.store import Store

KILLS = 12
WORDS = 24


def expected_reply(question: str) -> str:
    return " ".join(f"{question.replace(' ', '-')}/{i}" for i in range(WORDS))


def _reply_for(prompt: str) -> str:
    return expected_reply(prompt.rsplit("User: ", 1)[-1].rsplit("\nAssistant:", 1)[0])


def _chat_until_killed(tmp: str, round_: int, reports: str) -> None:
    from pathlib import Path

    import chatbot.session
    from tui_fakes import FakeEngine

    chatbot.session.FLUSH_EVERY_S = 0.01  # flush often: more moments to be killed in
    # memory off: the fake engine echoes the latest message, which recall would prefix with passages
    settings = settings_for(Path(tmp)).model_copy(update={"memory": "off"})
    store = Store.open(settings.database_url())  # recovers what the previous child left
    report(reports, "ready", round_)
    session = session_for(store, settings, FakeEngine(reply_for=_reply_for, delay_s=0.002), store.latest_conversation_id())
    for n in range(1000):
        question = f"round {round_} question {n}"
        reply = session.send(question, session.sampling_params())
        report(reports, "asked", question)  # the question is committed before generation
        text = reply.run()
        report(reports, "done", reply.message_id, question, text)


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path):
    ctx = forkserver()
    rng = random.Random(1234)
    reports = str(tmp_path / "reports.tsv")
    for round_ in range(KILLS):
        proc = ctx.Process(target=_chat_until_killed, args=(str(tmp_path), round_, reports))
        proc.start()
        deadline = time.monotonic() + 60
        while ["ready", str(round_)] not in read_reports(reports):
            assert proc.is_alive() and time.monotonic() < deadline, "the child did not start"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
        assert proc.exitcode == -signal.SIGKILL

    path = tmp_path / "chat.db"
    assert integrity(path) == "ok"
    lines = read_reports(reports)
    with Store.open(str(path)) as store:  # the restart: recovery runs here
        messages = store.conversation(store.latest_conversation_id()).messages
        assert integrity(path) == "ok"
    by_id = {m.id: m for m in messages}
    questions = [m.content for m in messages if m.role == "user"]
    replies = [m for m in messages if m.role == "assistant"]

    asked = [fields[1] for fields in lines if fields[0] == "asked"]
    done = [fields[1:] for fields in lines if fields[0] == "done"]
    assert len(done) >= KILLS // 4 and len(asked) >= KILLS  # the loop really ran
    assert set(asked) <= set(questions)  # every committed question is there
    for message_id, question, text in done:  # every completed turn is there, exactly
        m = by_id[int(message_id)]
        assert (m.status, m.content, by_id[m.parent_id].content) == ("complete", text, question)
    assert not any(m.status == "streaming" for m in messages)
    interrupted = [m for m in replies if m.status == "interrupted"]
    assert interrupted, "no kill landed mid-reply"
    for m in replies:  # complete: the whole reply; interrupted: a prefix of it
        full = expected_reply(by_id[m.parent_id].content)
        assert m.content == full if m.status == "complete" else full.startswith(m.content), m
    # the conversation still reads as one chain, root to the newest leaf
    with Store.open(str(path)) as store:
        branch = store.active_branch(store.latest_conversation_id())
    assert [m.parent_id for m in branch] == [None] + [m.id for m in branch[:-1]]
    assert len(branch) == len(messages)
