"""Alembic environment. The store runs it programmatically (chatbot.store.database.alembic_config):
it hands over an open connection (already inside the transaction that makes the upgrade
all-or-nothing) in `config.attributes["connection"]`. Run offline (`--sql`) it renders SQL for SQLite.
"""

from alembic import context
from sqlalchemy import create_engine

from chatbot.store.database import include_name
from chatbot.store.models import Base

config = context.config
target_metadata = Base.metadata
OPTIONS = dict(target_metadata=target_metadata, render_as_batch=True, include_name=include_name)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "sqlite://",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
