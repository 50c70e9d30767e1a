"""Opening a database: where it is, engine and SQLite pragmas, schema checks, backup, migrations.

Opening is careful about files it does not own: before anything is written, the file is read
through a read-only connection; a file that is not SQLite, is corrupt, belongs to something else
or carries a schema newer than this code is refused with a `UserError` naming it, untouched.
An older schema is upgraded after a timestamped backup copy is made, in one transaction (SQLite
has transactional DDL), so a failed migration leaves the original as it was. A file this user
cannot write is opened read-only (see docs/store.md, "Opening"); a missing one is created only
when the caller says so, and its folder only for the data dir.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.pool import StaticPool

from chatbot.errors import NotFoundError, UserError
from chatbot.locations import ensure_private_dir, shipped_folder

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory


MIGRATIONS_DIR = shipped_folder("migrations")
FTS_TABLE = "messages_fts"
BUSY_TIMEOUT_S = 15.0
VERSION_TABLE = "alembic_version"
# The newest migration's revision. A database already there opens without importing alembic (and
# mako, pygments: ~0.15 s of every command's start); tests hold it equal to alembic's own head.
SCHEMA_HEAD = "0004_postgres_search"


@dataclass(frozen=True)
class Location:
    """A database URL, and its file when it is a SQLite file (None: in memory, or another server).

    For a file: `read_only` when the URL asks for it (`?mode=ro`, `immutable=1`) or, once opened,
    when this user cannot write it; `immutable` when SQLite must also be told that nobody changes
    it (a write-ahead-log database in a folder this user cannot write: SQLite cannot make the
    `-shm` file it reads through); `must_exist` for `?mode=rw`.
    """

    url: str
    path: Path | None
    dialect: str
    read_only: bool = False
    immutable: bool = False
    must_exist: bool = False

    @property
    def display(self) -> str:
        if self.path is not None:
            return str(self.path)
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def engine_url(self) -> str:
        if self.path is None or not self.read_only:
            return self.url
        return f"sqlite:///{read_only_uri(self.path, self.immutable)}&uri=true"


@dataclass(frozen=True)
class OpenReport:
    """What opening did: the schema before and after, the backup made, replies recovered."""

    previous_revision: str | None
    revision: str
    backup: Path | None = None
    recovered: int = 0

    @property
    def upgraded(self) -> bool:
        return self.previous_revision != self.revision


# The query parameters a SQLite file URL may carry (SQLAlchemy's own, or SQLite URI ones with
# `uri=true`): anything else would be silently ignored or warned about, so it is refused.
SQLITE_FILE_PARAMETERS = {"mode": ("ro", "rw", "rwc"), "immutable": ("0", "1"), "uri": ("true", "false")}


def locate(url: str) -> Location:
    """Where a database is: a SQLAlchemy URL, or (as for `--db`) a plain path to a SQLite file.

    A SQLite file may be named by a path (`sqlite:///chat.db`) or a SQLite URI
    (`sqlite:///file:chat.db?mode=ro&uri=true`); `mode=ro` (with or without `uri=true`) and
    `immutable=1` open it read-only, `mode=rw` only if it exists. A URL SQLite would misread is a
    UsageError."""
    if "://" not in url:
        path = Path(url).expanduser().absolute()
        return Location(f"sqlite:///{path}", path, "sqlite")
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(f"not a database path or URL: {url!r}", exit_code=2) from exc
    dialect = parsed.get_backend_name()
    if dialect != "sqlite":
        return Location(url, None, dialect)
    database = parsed.database or ""
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    if database in ("", ":memory:") or query.get("mode") == "memory" or _memory_uri(database):
        return Location(url, None, dialect)
    if database.startswith("file:"):
        uri = urllib.parse.urlsplit(database)
        query = {**dict(urllib.parse.parse_qsl(uri.query)), **query}
        database = urllib.parse.unquote(uri.path)
        if not database:
            raise UserError(f"no file named in the database URL {url!r}", exit_code=2)
    for key, value in query.items():
        allowed = SQLITE_FILE_PARAMETERS.get(key)
        if allowed is None or value not in allowed:
            supported = ", ".join(f"{k}={'|'.join(v)}" for k, v in SQLITE_FILE_PARAMETERS.items())
            raise UserError(f"unsupported parameter {key}={value} in the database URL {url!r} (supported: {supported})", exit_code=2)
    path = Path(database).expanduser().absolute()
    read_only = query.get("mode") == "ro" or query.get("immutable") == "1"
    return Location(
        f"sqlite:///{path}", path, dialect, read_only=read_only,
        immutable=query.get("immutable") == "1", must_exist=query.get("mode") == "rw",
    )


def _memory_uri(database: str) -> bool:
    return database.startswith("file:") and "mode=memory" in database


# --- Alembic ---------------------------------------------------------------------------------


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Hide the FTS5 index (a virtual table and its shadow tables) from autogenerate."""
    return not (type_ == "table" and (name or "").startswith(FTS_TABLE))


def alembic_config(url: str | None = None, connection: object | None = None) -> Config:
    from alembic.config import Config

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise UserError(f"the migrations folder is missing: {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in script_directory().walk_revisions()}


def check_revision(revision: str | None, where: str) -> None:
    if revision is not None and revision not in known_revisions():
        raise UserError(
            f"{where} has schema version {revision!r}, newer than this chatbot knows "
            f"(latest {head_revision()!r}); upgrade the chatbot to use it. The file was not changed."
        )


# --- Read-only inspection ------------------------------------------------------------------------


def read_only_uri(path: Path, immutable: bool = False) -> str:
    return f"file:{urllib.parse.quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")


def _readonly(path: Path, immutable: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(read_only_uri(path, immutable), uri=True, timeout=BUSY_TIMEOUT_S)


def _cannot_open(exc: sqlite3.Error) -> bool:
    """SQLite could not open the file for reading at all (as opposed to: it is not a database)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or (
        not name and ("readonly database" in str(exc) or "unable to open" in str(exc))
    )


def needs_immutable(path: Path) -> bool:
    """Whether reading needs `immutable=1`: a write-ahead-log database whose `-shm` file SQLite
    cannot make (a read-only folder, a read-only mount). That is only right while no log holds
    changes; a log with changes it cannot read through is a UserError (reading around it would
    show old contents)."""
    try:
        with _closing(_readonly(path)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return False
    except sqlite3.DatabaseError as exc:
        if not _cannot_open(exc):
            return False  # not ours to judge here: read_revision names the problem
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise UserError(
            f"cannot read {path}: its write-ahead log {wal.name} holds changes, and SQLite cannot make "
            f"the {path.name}-shm file it needs to read them in a folder this user cannot write; "
            "open it once where it can be written. It was not changed"
        )
    return True


def writable(path: Path) -> bool:
    """Whether this user can change the file: the file and its folder (SQLite makes `-wal`,
    `-shm` and journal files beside it). A read-only mount counts as not writable."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def read_revision(path: Path, immutable: bool = False) -> str | None:
    """The schema revision of a SQLite file, read without writing; None for an empty database.

    Raises UserError (naming the file) for a directory, a non-SQLite or corrupt file, or a SQLite
    database that is not a chatbot database.
    """
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a database file")
    if path.stat().st_size == 0:
        return None
    try:
        with _closing(_readonly(path, immutable)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                return None
            if VERSION_TABLE not in tables:
                raise UserError(f"{path} is a SQLite database but not a chatbot database; refusing to change it")
            rows = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    except sqlite3.DatabaseError as exc:
        if _cannot_open(exc):
            raise UserError(f"cannot read {path} ({exc}); it was not changed") from exc
        raise UserError(f"{path} is not a SQLite database or is corrupt ({exc}); it was not changed") from exc
    if len(rows) > 1:
        raise UserError(f"{path} has several schema heads ({', '.join(r[0] for r in rows)}); refusing to change it")
    return rows[0][0] if rows else None


class _closing:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def current_revision(location: Location) -> str | None:
    """The schema revision without writing anything (None: no database yet, or an empty one)."""
    if location.path is not None:
        path = location.path
        return read_revision(path, location.immutable or needs_immutable(path)) if path.exists() else None
    engine = create_engine_for(location)
    try:
        return current_revision_of(engine)
    finally:
        engine.dispose()


# --- Engine ------------------------------------------------------------------------------------


def create_engine_for(location: Location) -> Engine:
    """An engine; for SQLite with WAL, foreign keys, a busy timeout, and BEGIN under our control.

    Transactions begin with a plain BEGIN; an engine derived with
    `engine.execution_options(sqlite_begin="IMMEDIATE")` takes the write lock up front, so that a
    writer waits for another (busy timeout) instead of failing when it upgrades a read lock.
    """
    if not location.is_sqlite:
        try:
            engine = create_engine(location.url, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError) as exc:  # an unknown dialect, or its driver is missing
            raise UserError(f"cannot use {location.display}: {exc}") from exc
        if location.dialect == "postgresql":
            take_turns(engine)
        return engine
    if location.path is None:
        engine = create_engine(
            location.url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_engine(location.engine_url, connect_args={"timeout": BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        dbapi_conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")
        if location.path is not None and not location.read_only:
            _retry_busy(lambda: dbapi_conn.execute("PRAGMA journal_mode = WAL").fetchall())
            dbapi_conn.execute("PRAGMA synchronous = FULL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: object) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")  # type: ignore[attr-defined]
        conn.exec_driver_sql(f"BEGIN {mode}".strip())  # type: ignore[attr-defined]

    return engine


# PostgreSQL's "try again": serialization failure, deadlock (SQLSTATE 40001, 40P01).
RETRY_SQLSTATES = ("40001", "40P01")


# The store's transactions on one PostgreSQL database take turns on this advisory lock.
PG_TURN_LOCK = 0x63686174  # "chat"


def take_turns(engine: Engine) -> None:
    """Each transaction on PostgreSQL first takes one transaction-scoped advisory lock: the
    store's checks (a turn continues its branch and never forks it, a reply is finished once)
    were written for SQLite, whose writers take turns, and READ COMMITTED then sees the previous
    holder's commits. SERIALIZABLE would do as much but fails many transactions of six busy
    writers (predicate locks are coarse) past any sensible number of retries. Transactions here
    are short (one turn's rows), as they are for SQLite's write lock."""

    @event.listens_for(engine, "begin")
    def _take_turn(conn: object) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_TURN_LOCK})")  # type: ignore[attr-defined]


def is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in RETRY_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def _retry_busy(action, attempts: int = 8):  # type: ignore[no-untyped-def]
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * 2**attempt, 1.0))
    return None


def translate_error(exc: DatabaseError, location: Location) -> Exception:
    """A user-facing error for a database failure a user can cause (corrupt file, lock held too long)."""
    orig = getattr(exc, "orig", None)
    if isinstance(exc, OperationalError) and is_busy(exc):
        return UserError(f"{location.display} stayed busy (another process kept it locked); try again")
    if not location.is_sqlite and isinstance(exc, OperationalError):  # a server down, refused, or gone
        first = (str(orig or exc).strip().splitlines() or [type(exc).__name__])[0]
        return UserError(f"cannot use {location.display}: {first}")
    if type(orig) is sqlite3.DatabaseError or "malformed" in str(orig):
        return UserError(f"{location.display} is not a SQLite database or is corrupt ({orig})")
    text = str(orig).lower()
    if "nul (0x00)" in text:  # PostgreSQL's text cannot hold NUL, SQLite's can
        return WriteFailure(f"{location.display} cannot store the NUL character (\\x00) in text: this was not saved")
    for cause, says in _WRITE_FAILURES.items():
        if cause in text:
            what = says.format(db=location.display)
            kind = ReadOnlyDatabase if cause == "readonly database" else WriteFailure
            return kind(f"{what}: this was not saved (what was saved before is intact)")
    return exc


class WriteFailure(UserError):
    """A write SQLite could not do (a full disk, an I/O error...): reads may still work."""


class ReadOnlyDatabase(WriteFailure):
    """A write refused because the database is read-only (reads still work)."""


# SQLite's words for a write it cannot do, and how the user hears it.
_WRITE_FAILURES = {
    "database or disk is full": "the disk is full ({db})",
    "readonly database": "{db} is read-only",
    "disk i/o error": "{db} could not be written (disk I/O error)",
    "unable to open database file": "{db} could not be opened for writing",
}


# --- Files and backups -------------------------------------------------------------------------


def create_private_file(path: Path, create_folders: bool = True) -> None:
    """Create an empty database file readable by its owner only. A missing folder is created (0700)
    only with `create_folders` (the data dir); otherwise it is a UserError, as is a parent that is
    not a folder, or one this user cannot write."""
    parent = path.parent
    try:
        is_folder = parent.is_dir()
    except OSError as exc:
        raise UserError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if not is_folder:
        if parent.exists():
            raise UserError(f"cannot create {path}: {parent} is not a folder")
        if not create_folders:
            raise UserError(f"cannot create {path}: the folder {parent} does not exist")
        ensure_private_dir(parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.fchmod(fd, 0o600)  # os.open's mode is filtered through the umask
        finally:
            os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError(f"cannot create {path}: {exc.strerror or exc}") from exc


def backup_path_for(path: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.stem}.backup-{stamp}{path.suffix}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.backup-{stamp}-{n}{path.suffix}")
        n += 1
    return candidate


def backup_file(path: Path, dest: Path | None = None) -> Path:
    """A consistent copy of a SQLite file (WAL content included) through SQLite's backup API, 0600."""
    dest = backup_path_for(path) if dest is None else dest.expanduser().absolute()
    if dest.exists():
        raise UserError(f"{dest} already exists; not overwriting it")
    if dest.resolve() == path.resolve():
        raise UserError(f"cannot back up {path} onto itself")
    create_private_file(dest, create_folders=False)
    try:
        with _closing(_readonly(path, needs_immutable(path))) as source, _closing(sqlite3.connect(dest)) as target:
            source.backup(target)
    except sqlite3.Error as exc:
        dest.unlink(missing_ok=True)
        raise UserError(f"could not back up {path} to {dest}: {exc}") from exc
    return dest


# --- Opening -----------------------------------------------------------------------------------


class NoDatabase(NotFoundError):
    """A command that only reads found no database file (it creates none)."""


def open_database(
    url: str, create: bool = True, create_folders: bool = True
) -> tuple[Engine, Location, OpenReport]:
    """Open and bring the schema to head; see the module docstring. A missing SQLite file is
    created only with `create` (NoDatabase otherwise), and its missing folder only with
    `create_folders` (the data dir). A file this user cannot write (or `?mode=ro`) is opened
    read-only: it can be read at the latest schema; anything else about it is a UserError."""
    location = locate(url)
    before = backup = None
    if location.path is not None:
        location = _prepare_file(location, create, create_folders)
        before = read_revision(location.path, location.immutable)
        if before == SCHEMA_HEAD:  # the common case: nothing to check or migrate
            return create_engine_for(location), location, OpenReport(previous_revision=before, revision=before)
        check_revision(before, str(location.path))
        if location.read_only:
            schema = "no schema yet" if before is None else f"the older schema {before}"
            raise ReadOnlyDatabase(
                f"{location.path} is read-only and has {schema}; it can be used once it can be written "
                "(it was not changed)"
            )
    head = head_revision()
    if before is not None and before != head:
        backup = backup_file(location.path)
    engine = create_engine_for(location)
    try:
        if location.path is None:
            try:
                before = current_revision_of(engine)
            except DatabaseError as exc:
                raise translate_error(exc, location) from exc
            check_revision(before, location.display)
        if before != head:
            try:
                upgrade(engine, location)
            except UserError:
                raise
            except Exception as exc:
                kept = f"; a backup is at {backup}" if backup else ""
                raise UserError(
                    f"upgrading {location.display} from schema {before or 'empty'} failed ({exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); the database was left as it was{kept}"
                ) from exc
    except BaseException:
        engine.dispose()
        raise
    return engine, location, OpenReport(previous_revision=before, revision=head, backup=backup)


def _prepare_file(location: Location, create: bool, create_folders: bool) -> Location:
    """The file there (created if it may be), and how it can be opened: read-only when this user
    cannot write it, immutable when SQLite could not read it otherwise."""
    path = location.path
    assert path is not None
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a folder on the way this user may not look into
        raise UserError(f"cannot open {path}: {exc.strerror or exc}") from exc
    if not exists:
        if not create or location.must_exist or location.read_only:
            raise NoDatabase(f"no database at {path}")
        create_private_file(path, create_folders)
    read_only = location.read_only or not writable(path)
    immutable = location.immutable or (read_only and needs_immutable(path))
    return replace(location, read_only=read_only, immutable=immutable)


def current_revision_of(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, location: Location, target: str = "head") -> None:
    """Run the migrations in one transaction, holding the write lock (so two processes starting on
    a new file do not both migrate: the second sees the first's result and does nothing)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    writer = engine.execution_options(sqlite_begin="IMMEDIATE") if location.is_sqlite else engine
    try:
        with writer.begin() as conn:
            check_revision(MigrationContext.configure(conn).get_current_revision(), location.display)
            command.upgrade(alembic_config(connection=conn), target)
    except DatabaseError as exc:
        raise translate_error(exc, location) from exc


def downgrade(engine: Engine, location: Location, target: str) -> None:
    from alembic import command

    writer = engine.execution_options(sqlite_begin="IMMEDIATE") if location.is_sqlite else engine
    with writer.begin() as conn:
        command.downgrade(alembic_config(connection=conn), target)
