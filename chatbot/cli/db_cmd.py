"""`chatbot db upgrade|current|backup`: the database's schema version, upgrades and backups."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from chatbot.cli.app import app
from chatbot.cli.state import state_of
from chatbot.errors import NotFoundError, UsageError
from chatbot.store import database

db_app = typer.Typer(
    name="db", help="The database: schema version, upgrade, backup.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")


def _location(ctx: typer.Context) -> database.Location:
    return database.locate(state_of(ctx).settings.database_url())


@db_app.command()
def upgrade(ctx: typer.Context) -> None:
    """Bring the database to the latest schema (a SQLite file is backed up first)."""
    report = state_of(ctx).store(create=False).report
    where = _location(ctx).display
    if not report.upgraded:
        print(f"{where}: schema {report.revision} (latest), nothing to do")
        return
    print(f"{where}: upgraded schema from {report.previous_revision or 'empty'} to {report.revision}")
    if report.backup is not None:
        print(f"backup of the previous file: {report.backup}")


@db_app.command()
def current(ctx: typer.Context) -> None:
    """Print the database's schema version (reads only; creates nothing)."""
    location = _location(ctx)
    if location.path is not None and not location.path.exists():
        print(f"{location.display}: no database yet (it is created on first use)")
        return
    revision = database.current_revision(location)
    head = database.head_revision()
    if revision is None:
        note = "empty; created on first use"
    elif revision == head:
        note = "latest"
    elif revision in database.known_revisions():
        note = f"older than {head}; `chatbot db upgrade` upgrades it"
    else:
        note = "newer than this chatbot knows"
    print(f"{location.display}: schema {revision or 'none'} ({note})")


@db_app.command()
def backup(
    ctx: typer.Context,
    output: Path | None = typer.Option(None, "--output", "-o", help="Backup file (default: a timestamped copy beside it)."),
) -> None:
    """Copy the SQLite database (a consistent snapshot, safe while in use)."""
    location = _location(ctx)
    if location.path is None:
        raise UsageError(f"backups are for SQLite files; {location.display} is not one")
    if not location.path.exists():
        raise NotFoundError(f"no database at {location.path}")
    database.current_revision(location)  # refuses a file that is not a chatbot database
    print(database.backup_file(location.path, output))
    print("backup done", file=sys.stderr)
