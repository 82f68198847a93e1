"""Periodic jobs, named so that scheduling a job again replaces the old one; and the housekeeping jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import CodePage, CodeToken, ConversationState, OutboxMessage, ProcessedMessage, utcnow

log = logging.getLogger("vaxbot.scheduler")


@dataclasses.dataclass
class Job:
    """A named job and when it runs next (monotonic seconds)."""

    name: str
    interval: float
    run: Callable[[], Awaitable[Any]]
    next_at: float


class Scheduler:
    """Runs named jobs every so often; a failing job is logged and tried again at its next turn."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def every(self, name: str, interval: timedelta, run: Callable[[], Awaitable[Any]], *, first_in: float = 0) -> None:
        """Run ``run`` every ``interval``; a job of the same name is replaced."""
        self._jobs[name] = Job(name, interval.total_seconds(), run, time.monotonic() + first_in)
        self._wake.set()

    def jobs(self) -> list[str]:
        """The scheduled job names."""
        return sorted(self._jobs)

    def stop(self) -> None:
        """Return from :meth:`run` after the job in hand."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Run due jobs until stopped."""
        while not self._stopping:
            now = time.monotonic()
            for job in list(self._jobs.values()):
                if job.next_at <= now and not self._stopping:
                    try:
                        await job.run()
                    except Exception:
                        log.exception("scheduled job failed", extra={"job": job.name})
                    job.next_at = time.monotonic() + job.interval
            upcoming = min((job.next_at for job in self._jobs.values()), default=now + 60)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(upcoming - time.monotonic(), 0.01))
            except TimeoutError:
                pass


async def prune(sessions: async_sessionmaker[AsyncSession], processed_ttl: timedelta, outbox_ttl: timedelta) -> int:
    """Forget delivery keys past the retry horizon, lapsed states, long-delivered messages and expired codes."""
    now = utcnow()
    async with sessions() as session, session.begin():
        removed = 0
        for statement in (
            delete(ProcessedMessage).where(ProcessedMessage.created_at < now - processed_ttl),
            delete(ConversationState).where(
                and_(ConversationState.expires_at.is_not(None), ConversationState.expires_at < now - timedelta(days=1))
            ),
            delete(OutboxMessage).where(
                OutboxMessage.status.in_(("sent", "passive")), OutboxMessage.sent_at < now - outbox_ttl
            ),
            # Show codes and code pages are useless once expired; a day's grace keeps them for questions.
            delete(CodeToken).where(CodeToken.expires_at < now - timedelta(days=1)),
            delete(CodePage).where(CodePage.expires_at < now - timedelta(days=1)),
        ):
            result = await session.execute(statement)
            removed += int(getattr(result, "rowcount", 0) or 0)
    if removed:
        log.info("housekeeping removed rows", extra={"rows": removed})
    return removed


def register_housekeeping(
    scheduler: Scheduler, sessions: async_sessionmaker[AsyncSession], processed_ttl: timedelta, delivered_ttl: timedelta
) -> None:
    """Housekeeping every hour (first a minute after start-up): :func:`prune` what has served its time."""
    scheduler.every(
        "housekeeping", timedelta(hours=1), lambda: prune(sessions, processed_ttl, delivered_ttl), first_in=60
    )
