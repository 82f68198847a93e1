"""The conversation engine: lock the user, deduplicate, load state, dispatch, save, enqueue replies.

Everything one update does happens in one transaction: its processed-message key, the state it leaves,
the rows it writes, the replies it queues and, when the webhook answers with the first of them, that
reply marked as answered. A crash before the commit leaves no trace, so the platform's retry runs it
again; after the commit, a retry is recognised as a duplicate.

The platform hears an acknowledgement only once the update is durable: either its transaction has
committed, or (still running at the deadline) it has been written to the inbox (:mod:`bot.chat.inbox`)
first. What a dead process left in the inbox, a live one finishes (:meth:`Engine.recover`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select, tuple_
from sqlalchemy import update as sql_update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.accounts import contact_outdated, touch_account
from bot.chat.conversation import Context, Router, Services, Snapshot
from bot.chat.inbox import Inbox
from bot.core.db import dialect_insert
from bot.core.metrics import Metrics
from bot.core.update import (
    CONTACT_KINDS,
    CONVERSATIONAL_KINDS,
    OutMessage,
    Text,
    Update,
    UpdateKind,
    can_be_passive,
)
from bot.outbox import queue as outbox
from models import ConversationState, ProcessedMessage, utcnow

log = logging.getLogger("vaxbot.engine")
_T = TypeVar("_T")

# A handler that runs longer than this is abandoned (its transaction rolls back).
HANDLER_LIMIT_SECONDS = 60.0
# WeChat retries a delivery 5 s after sending it when it got no answer; a copy that arrives this long after
# the original was taken up is such a retry, not a concurrent duplicate.
RETRY_AFTER = timedelta(seconds=2)
# A late update's inbox write must be done within this, or the platform is not acknowledged (it retries).
INBOX_WRITE_LIMIT_SECONDS = 5.0
# Group commit: at most this many updates share a transaction, and a handler in a group that runs longer
# than this is stopped, the group rolled back and each of its updates run again on its own.
GROUP_LIMIT = 32
SLOW_IN_GROUP_SECONDS = 0.25
ACCOUNT_EVENTS = frozenset({UpdateKind.FOLLOW, UpdateKind.UNFOLLOW})


class KeyedLocks:
    """One asyncio lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Any) -> AsyncIterator[None]:
        """Hold the lock for ``key``."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


async def claim_delivery(session: AsyncSession, update: Update, now: datetime) -> bool:
    """Record the update's delivery key; False when it was already processed (a retry or a double tap).

    On PostgreSQL a concurrent duplicate waits here until the first delivery's transaction ends.
    """
    insert = dialect_insert(session)
    statement = (
        insert(ProcessedMessage)
        .values(platform=update.platform.value, app_id=update.app_id, dedupe_key=update.dedupe_key, created_at=now)
        .on_conflict_do_nothing(index_elements=["platform", "app_id", "dedupe_key"])
        .returning(ProcessedMessage.id)
    )
    return (await session.execute(statement)).first() is not None


@dataclasses.dataclass
class StateRow:
    """A user's locked ``conversation_states`` row, as plain values (no ORM object on the hot path)."""

    id: int
    state: str | None
    data: dict[str, Any]
    expires_at: datetime | None
    version: int


_STATES = ConversationState.__table__.c


class SqlStateStore:
    """Conversation state in ``conversation_states``, row-locked for the length of the transaction.

    Core statements rather than the ORM: this runs for every update, and the unit of work (identity
    map, change tracking, flush) costs more than the two statements it would issue.
    """

    async def load(self, session: AsyncSession, update: Update) -> StateRow:
        """Lock and return the user's state row, creating it on first contact."""
        platform, app_id, user_id = update.user_key
        query = (
            select(_STATES.id, _STATES.state, _STATES.data, _STATES.expires_at, _STATES.version)
            .where(_STATES.platform == platform, _STATES.app_id == app_id, _STATES.user_id == user_id)
            .with_for_update()
        )
        row = (await session.execute(query)).first()
        if row is None:
            insert = dialect_insert(session)
            await session.execute(
                insert(ConversationState)
                .values(platform=platform, app_id=app_id, user_id=user_id, data={}, version=0, updated_at=utcnow())
                .on_conflict_do_nothing(index_elements=["platform", "app_id", "user_id"])
            )
            row = (await session.execute(query)).first()
            assert row is not None
        return StateRow(row.id, row.state, row.data or {}, row.expires_at, row.version or 0)

    async def load_many(self, session: AsyncSession, updates: Sequence[Update]) -> dict[tuple[str, str, str], StateRow]:
        """Lock and return several users' state rows (two or three statements for all), creating missing ones."""
        keys = list(dict.fromkeys(update.user_key for update in updates))
        user = tuple_(_STATES.platform, _STATES.app_id, _STATES.user_id)
        columns = (_STATES.platform, _STATES.app_id, _STATES.user_id, _STATES.id, _STATES.state, _STATES.data)
        query = select(*columns, _STATES.expires_at, _STATES.version).order_by(_STATES.id).with_for_update()
        found = {(row[0], row[1], row[2]): row for row in (await session.execute(query.where(user.in_(keys)))).all()}
        missing = [key for key in keys if key not in found]
        if missing:
            insert = dialect_insert(session)
            now = utcnow()
            await session.execute(
                insert(ConversationState)
                .values(
                    [
                        {"platform": p, "app_id": a, "user_id": u, "data": {}, "version": 0, "updated_at": now}
                        for p, a, u in missing
                    ]
                )
                .on_conflict_do_nothing(index_elements=["platform", "app_id", "user_id"])
            )
            for row in (await session.execute(query.where(user.in_(missing)))).all():
                found[(row[0], row[1], row[2])] = row
        return {
            key: StateRow(row.id, row.state, row.data or {}, row.expires_at, row.version or 0)
            for key, row in found.items()
        }

    async def save(self, session: AsyncSession, row: StateRow, snapshot: Snapshot, now: datetime) -> None:
        """Write the new state into the locked row (only when it changed)."""
        if (row.state, row.data, row.expires_at) == (snapshot.state, snapshot.data, snapshot.expires_at):
            return
        await session.execute(
            sql_update(ConversationState)
            .where(_STATES.id == row.id)
            .values(
                state=snapshot.state,
                data=snapshot.data,
                expires_at=snapshot.expires_at,
                version=row.version + 1,
                updated_at=now,
            )
        )


def reply_key(update: Update, index: int) -> str:
    """The outbox key of the ``index``-th reply to an update (a retry finds its answer by it)."""
    digest = hashlib.sha256(f"{update.platform.value}|{update.app_id}|{update.dedupe_key}".encode()).hexdigest()
    return f"reply:{digest[:40]}:{index}"


class RecentContacts:
    """Users whose account row is known to exist with a last contact under a minute old (per process).

    Lets the hot path skip reading and rewriting ``platform_accounts`` for a user who keeps typing; the
    row is never deleted, so a stale entry can only delay the next ``last_inbound_at`` write by a minute.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: collections.OrderedDict[tuple[str, str, str], tuple[datetime, str]] = collections.OrderedDict()
        self._capacity = capacity

    def stale(self, update: Update, now: datetime) -> bool:
        """True when the account must be read (and maybe written) for this update."""
        if update.kind not in CONTACT_KINDS or update.kind in ACCOUNT_EVENTS:
            return True
        last_at, last_kind = self._seen.get(update.user_key, (None, None))
        return contact_outdated(last_at, last_kind, update, now)

    def seen(self, update: Update, now: datetime) -> None:
        """Record a committed contact."""
        if update.kind not in CONTACT_KINDS or update.kind in ACCOUNT_EVENTS:
            self._seen.pop(update.user_key, None)
            return
        if self.stale(update, now):
            self._seen[update.user_key] = (now, update.kind.value)
        self._seen.move_to_end(update.user_key)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


class Unrecorded(Exception):
    """A late update could not be made durable: the platform must not be acknowledged (it will retry)."""


class Answer:
    """Who answers an update's first reply, decided once: the webhook itself (passive) or the outbox.

    The engine takes the passive answer while writing the replies, inside the update's transaction, if
    the webhook has not given up waiting; the webhook gives up at the deadline unless the engine took it
    first, in which case it waits for that commit. Both run on the event loop, so neither can slip in
    between the other's check and change.
    """

    OPEN, PASSIVE, LATE = "open", "passive", "late"

    def __init__(self) -> None:
        self.state = self.OPEN

    def take_passive(self) -> bool:
        """The engine: True when the first reply is (still) to be the webhook's own answer."""
        if self.state == self.OPEN:
            self.state = self.PASSIVE
        return self.state == self.PASSIVE

    def give_up(self) -> bool:
        """The webhook at the deadline: True when it acknowledges now (the replies go through the outbox)."""
        if self.state == self.OPEN:
            self.state = self.LATE
        return self.state == self.LATE


async def _queue_replies(
    session: AsyncSession, update: Update, replies: Sequence[OutMessage], answer: Answer | None
) -> tuple[tuple[int, ...], bool]:
    """Write the replies to the outbox; their row ids, and whether the first is the webhook's answer."""
    passive = bool(replies) and answer is not None and can_be_passive(replies[0]) and answer.take_passive()
    ids = await outbox.enqueue_messages(
        session,
        platform=update.platform.value,
        app_id=update.app_id,
        recipient=update.user_id,
        messages=replies,
        idempotency_keys=[reply_key(update, index) for index in range(len(replies))],
        first_passive=passive,
    )
    return ids, passive


async def _queue_group_replies(
    session: AsyncSession, answers: Sequence[tuple[Update, Sequence[OutMessage], Answer | None]]
) -> list[tuple[tuple[int, ...], bool]]:
    """Every reply of a group in one multi-row INSERT; per update, its row ids and whether the first is passive."""
    values: list[dict[str, Any]] = []
    shapes: list[tuple[int, bool]] = []
    for update, replies, answer in answers:
        passive = bool(replies) and answer is not None and can_be_passive(replies[0]) and answer.take_passive()
        rows = outbox.new_rows(
            platform=update.platform.value,
            app_id=update.app_id,
            recipient=update.user_id,
            messages=replies,
            idempotency_keys=[reply_key(update, index) for index in range(len(replies))],
            first_passive=passive,
        )
        values.extend(rows)
        shapes.append((len(rows), passive))
    ids = await outbox.insert_rows(session, values)
    result: list[tuple[tuple[int, ...], bool]] = []
    start = 0
    for count, passive in shapes:
        result.append((ids[start : start + count], passive))
        start += count
    return result


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What processing an update produced."""

    duplicate: bool
    replies: tuple[OutMessage, ...] = ()
    outbox_ids: tuple[int, ...] = ()
    failed: bool = False
    recorded: bool = True  # False only when the database could not even record the delivery
    passive: bool = False  # the first reply is recorded as the webhook's own answer

    @property
    def queued_for_worker(self) -> bool:
        """Whether the worker has replies to send (all but a passive first one)."""
        return len(self.outbox_ids) > (1 if self.passive else 0)


@dataclasses.dataclass
class _Job:
    """An update waiting for its group's transaction."""

    update: Update
    answer: Answer | None
    future: asyncio.Future[Outcome]


class _GroupAbandoned(Exception):
    """A handler failed or was too slow in a group: the group rolls back and each update runs on its own."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class Engine:
    """Runs updates through the router, one transaction each, and answers within the platform's deadline.

    Updates that arrive together share a transaction (group commit): one multi-row statement records
    their delivery keys, one locks their state rows, the handlers run one after another, and one
    multi-row INSERT queues every reply. Each update's effects are still all-or-nothing: if a handler
    fails, or runs longer than :data:`SLOW_IN_GROUP_SECONDS`, the group rolls back and each update runs
    again in a transaction of its own (where a failure gets its apology).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        router: Router,
        services: Services,
        metrics: Metrics,
        *,
        state_ttl: timedelta,
        inbox: Inbox,
        on_enqueued: Callable[[], None] = lambda: None,
        group_limit: int = GROUP_LIMIT,
        group_runners: int = 1,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._router = router
        self._services = services
        self._metrics = metrics
        self._state_ttl = state_ttl
        self._states = SqlStateStore()
        self._locks = KeyedLocks()
        self._on_enqueued = on_enqueued
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent = RecentContacts()
        self.inbox = inbox
        self._started_at = utcnow()
        self._group_limit = max(1, group_limit)
        self._waiting: list[_Job] = []
        self._group_runners = max(1, group_runners)
        self._groupers: set[asyncio.Task[None]] = set()
        self.groups = collections.Counter[int]()  # group sizes run (for benchmarks and tests)

    async def process(self, update: Update, answer: Answer | None = None) -> Outcome:
        """Handle ``update`` once; with ``answer``, the first reply may be taken as the webhook's own."""
        async with self._locks.hold(update.user_key):  # so a group never holds two updates of one user
            if self._group_limit > 1:
                job = _Job(update, answer, asyncio.get_running_loop().create_future())
                self._waiting.append(job)
                if len(self._groupers) < self._group_runners:
                    grouper = asyncio.create_task(self._run_groups())
                    self._groupers.add(grouper)
                    grouper.add_done_callback(self._groupers.discard)
                outcome = await asyncio.shield(job.future)
            else:
                outcome = await self._alone(update, answer)
        if outcome.queued_for_worker:
            self._on_enqueued()
        return outcome

    async def _alone(self, update: Update, answer: Answer | None) -> Outcome:
        """One update in a transaction of its own (an apology if its handler fails)."""
        try:
            async with asyncio.timeout(HANDLER_LIMIT_SECONDS):
                return await self._process_locked(update, answer)
        except Exception:
            self._metrics.handler_errors.labels(update.platform.value).inc()
            log.exception("handler failed", extra={"platform": update.platform.value, "kind": update.kind})
            return await self._apologise(update, answer)

    async def _run_groups(self) -> None:
        """Run the waiting updates, a group per transaction, until none is waiting.

        No wait is added: the updates that arrived while the previous group ran form the next one. On
        PostgreSQL several of these run at once (``group_runners``), so that one group's round trips do
        not hold up the next; their users differ, since a user's next update waits for the previous one.
        """
        while self._waiting:
            await asyncio.sleep(0)  # let the requests read in this turn of the loop join
            jobs, self._waiting = self._waiting[: self._group_limit], self._waiting[self._group_limit :]
            self.groups[len(jobs)] += 1
            if len(jobs) == 1:
                self._one_by_one(jobs, culprit=None)
                continue
            try:
                outcomes = await self._process_group(jobs)
            except _GroupAbandoned as exc:
                self._one_by_one(jobs, culprit=exc.index)
                continue
            except Exception:
                log.warning("a group's transaction failed; its updates run one by one", exc_info=True)
                self._one_by_one(jobs, culprit=None)
                continue
            for job, outcome in zip(jobs, outcomes, strict=True):
                if not job.future.done():
                    job.future.set_result(outcome)

    def _one_by_one(self, jobs: Sequence[_Job], culprit: int | None) -> None:
        """Run each job in a transaction of its own, the one that broke the group last, without waiting.

        Last, because on SQLite a transaction holds the only connection for as long as its handler runs:
        the others take it first (the pool serves in order of asking).
        """
        order = [index for index in range(len(jobs)) if index != culprit] + ([culprit] if culprit is not None else [])
        for index in order:
            self._track(self._settle_alone(jobs[index]))

    async def _settle_alone(self, job: _Job) -> None:
        try:
            outcome = await self._alone(job.update, job.answer)
        except BaseException as exc:
            if not job.future.done():
                job.future.set_exception(exc)
            raise
        if not job.future.done():
            job.future.set_result(outcome)

    async def _process_group(self, jobs: Sequence[_Job]) -> list[Outcome]:
        """Several updates (of different users) in one transaction, with multi-row statements."""
        now = utcnow()
        outcomes: dict[int, Outcome] = {}
        async with self._sessionmaker() as session, session.begin():
            insert = dialect_insert(session)
            table = ProcessedMessage.__table__.c
            claimed = await session.execute(
                insert(ProcessedMessage)
                .values(
                    [
                        {
                            "platform": job.update.platform.value,
                            "app_id": job.update.app_id,
                            "dedupe_key": job.update.dedupe_key,
                            "created_at": now,
                        }
                        for job in jobs
                    ]
                )
                .on_conflict_do_nothing(index_elements=["platform", "app_id", "dedupe_key"])
                .returning(table.platform, table.app_id, table.dedupe_key)
            )
            fresh = {tuple(row) for row in claimed.all()}
            live = []
            for index, job in enumerate(jobs):
                if (job.update.platform.value, job.update.app_id, job.update.dedupe_key) in fresh:
                    live.append((index, job))
                else:
                    outcomes[index] = Outcome(duplicate=True)
            states = await self._states.load_many(session, [job.update for _, job in live])
            contexts: list[tuple[int, _Job, Context]] = []
            for index, job in live:
                update = job.update
                account = await touch_account(session, update, now) if self._recent.stale(update, now) else None
                row = states[update.user_key]
                snapshot, expired = self._current(row, now)
                ctx = Context(update, session, account, snapshot, self._services, now, expired_state=expired)
                try:
                    async with asyncio.timeout(SLOW_IN_GROUP_SECONDS):
                        await self._router.dispatch(ctx)
                except TimeoutError as exc:
                    # Why not wait: the others' answers would wait too. Alone it has the full limit.
                    log.info("a slow handler left its group", extra={"platform": update.platform.value})
                    raise _GroupAbandoned(index) from exc
                except Exception as exc:
                    # Its writes are mixed with the others' in this transaction: only a rollback undoes
                    # them. Alone again, it fails again and gets its apology there.
                    raise _GroupAbandoned(index) from exc
                await self._states.save(session, row, ctx.snapshot(self._state_ttl), now)
                contexts.append((index, job, ctx))
            queued = await _queue_group_replies(
                session, [(job.update, ctx.replies, job.answer) for _, job, ctx in contexts]
            )
        for (index, job, ctx), (ids, passive) in zip(contexts, queued, strict=True):
            self._recent.seen(job.update, now)
            outcomes[index] = Outcome(duplicate=False, replies=tuple(ctx.replies), outbox_ids=ids, passive=passive)
        return [outcomes[index] for index in range(len(jobs))]

    async def _process_locked(self, update: Update, answer: Answer | None) -> Outcome:
        now = utcnow()
        async with self._sessionmaker() as session, session.begin():
            if not await claim_delivery(session, update, now):
                return Outcome(duplicate=True)
            state_row = await self._states.load(session, update)
            account = None
            if self._recent.stale(update, now):
                account = await touch_account(session, update, now)
            snapshot, expired = self._current(state_row, now)
            ctx = Context(update, session, account, snapshot, self._services, now, expired_state=expired)
            await self._router.dispatch(ctx)
            await self._states.save(session, state_row, ctx.snapshot(self._state_ttl), now)
            ids, passive = await _queue_replies(session, update, ctx.replies, answer)
        self._recent.seen(update, now)  # committed: the account exists and its last contact is recorded
        return Outcome(duplicate=False, replies=tuple(ctx.replies), outbox_ids=ids, passive=passive)

    async def _apologise(self, update: Update, answer: Answer | None) -> Outcome:
        """The handler failed and rolled back: record the delivery and the contact, and tell the user what to do.

        The contact is recorded again here because the handler's transaction, which recorded it, rolled
        back: without it a first contact has no account (or an old ``last_inbound_at``), and the platforms'
        service windows would refuse the apology.
        """
        message = Text(self._services.catalogue("error_generic"))
        now = utcnow()
        try:
            async with self._sessionmaker() as session, session.begin():
                if not await claim_delivery(session, update, now):
                    return Outcome(duplicate=True)
                if update.kind in CONTACT_KINDS:
                    await touch_account(session, update, now)
                ids: tuple[int, ...] = ()
                passive = False
                if update.kind in CONVERSATIONAL_KINDS:
                    ids, passive = await _queue_replies(session, update, [message], answer)
            if update.kind in CONTACT_KINDS:
                self._recent.seen(update, now)
            if update.kind not in CONVERSATIONAL_KINDS:
                return Outcome(duplicate=False, failed=True)
            return Outcome(duplicate=False, replies=(message,), outbox_ids=ids, failed=True, passive=passive)
        except Exception:
            # The database itself is failing: nothing is recorded, but the user is still told, in the
            # passive reply, that it did not work and to try again.
            log.exception("could not record the failure", extra={"platform": update.platform.value})
            if update.kind not in CONVERSATIONAL_KINDS:
                return Outcome(duplicate=False, failed=True, recorded=False)
            return Outcome(duplicate=False, replies=(message,), failed=True, recorded=False)

    @staticmethod
    def _current(row: StateRow, now: datetime) -> tuple[Snapshot, str | None]:
        if row.state is not None and row.expires_at is not None and row.expires_at <= now:
            return Snapshot(), row.state
        # A deep copy: handlers may change nested values, and the stored row must see the difference.
        return Snapshot(state=row.state, data=copy.deepcopy(row.data or {}), expires_at=row.expires_at), None

    async def respond(self, update: Update, deadline: float, received_at: datetime) -> OutMessage | None:
        """Process ``update`` and return the message to answer passively, if it is ready in time.

        If the transaction writes the replies before the deadline, the first is recorded as answered
        passively in that same commit and returned here; the rest go to the worker. Otherwise the update
        is written to the inbox and acknowledged (None), and its replies go to the worker once queued.
        Raises :class:`Unrecorded` when a late update could not be made durable (answer with an error, so
        that the platform retries).
        """
        answer = Answer()
        task = self._track(self.process(update, answer))
        try:
            remaining = deadline - (utcnow() - received_at).total_seconds()
            done, _ = await asyncio.wait({task}, timeout=max(remaining, 0.0))
            if not done and answer.give_up():
                log.warning(
                    "deadline passed; answer goes through the outbox", extra={"platform": update.platform.value}
                )
                await self._acknowledge_late(update, received_at, task)
                return None
            # Done, or the engine took the passive answer just before the deadline: its commit is in flight.
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The request is gone (a server that cancels the handler of a dropped connection): no passive
            # answer can be read. Untaken, the replies go through the outbox; taken, the answer is pushed.
            if not answer.give_up():
                self._track(self._push_when_committed(update, task))
            raise
        if outcome.failed and outcome.replies and not outcome.outbox_ids:
            return outcome.replies[0]  # nothing could be queued: answer directly
        if outcome.duplicate:
            await self._answer_retry(update, received_at)
            return None
        return outcome.replies[0] if outcome.passive else None

    async def deliver(self, update: Update, deadline: float, received_at: datetime) -> bool | None:
        """Process an update whose answers all go out through the outbox (no passive reply, as on Alipay).

        Returns True once the delivery is recorded (or was a duplicate), False when the database could not
        record it (the platform should retry), and None when the deadline passed first and the update was
        written to the inbox: processing goes on, and its replies go to the worker as soon as they are queued.
        """
        task = self._track(self.process(update))
        remaining = deadline - (utcnow() - received_at).total_seconds()
        done, _ = await asyncio.wait({task}, timeout=max(remaining, 0.0))
        if done:
            return task.result().recorded
        log.warning("deadline passed; processing goes on", extra={"platform": update.platform.value})
        try:
            await self._acknowledge_late(update, received_at, task)
        except Unrecorded:
            return False
        return None

    async def _acknowledge_late(self, update: Update, received_at: datetime, task: asyncio.Task[Outcome]) -> None:
        """Make a late update durable in the inbox before it is acknowledged; :class:`Unrecorded` if it cannot be."""
        try:
            async with asyncio.timeout(INBOX_WRITE_LIMIT_SECONDS):
                await self.inbox.keep(update, received_at)
        except Exception as exc:
            if task.done() and not task.cancelled() and task.result().recorded:
                return  # committed meanwhile: durable after all
            log.error("a late update could not be written to the inbox", extra={"platform": update.platform.value})
            raise Unrecorded from exc
        self._track(self._finish_late(update, task))

    async def _finish_late(self, update: Update, task: asyncio.Task[Outcome]) -> None:
        """Once a late update's transaction has committed, its inbox row goes."""
        outcome = await task
        if outcome.recorded:
            self.inbox.done(update)
        else:
            self.inbox.abandon(update)  # its lease lapses and recovery runs it again

    async def recover(self) -> int:
        """Finish the updates that dead processes left in the inbox; how many were taken over.

        One user's updates run in the order they arrived, different users' side by side. Their replies
        all go through the outbox (the webhook request that brought them is long gone).
        """
        taken = await self.inbox.take_abandoned()
        if not taken:
            return 0
        log.warning("finishing updates a stopped process left", extra={"updates": len(taken)})
        by_user: dict[tuple[str, str, str], list[Update]] = {}
        for update, _ in taken:
            by_user.setdefault(update.user_key, []).append(update)

        async def run(updates: list[Update]) -> None:
            for update in updates:
                outcome = await self.process(update)
                if outcome.recorded:
                    self.inbox.done(update)
                else:
                    self.inbox.abandon(update)

        await asyncio.gather(*(run(updates) for updates in by_user.values()))
        return len(taken)

    async def keep_inbox(self, every: float) -> None:
        """Renew this process's inbox leases and finish abandoned updates, every ``every`` seconds, until cancelled."""
        while True:
            try:
                await self.inbox.renew()
                while await self.recover():
                    pass
            except Exception:
                log.exception("inbox upkeep failed; trying again")
            await asyncio.sleep(every)

    async def _answer_retry(self, update: Update, received_at: datetime) -> None:
        """A duplicate delivery: when it is the platform's retry, the answer goes out as a push; it is acknowledged.

        WeChat retries only when it got no answer in time, and it has dropped the connection the earlier
        answer was written to, so an answer given passively never reached the user. Answering the retry
        passively again can come too late in the same way (on a loaded server every copy can), so the
        recorded answer is pushed instead, once (a conditional update of its outbox row), and the retry gets
        the acknowledgement; an answer still queued is sent by the worker anyway. A copy arriving at the
        same time as the original (a concurrent duplicate) is acknowledged only: the live request answers.
        """
        try:
            async with self._sessionmaker() as session, session.begin():
                first_seen = await session.scalar(
                    select(ProcessedMessage.created_at).where(
                        ProcessedMessage.platform == update.platform.value,
                        ProcessedMessage.app_id == update.app_id,
                        ProcessedMessage.dedupe_key == update.dedupe_key,
                    )
                )
                if first_seen is None:
                    return
                # A copy arriving soon after the original races a live request, which answers it; unless
                # the original was taken up before this process started: that process may have died
                # between its commit (which recorded the passive answer) and its response.
                if received_at - first_seen < RETRY_AFTER and first_seen >= self._started_at:
                    return
                requeued = await outbox.requeue_passive(session, reply_key(update, 0))
        except Exception:
            log.exception("could not push the answer to a retried delivery")
            return
        if requeued:
            log.info("a platform retry: the passive answer is pushed", extra={"platform": update.platform.value})
            self._on_enqueued()

    async def _push_when_committed(self, update: Update, task: asyncio.Task[Outcome]) -> None:
        """Once the update's transaction commits, push the passive answer nobody is left to read."""
        outcome = await task
        if outcome.passive:
            await self.passive_missed(update)

    async def passive_missed(self, update: Update) -> bool:
        """The webhook's passive answer cannot have reached the platform: queue it as a push instead.

        A short transaction of its own turns the answer's outbox row (its key is derived from the update)
        from passive back to pending, conditionally, so the push goes out exactly once however many
        deliveries of the message miss; a later retry then gets the plain acknowledgement. True when it
        was requeued.
        """
        try:
            async with self._sessionmaker() as session, session.begin():
                requeued = await outbox.requeue_passive(session, reply_key(update, 0))
        except Exception:
            log.exception(
                "a missed passive answer could not be queued as a push", extra={"platform": update.platform.value}
            )
            return False
        if requeued:
            log.warning("passive answer missed the platform; pushed instead", extra={"platform": update.platform.value})
            self._on_enqueued()
        return requeued

    def _track(self, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, grace: float) -> None:
        """Wait for updates still being processed, then for their inbox rows to go (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        await self.inbox.drain()
