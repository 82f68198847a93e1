"""Alembic environment: runs on a connection handed in by vaxbot, or on VAXBOT_DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import models
from bot.core.config import load_settings
from bot.core.db import create_engine
from bot.core.keys import load_keyring
from bot.core.pii import Vault

target_metadata = models.Base.metadata


def _configured_vault() -> Vault:
    """The vault of the configured keys directory, for a run that was not handed one."""
    settings = load_settings()
    return Vault(load_keyring(settings.keys_dir, private=settings.production))  # production: 0600 key files


def _foreign_keys(connection: Connection, on: bool) -> None:
    # Why on the driver's cursor: SQLite ignores this pragma inside a transaction, and SQLAlchemy's
    # execute would open one first. Batch migrations copy a table, drop the old one and rename the copy;
    # with foreign keys on, the drop would cascade into (or be refused by) the tables that point at it.
    cursor = connection.connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # Migrations that seal stored data open the vault only when there is data to seal.
    given = context.config.attributes.get("vault")
    context.config.attributes["open_vault"] = (lambda: given) if given is not None else _configured_vault
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    _foreign_keys(connection, on=False)
    try:
        with context.begin_transaction():
            context.run_migrations()
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if problems:
                raise RuntimeError(f"migrations left {len(problems)} broken foreign key(s); nothing was committed")
        if connection.in_transaction():
            connection.commit()
    finally:
        if connection.in_transaction():
            connection.rollback()
        _foreign_keys(connection, on=True)


async def _run_async() -> None:
    engine = create_engine(load_settings())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
