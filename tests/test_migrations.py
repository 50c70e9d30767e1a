"""Migrations: upgrade from empty, down/up round trip, ORM = migrations, older/newer/foreign files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chatbot.errors import UserError
from chatbot.store import Store, database
from chatbot.store.models import Base


def schema(path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    conn.close()
    return set(rows)


def revision(path) -> str | None:
    return database.read_revision(path)


def engine_at(path, target):
    """A database migrated to `target` (not through Store.open, which goes to head)."""
    location = database.locate(str(path))
    database.create_private_file(path)
    engine = database.create_engine_for(location)
    database.upgrade(engine, location, target)
    return engine, location


def test_upgrade_from_empty(tmp_path):
    path = tmp_path / "new.db"
    with Store.open(str(path)) as store:
        assert store.report.previous_revision is None and store.report.backup is None
    assert revision(path) == database.head_revision()
    names = {name for name, _ in schema(path)}
    assert {"persona_versions", "conversations", "messages", "persona_switches", "messages_fts"} <= names


def test_pinned_head_is_alembics_head():
    # Opening a database at SCHEMA_HEAD skips alembic: a new migration must move the pin too.
    assert database.SCHEMA_HEAD == database.head_revision()


def test_opening_a_current_database_does_not_import_alembic(tmp_path):
    path = tmp_path / "c.db"
    Store.open(str(path)).close()
    code = (
        "import sys\n"
        "from chatbot.store import Store\n"
        f"store = Store.open({str(path)!r})\n"
        "store.latest_conversation_id()\n"
        "assert store.report.revision == store.report.previous_revision\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_downgrade_upgrade_round_trip(tmp_path):
    path = tmp_path / "rt.db"
    Store.open(str(path)).close()
    at_head = schema(path)
    engine, location = engine_at(path, "head")
    database.downgrade(engine, location, "0001_initial")
    assert revision(path) == "0001_initial"
    assert not any(name.startswith("messages_fts") for name, _ in schema(path))
    database.downgrade(engine, location, "base")
    assert {name for name, _ in schema(path)} == {"alembic_version"}
    database.upgrade(engine, location)
    engine.dispose()
    assert schema(path) == at_head


def test_orm_metadata_matches_migrations(tmp_path):
    path = tmp_path / "cmp.db"
    Store.open(str(path)).close()
    engine = database.create_engine_for(database.locate(str(path)))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": database.include_name, "compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_older_schema_is_backed_up_then_upgraded(tmp_path):
    path = tmp_path / "old.db"
    engine, _ = engine_at(path, "0001_initial")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO conversations (id, title, model, archived, created_at, updated_at) "
            "VALUES (1, 'old', 'm', 0, '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
        conn.exec_driver_sql(
            "INSERT INTO messages (id, conversation_id, role, content, status, created_at, updated_at) "
            "VALUES (1, 1, 'user', 'an ancient marmalade', 'complete', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        )
    engine.dispose()
    with Store.open(str(path)) as store:
        report = store.report
        assert report.previous_revision == "0001_initial" and report.upgraded
        assert [h.message_id for h in store.search("marmalade")] == [1]  # existing text was indexed
    assert report.backup is not None and report.backup.name.startswith("old.backup-")
    assert revision(report.backup) == "0001_initial"
    with sqlite3.connect(report.backup) as conn:
        assert conn.execute("SELECT content FROM messages").fetchall() == [("an ancient marmalade",)]
    conn.close()


def test_failed_migration_leaves_the_original(tmp_path):
    path = tmp_path / "fail.db"
    engine, _ = engine_at(path, "0001_initial")
    with engine.begin() as conn:  # something in the way of migration 0002
        conn.exec_driver_sql("CREATE TABLE messages_fts (x)")
    engine.dispose()
    before = schema(path)
    with pytest.raises(UserError, match="left as it was"):
        Store.open(str(path))
    assert revision(path) == "0001_initial"
    assert schema(path) == before


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "future.db"
    Store.open(str(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.close()
    original = path.read_bytes()
    with pytest.raises(UserError, match="newer than this chatbot") as err:
        Store.open(str(path))
    assert str(path) in str(err.value)
    assert path.read_bytes() == original
    assert not list(tmp_path.glob("future.backup-*"))


@pytest.mark.parametrize(
    "content",
    [
        b"this is a text file, not a database\n" * 50,
        b"SQLite format 3\x00" + bytes(range(256)) * 40,  # a SQLite header over garbage
        b"\x00" * 5000,
    ],
    ids=["text", "corrupt", "zeros"],
)
def test_non_sqlite_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        Store.open(str(path))
    assert str(path) in str(err.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_foreign_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    conn.close()
    original = path.read_bytes()
    with pytest.raises(UserError, match="not a chatbot database"):
        Store.open(str(path))
    assert path.read_bytes() == original


def test_directory_is_refused(tmp_path):
    with pytest.raises(UserError, match="directory"):
        Store.open(str(tmp_path))
