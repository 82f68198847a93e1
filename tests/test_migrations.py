"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from models import Base


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _partial_index(connection: Connection, name: str) -> str:
    """The SQL the database keeps for an index (autogenerate does not compare partial-index conditions)."""
    if connection.dialect.name == "sqlite":
        query = text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name")
    else:
        query = text("SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    return str(connection.execute(query, {"name": name}).scalar_one())


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            differences = await connection.run_sync(_differences)
            open_visits = await connection.run_sync(lambda sync: _partial_index(sync, "uq_visits_open"))
            active_grants = await connection.run_sync(lambda sync: _partial_index(sync, "uq_grants_active"))
    finally:
        await engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert differences == []
    for status in ("queued", "registered", "verified", "vaccinated", "observing"):
        assert f"'{status}'" in open_visits
    assert "revoked_at IS NULL" in active_grants.replace("(", "").replace(")", "")
