"""Six processes `--continue` one conversation at once (issue 13: five turns ended on hidden side
branches and one question was parented on another question). A turn continues the branch it
was given or is refused with one line; a user message follows a finished reply or the root."""

from __future__ import annotations

from reliability_helpers import forkserver, session_for, settings_for

from chatbot.engine.sampling import SamplingParams
from chatbot.errors import UserError
from chatbot.store import Store

WRITERS = 6
PARAMS = SamplingParams(temperature=0, max_new_tokens=16)


def _continue(tmp_path, tag: str, ready, start, outcomes) -> None:
    settings = settings_for(tmp_path)
    with Store.open(settings.database_url()) as store:
        session = session_for(store, settings, conversation_id=store.latest_conversation_id())  # as `ask -c`
        ready.put(tag)
        start.wait(60)
        try:
            session.send(f"{tag} question", PARAMS).run()
            outcomes.put((tag, "sent"))
        except UserError as exc:
            outcomes.put((tag, str(exc)))


def test_concurrent_continues_never_fork_the_conversation(tmp_path):
    settings = settings_for(tmp_path)
    with Store.open(settings.database_url()) as store:
        first = session_for(store, settings)
        first.send("first question", PARAMS).run()
        conversation = first.conversation_id
    ctx = forkserver()
    ready, start, outcomes = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_continue, args=(tmp_path, f"p{n}", ready, start, outcomes)) for n in range(WRITERS)]
    for p in procs:
        p.start()
    for _ in procs:  # every writer has loaded the branch before any sends
        ready.get(timeout=120)
    start.set()
    for p in procs:
        p.join(120)
    results = dict(outcomes.get(timeout=5) for _ in procs)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    sent = [tag for tag, outcome in results.items() if outcome == "sent"]
    refused = {outcome for outcome in results.values() if outcome != "sent"}
    assert len(sent) == 1, results  # they all continued the same reply: the first one wins
    assert refused == {f"conversation {conversation} moved on while this message was being sent (another message "
                       "was added to it): nothing was sent; open it again to see the new turn, then send again"}

    with Store.open(settings.database_url()) as store:
        messages = store.conversation(conversation).messages
        by_id = {m.id: m for m in messages}
        for m in messages:
            if m.role == "user" and m.parent_id is not None:
                assert by_id[m.parent_id].role == "assistant" and by_id[m.parent_id].status == "complete"
        children = [m.parent_id for m in messages]
        assert all(children.count(m.id) <= 1 for m in messages)  # no side branches
        assert [m.content for m in store.active_branch(conversation) if m.role == "user"] == [
            "first question", f"{sent[0]} question"]
        # a refused writer that opens the conversation again continues it
        again = session_for(store, settings, conversation_id=conversation)
        again.send("after the race", PARAMS).run()
        assert store.active_branch(conversation)[-2].content == "after the race"


def test_an_edit_still_makes_a_sibling_and_an_unanswered_question_gets_an_empty_reply(tmp_path):
    settings = settings_for(tmp_path)
    with Store.open(settings.database_url()) as store:
        session = session_for(store, settings)
        session.send("one", PARAMS).run()
        session.send("two", PARAMS).run()
        two = store.active_branch(session.conversation_id)[2]
        session.branch_before(two.id)
        session.send("two, edited", PARAMS).run()
        assert len(store.siblings(two.id)) == 2
        # a question stored alone (as before replies were stored with their question)
        leaf = store.active_branch(session.conversation_id)[-1].id
        lonely = store.add_user_message(session.conversation_id, "no reply", leaf)
        after = store.add_user_message(session.conversation_id, "next", lonely)
        branch = store.active_branch(session.conversation_id, after)
        assert [(m.role, m.content, m.status) for m in branch[-3:]] == [
            ("user", "no reply", "complete"), ("assistant", "", "interrupted"), ("user", "next", "complete")]


def test_plain_chat_goes_on_after_another_process_took_a_turn(tmp_path, monkeypatch, capsys):
    import io

    from reliability_helpers import run_cli

    settings = settings_for(tmp_path)
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHATBOT_DB", settings.db)
    with Store.open(settings.database_url()) as store:
        session_for(store, settings).send("first question", PARAMS).run()

    class Typing(io.StringIO):
        """Before the chat reads its second line, another writer takes a turn in the conversation."""

        def readline(self, *args):
            line = super().readline(*args)
            if line == "two\n":
                with Store.open(settings.database_url()) as other:
                    session_for(other, settings, conversation_id=other.latest_conversation_id()).send(
                        "elsewhere", PARAMS).run()
            return line

    monkeypatch.setattr("sys.stdin", Typing("one\ntwo\nthree\n"))
    code, out, err, _ = run_cli(["chat", "--plain", "--continue"], monkeypatch, capsys)
    assert code == 0 and "Traceback" not in err
    assert err.count("moved on") == 1 and "open again at its latest turn" in err
    with Store.open(settings.database_url()) as store:
        users = [m.content for m in store.active_branch(store.latest_conversation_id()) if m.role == "user"]
    assert users == ["first question", "one", "elsewhere", "three"]  # "two" was refused, nothing forked
