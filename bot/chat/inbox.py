"""The inbox: an update is written here before the platform hears it acknowledged, unless already processed.

An update whose transaction commits before the platform's deadline needs no inbox row: the commit itself
makes it durable (and a retry finds its delivery key). One still running at the deadline is written here
first, then acknowledged; the engine goes on with it and deletes the row once its transaction has
committed. Rows are written in groups: every update that reaches its deadline while a write is in flight
joins the next one, a single multi-row INSERT in one short transaction, on a connection of its own so
that it never queues behind the updates it is there to protect.

Each process signs its rows with an owner name and holds a lease on them, renewed while it works. A row
whose lease lapsed was left by a process that died; :meth:`Inbox.take_abandoned` hands it to the engine of
a live process, which runs it like any update (a delivery key already committed makes it a duplicate, so
nothing takes effect twice).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.core.config import Settings
from bot.core.db import create_engine, dialect_insert
from bot.core.pii import Vault
from bot.core.update import Platform, Update, UpdateKind
from models import Base, InboxUpdate, utcnow

log = logging.getLogger("vaxbot.inbox")

FIELD = "inbox_update"  # bound into the sealed update
# Arrivals within this of the first one share its transaction (a bounded wait: the write then starts).
LINGER_SECONDS = 0.002
BATCH = 500

Key = tuple[str, str, str]  # (platform, app id, delivery key)


async def inbox_database(settings: Settings, main: AsyncEngine) -> AsyncEngine:
    """The engine the inbox writes through: one connection of its own.

    On PostgreSQL, the ``inbox`` table of the main database. On SQLite a sibling file
    (``vaxbot.inbox.db`` beside ``vaxbot.db``) holds it: SQLite has one writer per file, and a handler's
    transaction keeps the main file's write lock for as long as the handler runs, which is exactly when
    a late update must be written down. (The main file's ``inbox`` table, made by the migrations, stays
    empty.) An in-memory database cannot be shared: there the inbox uses ``main`` itself.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite":
        return create_engine(settings, pool_size=1, max_overflow=0, pool_timeout=30)
    if url.database in (None, "", ":memory:"):
        return main
    path = Path(url.database)
    sibling = path.with_name(f"{path.stem}.inbox{path.suffix or '.db'}")
    sibling_url = url.set(database=str(sibling)).render_as_string(hide_password=False)
    engine = create_engine(dataclasses.replace(settings, database_url=sibling_url))
    table = Base.metadata.tables[InboxUpdate.__tablename__]
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: table.create(sync, checkfirst=True))
    return engine


def inbox_key(update: Update) -> Key:
    """The row's unique key: the update's delivery key on its platform and app."""
    return (update.platform.value, update.app_id, update.dedupe_key)


def seal_update(vault: Vault, update: Update) -> bytes:
    """The update as sealed JSON (its text may be an ID number)."""
    document = {
        "platform": update.platform.value,
        "app_id": update.app_id,
        "user_id": update.user_id,
        "kind": update.kind.value,
        "created_at": update.created_at.isoformat(),
        "message_id": update.message_id,
        "text": update.text,
        "key": update.key,
        "raw_type": update.raw_type,
        "extra": dict(update.extra),
    }
    return vault.seal(FIELD, json.dumps(document, ensure_ascii=False, separators=(",", ":")))


def open_update(vault: Vault, blob: bytes) -> Update:
    """Inverse of :func:`seal_update`."""
    document = json.loads(vault.open(FIELD, blob))
    return Update(
        platform=Platform(document["platform"]),
        app_id=document["app_id"],
        user_id=document["user_id"],
        kind=UpdateKind(document["kind"]),
        created_at=datetime.fromisoformat(document["created_at"]),
        message_id=document["message_id"],
        text=document["text"],
        key=document["key"],
        raw_type=document["raw_type"],
        extra=dict(document["extra"]),
    )


class Inbox:
    """Writes late updates durably in groups, renews this process's leases, hands over abandoned rows."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: Vault,
        *,
        lease: timedelta,
        linger: float = LINGER_SECONDS,
        owner: str | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._vault = vault
        self.lease = lease
        self._linger = linger
        self.owner = owner or secrets.token_hex(8)
        self._pending: list[tuple[dict[str, object], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._done: list[Key] = []
        self._deleter: asyncio.Task[None] | None = None
        # Rows of this process whose update is still being processed: the only ones whose lease it renews.
        self._held: dict[Key, int] = {}
        self.written = 0  # rows written since start (for tests and benchmarks)

    async def keep(self, update: Update, received_at: datetime) -> None:
        """Return once ``update`` is durable in the inbox (grouped with other arrivals); raises if it is not."""
        key = inbox_key(update)
        self._held[key] = self._held.get(key, 0) + 1
        values: dict[str, object] = {
            "platform": key[0],
            "app_id": key[1],
            "dedupe_key": key[2],
            "update_enc": seal_update(self._vault, update),
            "owner": self.owner,
            "lease_until": utcnow() + self.lease,
            "received_at": received_at,
        }
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((values, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        try:
            await asyncio.shield(future)
        except BaseException:
            self._release(key)
            raise

    async def _write(self) -> None:
        while self._pending:
            await asyncio.sleep(self._linger)  # a bounded wait for those arriving at the same instant
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            rows = list({(row["platform"], row["app_id"], row["dedupe_key"]): row for row, _ in batch}.values())
            try:
                async with self._sessionmaker() as session, session.begin():
                    insert = dialect_insert(session)
                    statement = insert(InboxUpdate).on_conflict_do_nothing(
                        index_elements=["platform", "app_id", "dedupe_key"]
                    )
                    await session.execute(statement, rows)
            except Exception as exc:
                log.exception("could not write the inbox", extra={"rows": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.written += len(rows)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def done(self, update: Update) -> None:
        """The update's transaction has committed: its row goes (in a group, off the request path)."""
        key = inbox_key(update)
        self._release(key)
        self._done.append(key)
        if self._deleter is None or self._deleter.done():
            self._deleter = asyncio.create_task(self._delete())

    def abandon(self, update: Update) -> None:
        """The update could not be recorded: stop renewing its row, so that recovery takes it up."""
        self._release(inbox_key(update))

    def _release(self, key: Key) -> None:
        count = self._held.get(key, 0)
        if count <= 1:
            self._held.pop(key, None)
        else:
            self._held[key] = count - 1

    async def _delete(self) -> None:
        while self._done:
            keys, self._done = self._done[:BATCH], self._done[BATCH:]
            try:
                await self.forget(keys)
            except Exception:
                # Left behind, the rows lapse and recovery finds their updates already processed.
                log.exception("could not delete processed inbox rows; recovery will", extra={"rows": len(keys)})

    async def forget(self, keys: Sequence[Key]) -> None:
        """Delete the rows of updates whose transaction has committed."""
        if not keys:
            return
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                delete(InboxUpdate).where(
                    tuple_(InboxUpdate.platform, InboxUpdate.app_id, InboxUpdate.dedupe_key).in_(list(keys))
                )
            )

    async def renew(self) -> int:
        """Extend this process's leases on the rows it is still working on; how many it holds."""
        keys = list(self._held)
        now = utcnow()
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(InboxUpdate)
                    .where(
                        InboxUpdate.owner == self.owner,
                        tuple_(InboxUpdate.platform, InboxUpdate.app_id, InboxUpdate.dedupe_key).in_(chunk),
                    )
                    .values(lease_until=now + self.lease)
                )
        return len(keys)

    async def take_abandoned(self, limit: int = BATCH) -> list[tuple[Update, datetime]]:
        """Take over rows whose lease lapsed (their process died), oldest first: (update, received at)."""
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            lapsed = (
                select(InboxUpdate.id)
                .where(InboxUpdate.lease_until < now)
                .order_by(InboxUpdate.id)
                .limit(limit)
                .scalar_subquery()
            )
            # The lease is checked again by the UPDATE itself: of two processes recovering at once, one wins.
            result = await session.execute(
                update(InboxUpdate)
                .where(InboxUpdate.id.in_(lapsed), InboxUpdate.lease_until < now)
                .values(owner=self.owner, lease_until=now + self.lease)
                .returning(InboxUpdate.id, InboxUpdate.update_enc, InboxUpdate.received_at)
            )
            taken = sorted(result.all())
        updates: list[tuple[Update, datetime]] = []
        for row_id, blob, received_at in taken:
            try:
                update_ = open_update(self._vault, blob)
            except Exception:
                # Kept, not dropped: its lease lapses again and an operator with the right key can act.
                log.exception("an inbox row cannot be opened (wrong key?)", extra={"inbox_id": row_id})
                continue
            key = inbox_key(update_)
            self._held[key] = self._held.get(key, 0) + 1
            updates.append((update_, received_at))
        return updates

    async def drain(self) -> None:
        """Wait for the writes and deletions in flight (graceful shutdown)."""
        for task in (self._writer, self._deleter):
            if task is not None and not task.done():
                await asyncio.wait({task}, timeout=10)
