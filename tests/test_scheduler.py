"""Named periodic jobs and the housekeeping they run."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.core.scheduler import Scheduler, prune
from bot.web.appkeys import SESSIONS
from models import ConversationState, OutboxMessage, ProcessedMessage, utcnow
from tests.helpers import PATIENCE_SECONDS, Client, eventually


async def test_jobs_run_repeatedly_and_a_new_job_replaces_the_old() -> None:
    scheduler = Scheduler()
    calls: list[str] = []

    async def old() -> None:
        calls.append("old")

    async def new() -> None:
        calls.append("new")

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("fails every time")

    scheduler.every("job", timedelta(seconds=0.05), old)
    scheduler.every("job", timedelta(seconds=0.05), new)
    scheduler.every("broken", timedelta(seconds=0.05), broken)
    assert scheduler.jobs() == ["broken", "job"]
    task = asyncio.create_task(scheduler.run())
    await eventually(lambda: calls.count("new") >= 3 and calls.count("broken") >= 3, "both jobs run again and again")
    scheduler.stop()
    await asyncio.wait_for(task, PATIENCE_SECONDS)
    assert "old" not in calls
    assert calls.count("new") >= 3  # the broken job did not stop the others


async def test_prune_forgets_only_what_is_old(app_client: Client) -> None:
    now = utcnow()
    sessions: Any = app_client.app[SESSIONS]
    async with sessions() as session, session.begin():
        session.add_all(
            [
                ProcessedMessage(platform="wechat", app_id="a", dedupe_key="old", created_at=now - timedelta(days=4)),
                ProcessedMessage(platform="wechat", app_id="a", dedupe_key="new", created_at=now),
                ConversationState(
                    platform="wechat",
                    app_id="a",
                    user_id="lapsed",
                    state="X:y",
                    data={},
                    version=1,
                    expires_at=now - timedelta(days=2),
                ),
                ConversationState(
                    platform="wechat",
                    app_id="a",
                    user_id="live",
                    state="X:y",
                    data={},
                    version=1,
                    expires_at=now + timedelta(minutes=5),
                ),
                OutboxMessage(
                    platform="wechat",
                    app_id="a",
                    recipient="u",
                    kind="text",
                    payload={"content": "x"},
                    status="sent",
                    attempts=1,
                    available_at=now,
                    sent_at=now - timedelta(days=40),
                ),
                OutboxMessage(
                    platform="wechat",
                    app_id="a",
                    recipient="u",
                    kind="text",
                    payload={"content": "y"},
                    status="dead",
                    attempts=8,
                    available_at=now - timedelta(days=40),
                ),
            ]
        )
    removed = await prune(sessions, timedelta(days=3), timedelta(days=30))
    assert removed == 3
    async with sessions() as session:
        assert (await session.scalars(select(ProcessedMessage.dedupe_key))).all() == ["new"]
        assert (await session.scalars(select(ConversationState.user_id))).all() == ["live"]
        assert (await session.scalars(select(OutboxMessage.status))).all() == ["dead"]  # kept for operators
