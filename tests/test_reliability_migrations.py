"""Upgrading a copy of every earlier schema version with data in it (the frozen files in
tests/fixtures/, made by make_fixtures.py) keeps every row; an upgrade killed before it commits
leaves the original file usable and unchanged."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from reliability_helpers import dump, forkserver, integrity

from chatbot.store import Store, database

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("db-*.sqlite"))


def revision_of(path: Path) -> str:
    return path.stem.removeprefix("db-")


def test_a_fixture_for_every_revision():
    revisions = {s.revision for s in database.script_directory().walk_revisions()}
    assert {revision_of(p) for p in FIXTURES} == revisions, "run tests/fixtures/make_fixtures.py"


def columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {t: [c[1] for c in conn.execute(f'PRAGMA table_info("{t}")')] for t in dump(path)}
    finally:
        conn.close()


def rows_in(path: Path, table: str, names: list[str]) -> set[tuple]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute(f'SELECT {", ".join(names)} FROM "{table}"').fetchall())
    finally:
        conn.close()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[revision_of(p) for p in FIXTURES])
def test_upgrade_keeps_every_row(tmp_path, fixture):
    path = tmp_path / "chat.db"
    shutil.copy(fixture, path)
    before_columns = columns(path)
    before = {t: rows_in(path, t, cols) for t, cols in before_columns.items() if t != "alembic_version"}
    with Store.open(str(path)) as store:
        assert store.report.previous_revision == revision_of(fixture)
        assert store.report.recovered == 0
        record = store.conversation(1)
        long_hit = store.search("lorem ipsum")
        nul_text = store.active_branch(1, 3)[-1].content
    assert database.read_revision(path) == database.head_revision()
    assert integrity(path) == "ok"
    for table, rows in before.items():  # every row, every old column, value for value
        assert rows_in(path, table, before_columns[table]) == rows, table
    assert len(record.messages) == 7 and len(record.persona_switches) == 1
    assert [h.message_id for h in long_hit] == [6]  # old text is searchable after the upgrade
    assert nul_text.startswith("nul \x00 esc \x1b[31m")
    if store.report.backup is not None:  # the copy taken before upgrading is the original
        assert dump(store.report.backup) == dump(fixture)


def _upgrade_then_die(path: str) -> None:
    from alembic import command

    real = command.upgrade

    def upgrade_and_die(config, target):
        real(config, target)  # every migration ran; the transaction is not committed yet
        os.kill(os.getpid(), signal.SIGKILL)

    command.upgrade = upgrade_and_die
    Store.open(path)


@pytest.mark.parametrize("fixture", FIXTURES[:-1], ids=[revision_of(p) for p in FIXTURES[:-1]])
def test_upgrade_killed_before_commit_leaves_the_original(tmp_path, fixture):
    path = tmp_path / "chat.db"
    shutil.copy(fixture, path)
    before = dump(path)
    proc = forkserver().Process(target=_upgrade_then_die, args=(str(path),))
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    assert integrity(path) == "ok"
    assert database.read_revision(path) == revision_of(fixture)
    assert dump(path) == before
    with Store.open(str(path)) as store:  # and it upgrades fine next time
        assert store.report.previous_revision == revision_of(fixture)
        assert len(store.conversation(1).messages) == 7
