"""kill -9 in the middle of a burst: every acknowledged update is processed exactly once, and answered once.

A real ``vaxbot serve`` process takes a burst of signed WeChat messages: the first users' run freely
(answered passively, or late through the inbox), the others' are held up by a transaction of the test
until the process has acknowledged a number of them at the deadline, written only to the inbox; then it
is killed with SIGKILL. A second process starts on the same database; the messages that got no answer are delivered
again, as WeChat retries them. Then every message must have been processed once, every user must have
read exactly one answer (the passive reply or one pushed message), and nothing may be left in the inbox
or the outbox. The only duplicates allowed are sends the killed worker had in flight (counted).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from bot.dev.fakes.wechat import FakeWeChatAPI, SignedRequest, WeChatClientSim
from models import OutboxMessage, ProcessedMessage, utcnow
from tests import test_processes as processes
from tests.conftest import Serve
from tests.helpers import count, drain_outbox, eventually, post
from tests.test_processes import FAQ_PHONE, FakePlatform, ServerProcess, deliver, server_env, users_held, wechat_sim

# The process tests' fixtures: the fake WeChat API on loopback, and sessions on the shared database.
fake_platform = processes.fake_platform
db = processes.db

USERS = 240
FREE = 80  # users whose messages run freely; the others' are held up until the kill
CONCURRENCY = 48
KILL_AFTER = 40  # acknowledgements of held-up messages before the kill


async def inbox_left(database_url: str) -> int:
    """Rows in the inbox (on SQLite, in its sibling file)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        sibling = path.with_name(f"{path.stem}.inbox{path.suffix}")
        if not sibling.exists():
            return 0
        url = url.set(database=str(sibling))
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT count(*) FROM inbox"))).scalar_one())
    finally:
        await engine.dispose()


async def send(http: aiohttp.ClientSession, server: ServerProcess, request: SignedRequest) -> tuple[int, str] | None:
    """One delivery; None when the connection failed (the process died)."""
    try:
        return await deliver(http, server, request)
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.slow
async def test_kill_9_mid_burst_loses_nothing_acknowledged_and_repeats_nothing(
    database_url: str, keys_dir: Path, fake_platform: FakePlatform, db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    api = fake_platform.api
    env = server_env(
        database_url,
        keys_dir,
        fake_platform.base_url,
        VAXBOT_REPLY_DEADLINE_SECONDS="1",
        VAXBOT_INBOX_LEASE_SECONDS="2",
        VAXBOT_RUN_SCHEDULER="0",
    )
    sim = wechat_sim()
    users = [f"o-kill-{index}" for index in range(USERS)]
    requests = [sim.sign(sim.text(user, "客服电话", msg_id=9_100_000 + index)) for index, user in enumerate(users)]
    passive: dict[str, list[str]] = {user: [] for user in users}

    def take(user: str, result: tuple[int, str] | None) -> bool:
        """Record a passive answer; True when the delivery was acknowledged (WeChat will not retry it)."""
        if result is None or result[0] != 200:
            return False
        body = result[1]
        if body != "success":
            reply = sim.open_reply(body)
            assert reply is not None, body
            passive[user].append(reply["Content"])
        return True

    first = ServerProcess("first", env, tmp_path)
    second: ServerProcess | None = None
    try:
        await first.wait_healthy()
        killed = asyncio.Event()
        gate = asyncio.Semaphore(CONCURRENCY)
        held_acks = 0

        async def one(http: aiohttp.ClientSession, index: int) -> tuple[int, str] | None:
            nonlocal held_acks
            async with gate:
                if killed.is_set():
                    return None
                result = await send(http, first, requests[index])
            if index >= FREE and result == (200, "success"):
                held_acks += 1
                if held_acks >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    first.kill()  # SIGKILL: no drain, no last pass of the worker
            return result

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            # The first users' messages run freely: answered passively, or late through the inbox.
            results = await asyncio.gather(*(one(http, index) for index in range(FREE)))
            # The others' cannot commit while the test holds their conversation rows (on SQLite, the
            # database's write lock): they are acknowledged at the deadline, from the inbox alone, and
            # the process is killed while they wait.
            async with users_held(db, users[FREE:]):
                results += await asyncio.gather(*(one(http, index) for index in range(FREE, USERS)))
                assert killed.is_set(), "the burst ended before the kill"
                assert await first.wait_exit(10) == -signal.SIGKILL
        acknowledged = {user for user, result in zip(users, results, strict=True) if take(user, result)}
        late = sum(1 for result in results if result is not None and result == (200, "success"))
        left_in_inbox = await inbox_left(database_url)
        async with db() as session:
            done_at_kill = int(await session.scalar(select(func.count()).select_from(ProcessedMessage)) or 0)
            # Sends the killed worker had in flight: the only messages that may reach a user twice.
            in_flight = int(
                await session.scalar(
                    select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "sending")
                )
                or 0
            )
            # Their lease (a minute) runs out; simulate that instead of waiting for it.
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.status == "sending")
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
        # The scenario this test is about: updates acknowledged late and not yet committed when it died.
        assert left_in_inbox >= KILL_AFTER and late >= KILL_AFTER, (left_in_inbox, late)
        assert done_at_kill <= FREE
        assert any(passive.values()), "no message was answered passively before the kill"

        second = ServerProcess("second", env, tmp_path)
        await second.wait_healthy()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for user, request in zip(users, requests, strict=True):
                if user not in acknowledged:  # WeChat delivers again what it got no answer for
                    assert take(user, await send(http, second, request)), user

        async def settled() -> bool:
            if any(len(passive[user]) + len(api.texts_to(user)) == 0 for user in users):
                return False
            async with db() as session:
                waiting = await session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status.in_(("pending", "sending")))
                )
            return waiting == 0 and await inbox_left(database_url) == 0

        await eventually(settled, "every message is answered and the inbox and outbox are empty", debug=second.output)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    async with db() as session:
        keys = list((await session.scalars(select(ProcessedMessage.dedupe_key))).all())
        rows = list((await session.scalars(select(OutboxMessage))).all())
    assert sorted(keys) == sorted(f"msg:{9_100_000 + index}" for index in range(USERS))  # each processed once
    assert len(rows) == USERS  # one answer queued per message, never a second
    answers = {user: passive[user] + api.texts_to(user) for user in users}
    assert all(FAQ_PHONE in text for texts in answers.values() for text in texts)
    repeated = {user: texts for user, texts in answers.items() if len(texts) > 1}
    assert len(repeated) <= in_flight, (repeated, in_flight)


@pytest.mark.slow
def test_quick_crash_bench_loses_nothing_on_either_platform() -> None:
    from tests.test_bench import run_quick

    report = run_quick("crash_bench.py")
    assert set(report["cases"]) == {"wechat/sqlite", "alipay/sqlite"}  # --quick: SQLite only
    for crashes in report["cases"].values():
        for crash in crashes:
            assert crash["kill_after_seconds"] is not None  # killed mid-burst
            assert crash["lost"] == crash["unanswered"] == 0, crash
            assert crash["processed"] == crash["users"], crash
            assert crash["duplicated"] <= crash["in_flight_sends"], crash


async def test_a_copy_reaching_a_restarted_process_at_once_gets_the_answer_pushed(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    # The first process committed the update with its passive answer recorded, then (as if killed before
    # its response went out) WeChat got nothing and delivers the message again at once, to the process
    # started after it. Acknowledging it without pushing the recorded answer would leave the user with none.
    settings = make_settings()
    first = await serve(settings)
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    xml = sim.text("o-restarted", "客服电话", msg_id=9_300_001)
    _, body = await post(first, sim.sign(xml))
    answer = sim.open_reply(body)
    assert answer is not None and FAQ_PHONE in answer["Content"]
    _, again_here = await post(first, sim.sign(xml))
    assert again_here == "success"  # a copy racing the live process that answered it: answered once
    restarted = await serve(settings)
    _, again = await post(restarted, sim.sign(xml))
    assert again == "success"  # acknowledged; the recorded answer is pushed, once
    await drain_outbox(restarted)
    assert fake_wechat[0].texts_to("o-restarted") == [answer["Content"]]
    assert await count(restarted, ProcessedMessage) == 1
