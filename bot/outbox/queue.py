"""The outbox: every outbound message is a row first; a worker delivers it with retries and back-off."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.metrics import Metrics
from bot.core.scheduler import Scheduler
from bot.core.update import OutMessage, message_to_payload
from models import OutboxKind, OutboxMessage, OutboxStatus, PlatformAccount, utcnow

log = logging.getLogger("vaxbot.outbox")

LEASE = timedelta(seconds=60)


class SendError(Exception):
    """A delivery failed; ``retryable`` says whether trying again later can help."""

    def __init__(self, code: str, message: str = "", *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable
        self.retry_after = retry_after


class Sender(Protocol):
    """Delivers one outbox row on one platform, or raises :class:`SendError`."""

    async def send(self, row: OutboxMessage) -> None:
        """Deliver ``row``."""


def addressee(row: OutboxMessage) -> ColumnElement[bool]:
    """A WHERE clause on ``platform_accounts`` for the account an outbox row is addressed to."""
    return and_(
        PlatformAccount.platform == row.platform,
        PlatformAccount.app_id == row.app_id,
        PlatformAccount.user_id == row.recipient,
    )


async def mark_unfollowed(sessions: async_sessionmaker[AsyncSession], row: OutboxMessage) -> None:
    """The platform says the row's recipient no longer follows us: record it on their account."""
    async with sessions() as session, session.begin():
        await session.execute(update(PlatformAccount).where(addressee(row)).values(following=False))


def enqueue(
    session: AsyncSession,
    *,
    platform: str,
    app_id: str,
    recipient: str,
    kind: OutboxKind,
    payload: Mapping[str, Any],
    available_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> OutboxMessage:
    """Add an outbound message to the session; it is sent once the transaction commits."""
    row = OutboxMessage(**_new_row(platform, app_id, recipient, kind, payload, available_at, idempotency_key))
    session.add(row)
    return row


def _new_row(
    platform: str,
    app_id: str,
    recipient: str,
    kind: OutboxKind,
    payload: Mapping[str, Any],
    available_at: datetime | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    now = utcnow()
    return {
        "platform": platform,
        "app_id": app_id,
        "recipient": recipient,
        "kind": kind,
        "payload": dict(payload),
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "available_at": available_at or now,
        "created_at": now,
        "idempotency_key": idempotency_key,
        "sent_at": None,
    }


def new_rows(
    *,
    platform: str,
    app_id: str,
    recipient: str,
    messages: Sequence[OutMessage],
    idempotency_keys: Sequence[str],
    available_at: datetime | None = None,
    first_passive: bool = False,
) -> list[dict[str, Any]]:
    """The outbox rows for conversational messages to one recipient (see :func:`enqueue_messages`)."""
    values = [
        _new_row(platform, app_id, recipient, *message_to_payload(message), available_at, key)
        for message, key in zip(messages, idempotency_keys, strict=True)
    ]
    if values and first_passive:
        values[0]["status"] = OutboxStatus.PASSIVE
        values[0]["sent_at"] = values[0]["created_at"]
    return values


async def insert_rows(session: AsyncSession, values: Sequence[Mapping[str, Any]]) -> tuple[int, ...]:
    """One multi-row INSERT … RETURNING of outbox rows; their ids, in order.

    The bulk path skips the ORM's unit of work: it runs for every message the engine answers.
    """
    if not values:
        return ()
    result = await session.execute(
        insert(OutboxMessage).returning(OutboxMessage.id, sort_by_parameter_order=True), list(values)
    )
    return tuple(result.scalars().all())


async def enqueue_messages(
    session: AsyncSession,
    *,
    platform: str,
    app_id: str,
    recipient: str,
    messages: Sequence[OutMessage],
    idempotency_keys: Sequence[str],
    available_at: datetime | None = None,
    first_passive: bool = False,
) -> tuple[int, ...]:
    """Queue several conversational messages in one multi-row INSERT … RETURNING; their row ids, in order.

    With ``first_passive`` the first one is recorded as already answered in the webhook's own reply, in
    this same transaction: the worker never sends it, even if the process dies right after the commit.
    """
    rows = new_rows(
        platform=platform,
        app_id=app_id,
        recipient=recipient,
        messages=messages,
        idempotency_keys=idempotency_keys,
        available_at=available_at,
        first_passive=first_passive,
    )
    return await insert_rows(session, rows)


def enqueue_message(
    session: AsyncSession,
    *,
    platform: str,
    app_id: str,
    recipient: str,
    message: OutMessage,
    available_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> OutboxMessage:
    """Enqueue a conversational message (text, image, link card)."""
    kind, payload = message_to_payload(message)
    return enqueue(
        session,
        platform=platform,
        app_id=app_id,
        recipient=recipient,
        kind=kind,
        payload=payload,
        available_at=available_at,
        idempotency_key=idempotency_key,
    )


async def mark_passive(session: AsyncSession, ids: Sequence[int]) -> int:
    """Record still-pending rows as answered in the webhook's own reply; returns how many were."""
    if not ids:
        return 0
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.status == OutboxStatus.PENDING)
        .values(status=OutboxStatus.PASSIVE, sent_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


# ``last_error`` of a passive answer that was written after the platform had given up, now queued as a push:
# a retry of the message must not claim it as its passive answer again (see :func:`requeue_passive`).
PASSIVE_MISSED = "passive answer missed the platform; pushed instead"


async def requeue_passive(session: AsyncSession, idempotency_key: str) -> bool:
    """Turn a row answered passively back into a pending push; False when it is not (or no longer) passive.

    Conditional on the row still being passive, so of any number of callers one requeues it: the push
    goes out once.
    """
    now = utcnow()
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.idempotency_key == idempotency_key, OutboxMessage.status == OutboxStatus.PASSIVE)
        .values(status=OutboxStatus.PENDING, sent_at=None, available_at=now, last_error=PASSIVE_MISSED)
    )
    return bool(getattr(result, "rowcount", 0))


# What is left of a credential's payload (a show-code image or code-page link) once it is delivered.
SCRUBBED: dict[str, Any] = {"credential": True, "scrubbed": True}
# What is left of any other message once it is delivered (or given up on). Every row is a message to one
# person about their own affairs (records, pending files, grants, verification links, queue numbers,
# reminders), so none is kept: scrubbing them all needs no handler to remember a flag, and a new kind of
# reply is covered the day it is written.
SCRUBBED_MESSAGE: dict[str, Any] = {"scrubbed": True}
# A passive answer stays readable this long: a platform that retries the message gets the same answer
# (WeChat retries three times within about 15 seconds). Then :func:`scrub_delivered` clears it.
PASSIVE_KEPT = timedelta(minutes=5)


def scrubbed(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a delivered row keeps of ``payload``: whether it was a credential, nothing else."""
    return dict(SCRUBBED if payload.get("credential") else SCRUBBED_MESSAGE)


async def scrub_delivered(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    """Scrub rows whose content has served: passive answers past the retry window, and any sent or dead
    row still holding its content (the worker scrubs those itself; this catches rows from before it did).
    """
    done = or_(
        OutboxMessage.status.in_((OutboxStatus.SENT, OutboxStatus.DEAD)),
        and_(OutboxMessage.status == OutboxStatus.PASSIVE, OutboxMessage.sent_at < now - PASSIVE_KEPT),
    )
    unscrubbed = OutboxMessage.payload["scrubbed"].as_boolean().is_(None)
    credential = OutboxMessage.payload["credential"].as_boolean().is_(True)
    async with sessions() as session, session.begin():
        scrubbed_credentials = await session.execute(
            update(OutboxMessage).where(done, unscrubbed, credential).values(payload=SCRUBBED)
        )
        scrubbed_messages = await session.execute(
            update(OutboxMessage).where(done, unscrubbed).values(payload=SCRUBBED_MESSAGE)
        )
    count = sum(int(getattr(result, "rowcount", 0) or 0) for result in (scrubbed_credentials, scrubbed_messages))
    if count:
        log.info("outbox payloads scrubbed", extra={"rows": count})
    return count


def register_jobs(scheduler: Scheduler, sessions: async_sessionmaker[AsyncSession]) -> None:
    """The outbox's job: scrub delivered payloads every minute."""
    scheduler.every("outbox-scrub", timedelta(minutes=1), lambda: scrub_delivered(sessions, utcnow()))


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential back-off with jitter, capped at five minutes."""
    base = min(300.0, 2.0 ** max(attempts - 1, 0))
    if retry_after is not None:
        base = max(base, retry_after)
    return base * random.uniform(0.8, 1.2)


@dataclasses.dataclass
class Delivery:
    """What happened to one claimed row."""

    row_id: int
    error: SendError | None
    deferred: bool = False  # not tried: an earlier message to the same recipient failed


class OutboxWorker:
    """Claims due rows, delivers them through the platform senders, records the outcome.

    Safe with several workers on PostgreSQL (``FOR UPDATE SKIP LOCKED``); on SQLite the database's
    single writer serialises the claims. A worker that dies mid-send leaves a lease that expires, and the
    row is taken again: nothing is lost (at worst a message is sent twice).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        senders: Mapping[str, Sender],
        metrics: Metrics,
        *,
        batch_size: int = 20,
        max_attempts: int = 8,
        poll_seconds: float = 0.5,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._senders = senders
        self._metrics = metrics
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run`."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped."""
        while not self._stopping:
            # Cleared before the claim, not after: a wake() that lands while the claim runs is kept.
            self._wake.clear()
            try:
                handled = await self.run_once()
            except Exception:
                log.exception("outbox batch failed")
                handled = 0
            if handled == 0 and not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Claim one batch and deliver it; return how many rows were handled."""
        rows = await self._claim()
        if not rows:
            return 0
        # One recipient's messages go out one after another, in the order they were queued; different
        # recipients in parallel. After a failure, that recipient's later messages wait their turn.
        by_recipient: dict[tuple[str, str, str], list[OutboxMessage]] = {}
        for row in sorted(rows, key=lambda item: item.id):
            by_recipient.setdefault((row.platform, row.app_id, row.recipient), []).append(row)
        groups = await asyncio.gather(*(self._deliver_in_order(group) for group in by_recipient.values()))
        await self._record([delivery for group in groups for delivery in group], {row.id: row for row in rows})
        return len(rows)

    async def _deliver_in_order(self, rows: Sequence[OutboxMessage]) -> list[Delivery]:
        deliveries: list[Delivery] = []
        for row in rows:
            last = deliveries[-1] if deliveries else None
            if last is not None and (last.deferred or (last.error is not None and last.error.retryable)):
                deliveries.append(Delivery(row.id, None, deferred=True))  # it will be retried: keep the order
                continue
            deliveries.append(await self._deliver(row))
        return deliveries

    async def _claim(self) -> list[OutboxMessage]:
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            due = or_(
                and_(OutboxMessage.status == OutboxStatus.PENDING, OutboxMessage.available_at <= now),
                and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.lease_until < now),
            )
            query = (
                select(OutboxMessage)
                .where(due)
                .order_by(OutboxMessage.available_at, OutboxMessage.id)
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            )
            rows = list((await session.scalars(query)).all())
            for row in rows:
                row.status = OutboxStatus.SENDING
                row.lease_until = now + LEASE
                row.attempts += 1
            return rows

    async def _deliver(self, row: OutboxMessage) -> Delivery:
        sender = self._senders.get(row.platform)
        if sender is None:
            return Delivery(row.id, SendError("no_sender", row.platform, retryable=False))
        try:
            await sender.send(row)
        except SendError as exc:
            return Delivery(row.id, exc)
        except Exception as exc:  # a bug or an unexpected transport failure: retry, keep the reason
            log.exception("outbox send crashed", extra={"outbox_id": row.id, "platform": row.platform})
            return Delivery(row.id, SendError("crash", type(exc).__name__, retryable=True))
        return Delivery(row.id, None)

    async def _record(self, deliveries: Sequence[Delivery], rows: Mapping[int, OutboxMessage]) -> None:
        now = utcnow()
        blocked_until: dict[tuple[str, str, str], datetime] = {}
        async with self._sessionmaker() as session, session.begin():
            for delivery in deliveries:
                row = rows[delivery.row_id]
                error = delivery.error
                recipient = (row.platform, row.app_id, row.recipient)
                values: dict[str, Any]
                if delivery.deferred:
                    # Back in the queue behind the failed one, without spending an attempt.
                    values = {
                        "status": OutboxStatus.PENDING,
                        "attempts": row.attempts - 1,
                        "available_at": blocked_until.get(recipient, now),
                        "lease_until": None,
                    }
                elif error is None:
                    values = {"status": OutboxStatus.SENT, "sent_at": now, "lease_until": None, "last_error": None}
                    self._metrics.outbox_sent.labels(row.platform, row.kind).inc()
                else:
                    self._metrics.send_failures.labels(row.platform, error.code).inc()
                    reason = str(error)[:256]
                    if error.retryable and row.attempts < self._max_attempts:
                        delay = backoff_seconds(row.attempts, error.retry_after)
                        blocked_until[recipient] = now + timedelta(seconds=delay)
                        values = {
                            "status": OutboxStatus.PENDING,
                            "available_at": blocked_until[recipient],
                            "lease_until": None,
                            "last_error": reason,
                        }
                    else:
                        values = {"status": OutboxStatus.DEAD, "lease_until": None, "last_error": reason}
                        log.warning(
                            "outbox message dead-lettered",
                            extra={"outbox_id": row.id, "platform": row.platform, "code": error.code},
                        )
                if values["status"] in (OutboxStatus.SENT, OutboxStatus.DEAD):
                    values["payload"] = scrubbed(row.payload)  # delivered (or undeliverable): not kept
                # Only the lease holder records: a row re-claimed after an expired lease is someone else's.
                await session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id == row.id, OutboxMessage.status == OutboxStatus.SENDING)
                    .where(OutboxMessage.attempts == row.attempts)
                    .values(**values)
                )


async def outbox_depth(session: AsyncSession) -> dict[str, int]:
    """Rows by status (for metrics and health)."""
    result = await session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
    return {str(status): int(count) for status, count in result.all()}
