"""The outbox worker on SQLite and PostgreSQL, delivering through the fake WeChat API."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import StatementError

from bot.core.config import Settings
from bot.core.db import create_engine, sessionmaker
from bot.core.update import Article, Image, OutMessage, TemplateMessage, TemplateValue, Text
from bot.dev.fakes.wechat import FakeWeChatAPI
from bot.outbox.queue import LEASE, OutboxWorker, enqueue, enqueue_message
from bot.platforms.wechat.client import WeChatAPI
from bot.platforms.wechat.sender import WeChatSender
from bot.web.appkeys import METRICS, SESSIONS, SETTINGS, WECHAT_API, WORKER
from models import OutboxKind, OutboxMessage, OutboxStatus, PlatformAccount, utcnow
from tests.conftest import Serve
from tests.helpers import PATIENCE_SECONDS, STALL_SECONDS, Gate, eventually

CUSTOM_SEND = "message/custom/send"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


async def add_text(app: web.Application, recipient: str, content: str, **options: Any) -> int:
    return await add(app, recipient, "text", {"content": content}, **options)


async def wrote_recently(app: web.Application, recipient: str) -> None:
    """The recipient messaged the account a minute ago (inside WeChat's customer-service window)."""
    async with app[SESSIONS]() as session, session.begin():
        exists = await session.scalar(select(PlatformAccount.id).where(PlatformAccount.user_id == recipient))
        if exists is None:
            session.add(
                PlatformAccount(
                    platform="wechat",
                    app_id=app[SETTINGS].wechat_appid,
                    user_id=recipient,
                    following=True,
                    last_inbound_at=utcnow() - timedelta(minutes=1),
                )
            )


async def add(app: web.Application, recipient: str, kind: str, payload: dict[str, Any], **options: Any) -> int:
    await wrote_recently(app, recipient)
    async with app[SESSIONS]() as session, session.begin():
        row = enqueue(
            session,
            platform="wechat",
            app_id=app[SETTINGS].wechat_appid,
            recipient=recipient,
            kind=kind,
            payload=payload,
            **options,
        )
        await session.flush()
        return row.id


async def get(app: web.Application, row_id: int) -> OutboxMessage:
    async with app[SESSIONS]() as session:
        row = await session.get(OutboxMessage, row_id)
        assert row is not None
        return row


async def all_rows(app: web.Application) -> list[OutboxMessage]:
    async with app[SESSIONS]() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def set_row(app: web.Application, row_id: int, **values: Any) -> None:
    async with app[SESSIONS]() as session, session.begin():
        await session.execute(update(OutboxMessage).where(OutboxMessage.id == row_id).values(**values))


async def make_due(app: web.Application, row_id: int) -> None:
    await set_row(app, row_id, available_at=utcnow() - timedelta(seconds=1))


def sample(app: web.Application, name: str, **labels: str) -> float:
    return app[METRICS].registry.get_sample_value(name, labels) or 0.0


def sent(app: web.Application, kind: str) -> float:
    return sample(app, "vaxbot_outbox_sent_total", platform="wechat", kind=kind)


def failures(app: web.Application, code: str) -> float:
    return sample(app, "vaxbot_outbox_send_failures_total", platform="wechat", code=code)


def seconds_from_now(moment: datetime | None) -> float:
    assert moment is not None
    return (moment - utcnow()).total_seconds()


# --- kinds, statuses and the template message -------------------------------------------------------


def test_a_template_message_serialises_as_the_loose_dict_did() -> None:
    message = TemplateMessage(
        template_id="tpl-remind",
        first=TemplateValue("您有一条接种提醒"),
        keywords=(TemplateValue("林*满"), TemplateValue("百白破疫苗第4剂"), TemplateValue("今天起可接种", "#173177")),
        remark=TemplateValue("请携带接种证"),
        url="https://vax.example.cn/",
    )
    payload = {
        "template_id": "tpl-remind",
        "data": {
            "first": "您有一条接种提醒",
            "keyword1": "林*满",
            "keyword2": "百白破疫苗第4剂",
            "keyword3": {"value": "今天起可接种", "color": "#173177"},
            "remark": "请携带接种证",
        },
        "url": "https://vax.example.cn/",
    }
    assert message.payload() == payload
    assert list(message.payload()["data"]) == ["first", "keyword1", "keyword2", "keyword3", "remark"]
    assert TemplateMessage.from_payload(payload) == message
    # Keywords are read in their numbers' order (keyword10 after keyword9), and first/remark may be absent.
    many = {"template_id": "t", "data": {f"keyword{n}": str(n) for n in (10, 2, 1, 9, 3, 4, 5, 6, 7, 8)}}
    parsed = TemplateMessage.from_payload(many)
    assert [value.value for value in parsed.keywords] == [str(n) for n in range(1, 11)]
    assert parsed.first is None and parsed.remark is None and parsed.url == ""
    assert parsed.payload()["data"] == {f"keyword{n}": str(n) for n in range(1, 11)}


async def test_statuses_and_kinds_are_enums_stored_as_their_strings(app: web.Application) -> None:
    row_id = await add(app, "o-enum", OutboxKind.TEMPLATE, {"template_id": "t", "data": {}})
    row = await get(app, row_id)
    assert row.kind is OutboxKind.TEMPLATE and row.status is OutboxStatus.PENDING
    assert row.status == "pending"  # code comparing with the bare string keeps working
    async with app[SESSIONS]() as session:
        raw = (await session.execute(text("SELECT kind, status FROM outbox WHERE id = :id"), {"id": row_id})).one()
    assert tuple(raw) == ("template", "pending")
    with pytest.raises(StatementError, match="fax"):
        await add(app, "o-enum", "fax", {})


# --- delivery -------------------------------------------------------------------------------------


async def test_delivery_marks_rows_sent(app: web.Application, fake: FakeWeChatAPI) -> None:
    messages: list[OutMessage] = [
        Text(content="您好"),
        Image(media_id="media-1"),
        Article(title="预约成功", description="请按时接种", url="https://vax.example.cn/b/1"),
    ]
    ids = []
    await wrote_recently(app, "o-user-1")
    async with app[SESSIONS]() as session, session.begin():
        for message in messages:
            row = enqueue_message(
                session, platform="wechat", app_id=app[SETTINGS].wechat_appid, recipient="o-user-1", message=message
            )
            await session.flush()
            ids.append(row.id)
    before = utcnow()
    assert await app[WORKER].run_once() == 3
    assert await app[WORKER].run_once() == 0
    bodies = [item.body for item in fake.sent_to("o-user-1")]
    assert [body["msgtype"] for body in bodies] == ["text", "image", "news"]
    assert bodies[0]["text"] == {"content": "您好"}
    assert bodies[1]["image"] == {"media_id": "media-1"}
    assert bodies[2]["news"]["articles"][0]["url"] == "https://vax.example.cn/b/1"
    for row_id in ids:
        row = await get(app, row_id)
        assert row.status == "sent"
        assert row.attempts == 1
        assert row.lease_until is None and row.last_error is None
        assert row.sent_at is not None and row.sent_at >= before - timedelta(seconds=1)
    assert sent(app, "text") == sent(app, "image") == sent(app, "news") == 1


async def test_template_subscription_and_png_image_rows(app: web.Application, fake: FakeWeChatAPI) -> None:
    template = await add(app, "o-user-1", "template", {"template_id": "tpl-booking", "data": {"keyword1": "乙肝"}})
    subscribe = await add(app, "o-user-1", "subscribe", {"template_id": "tpl-remind", "data": {"thing1": "接种提醒"}})
    image = await add(app, "o-user-1", "image", {"png_base64": base64.b64encode(PNG).decode()})
    assert await app[WORKER].run_once() == 3
    assert [(await get(app, row_id)).status for row_id in (template, subscribe, image)] == ["sent"] * 3
    paths = Counter(item.path for item in fake.received)
    assert paths == {"message/template/send": 1, "message/subscribe/bizsend": 1, "media/upload": 1, CUSTOM_SEND: 1}
    [uploaded] = fake.media.values()
    assert uploaded == PNG


# --- retries and dead letters ---------------------------------------------------------------------


async def test_busy_is_retried_after_back_off(app: web.Application, fake: FakeWeChatAPI) -> None:
    row_id = await add_text(app, "o-user-1", "hello")
    fake.fail(CUSTOM_SEND, -1)
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "pending"
    assert row.attempts == 1
    assert row.lease_until is None
    assert row.last_error is not None and "wechat_-1" in row.last_error
    assert 3.5 < seconds_from_now(row.available_at) < 7  # at least WeChat's busy pause (5 s), with jitter
    assert failures(app, "wechat_-1") == 1
    assert sent(app, "text") == 0
    # Not due yet: the worker leaves it.
    assert await app[WORKER].run_once() == 0
    assert fake.received == []
    await make_due(app, row_id)
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "sent" and row.attempts == 2 and row.last_error is None
    assert fake.texts_to("o-user-1") == ["hello"]
    assert sent(app, "text") == 1


async def test_quota_waits_at_least_its_retry_after(app: web.Application, fake: FakeWeChatAPI) -> None:
    row_id = await add_text(app, "o-user-1", "hello")
    fake.fail(CUSTOM_SEND, 45009)
    await app[WORKER].run_once()
    row = await get(app, row_id)
    assert row.status == "pending"
    assert seconds_from_now(row.available_at) > 600 * 0.8 - 5
    assert failures(app, "wechat_45009") == 1


async def test_dead_letter_after_max_attempts(
    make_settings: Callable[..., Settings], serve: Serve, fake: FakeWeChatAPI
) -> None:
    app = (await serve(make_settings(outbox_max_attempts=2))).app
    row_id = await add_text(app, "o-user-1", "hello")
    fake.fail(CUSTOM_SEND, -1, times=5)
    assert await app[WORKER].run_once() == 1
    assert (await get(app, row_id)).status == "pending"
    await make_due(app, row_id)
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "dead"
    assert row.attempts == 2
    assert row.lease_until is None
    assert row.last_error is not None and "wechat_-1" in row.last_error
    await make_due(app, row_id)
    assert await app[WORKER].run_once() == 0
    assert fake.received == []
    assert failures(app, "wechat_-1") == 2
    assert sent(app, "text") == 0


@pytest.mark.parametrize(("errcode", "reason"), [(43004, "user_not_following"), (45015, "outside_service_window")])
async def test_permanent_error_dead_letters_at_once(
    app: web.Application, fake: FakeWeChatAPI, errcode: int, reason: str
) -> None:
    texts = {"o-user-1": "hello", "o-user-2": "hello too"}
    ids = {user: await add_text(app, user, text) for user, text in texts.items()}
    fake.fail(CUSTOM_SEND, errcode)  # whichever of the two (sent side by side) reaches WeChat first
    assert await app[WORKER].run_once() == 2
    failed = next(user for user in texts if not fake.texts_to(user))
    delivered = next(user for user in texts if user != failed)
    row_id = ids[failed]
    row = await get(app, row_id)
    assert row.status == "dead"
    assert row.attempts == 1
    assert row.last_error is not None and reason in row.last_error and f"wechat_{errcode}" in row.last_error
    # The failure of one row does not hold back the rest of the batch.
    assert (await get(app, ids[delivered])).status == "sent"
    assert fake.texts_to(delivered) == [texts[delivered]]
    assert failures(app, f"wechat_{errcode}") == 1
    await make_due(app, row_id)
    assert await app[WORKER].run_once() == 0


async def test_invalid_subscription_data_is_dead_lettered(app: web.Application, fake: FakeWeChatAPI) -> None:
    row_id = await add(app, "o-user-1", "subscribe", {"template_id": "tpl-remind", "data": {"thing1": "长" * 21}})
    await app[WORKER].run_once()
    row = await get(app, row_id)
    assert row.status == "dead"
    assert row.last_error is not None and "bad_template_data" in row.last_error
    assert fake.received == []


async def test_row_for_unknown_platform_is_dead_lettered(app: web.Application) -> None:
    async with app[SESSIONS]() as session, session.begin():
        row = enqueue(session, platform="telegram", app_id="x", recipient="u", kind="text", payload={"content": "x"})
        await session.flush()
        row_id = row.id
    await app[WORKER].run_once()
    row = await get(app, row_id)
    assert row.status == "dead"
    assert row.last_error is not None and "no_sender" in row.last_error


async def test_transport_timeout_is_retried(
    make_settings: Callable[..., Settings], serve: Serve, fake: FakeWeChatAPI
) -> None:
    app = (await serve(make_settings(api_timeout_seconds=0.3))).app
    await app[WECHAT_API].access_token()
    row_id = await add_text(app, "o-user-1", "hello")
    fake.stall(CUSTOM_SEND, STALL_SECONDS)  # only the configured timeout can end the send
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "pending"
    assert row.last_error is not None and "wechat_-2" in row.last_error
    assert failures(app, "wechat_-2") == 1


async def test_expired_token_does_not_cost_an_attempt(app: web.Application, fake: FakeWeChatAPI) -> None:
    await app[WECHAT_API].access_token()
    fake.expire_all_tokens()
    row_id = await add_text(app, "o-user-1", "hello")
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "sent" and row.attempts == 1
    assert fake.token_fetches == 2
    assert fake.texts_to("o-user-1") == ["hello"]


# --- leases, holds and concurrency ----------------------------------------------------------------


async def test_row_of_a_dead_worker_is_taken_after_its_lease(app: web.Application, fake: FakeWeChatAPI) -> None:
    row_id = await add_text(app, "o-user-1", "hello")
    # A worker claimed the row, then died mid-send: the row stays 'sending' under its lease.
    await set_row(app, row_id, status="sending", attempts=1, lease_until=utcnow() + LEASE)
    assert await app[WORKER].run_once() == 0
    assert fake.received == []
    # Once the lease has run out the next worker delivers it.
    await set_row(app, row_id, lease_until=utcnow() - timedelta(seconds=1))
    assert await app[WORKER].run_once() == 1
    row = await get(app, row_id)
    assert row.status == "sent"
    assert row.attempts == 2
    assert row.lease_until is None
    assert fake.texts_to("o-user-1") == ["hello"]


async def test_held_row_waits_until_due(app: web.Application, fake: FakeWeChatAPI) -> None:
    held = await add_text(app, "o-user-1", "later", available_at=utcnow() + timedelta(minutes=10))
    now = await add_text(app, "o-user-1", "now")
    assert await app[WORKER].run_once() == 1
    assert fake.texts_to("o-user-1") == ["now"]
    row = await get(app, held)
    assert row.status == "pending" and row.attempts == 0
    assert (await get(app, now)).status == "sent"
    await make_due(app, held)
    assert await app[WORKER].run_once() == 1
    assert fake.texts_to("o-user-1") == ["now", "later"]
    assert (await get(app, held)).status == "sent"


async def test_due_rows_go_oldest_first_in_batches(
    make_settings: Callable[..., Settings], serve: Serve, fake: FakeWeChatAPI
) -> None:
    app = (await serve(make_settings(outbox_batch_size=2))).app
    base = utcnow() - timedelta(minutes=1)
    for n in (3, 1, 2):
        await add_text(app, "o-user-1", f"m{n}", available_at=base + timedelta(seconds=n))
    assert await app[WORKER].run_once() == 2
    assert sorted(fake.texts_to("o-user-1")) == ["m1", "m2"]
    assert await app[WORKER].run_once() == 1
    assert fake.texts_to("o-user-1")[-1] == "m3"


@pytest.mark.parametrize("pool", ["shared", "separate"])
async def test_concurrent_workers_deliver_each_message_once(
    app: web.Application, settings: Settings, fake: FakeWeChatAPI, pool: str
) -> None:
    total = 24
    for n in range(total):
        await add_text(app, f"o-user-{n % 4}", f"message {n}")
    engine = create_engine(settings) if pool == "separate" else None
    sessions = sessionmaker(engine) if engine is not None else app[SESSIONS]
    sender = WeChatSender(app[WECHAT_API])
    workers = [
        OutboxWorker(sessions, {"wechat": sender}, app[METRICS], batch_size=5),
        OutboxWorker(app[SESSIONS], {"wechat": sender}, app[METRICS], batch_size=5),
        app[WORKER],
    ]
    fake.stall(CUSTOM_SEND, 0.01)  # keep sends in flight while the other workers claim
    try:
        handled = 0
        for _ in range(20):
            counts = await asyncio.gather(*(worker.run_once() for worker in workers))
            handled += sum(counts)
            if not any(counts):
                break
    finally:
        if engine is not None:
            await engine.dispose()
    assert handled == total
    delivered = Counter(item.body["text"]["content"] for item in fake.received if item.path == CUSTOM_SEND)
    assert delivered == Counter(f"message {n}" for n in range(total))
    rows = await all_rows(app)
    assert [row.status for row in rows] == ["sent"] * total
    assert [row.attempts for row in rows] == [1] * total
    assert sent(app, "text") == total


async def test_worker_run_delivers_on_wake_and_stops(app: web.Application, fake: FakeWeChatAPI) -> None:
    worker = app[WORKER]
    task = asyncio.create_task(worker.run())
    try:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        fake.subscribers.append(queue)
        await add_text(app, "o-user-1", "woken")
        worker.wake()
        received = await asyncio.wait_for(queue.get(), timeout=PATIENCE_SECONDS)
        assert received.body["text"]["content"] == "woken"
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=PATIENCE_SECONDS)
    assert task.done() and task.exception() is None


async def test_wake_during_an_empty_claim_is_not_lost(
    make_settings: Callable[..., Settings], serve: Serve, fake: FakeWeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = (await serve(make_settings(outbox_poll_seconds=3600))).app
    worker = app[WORKER]
    await add_text(app, "o-user-1", "woken")
    real_clock = utcnow
    looks = 0

    def clock() -> datetime:
        # The first claim looks an instant before the row is due, and the enqueuer's wake() lands
        # while that claim is still running: the wake must carry over to the next claim.
        nonlocal looks
        looks += 1
        if looks == 1:
            worker.wake()
            return real_clock() - timedelta(seconds=30)
        return real_clock()

    monkeypatch.setattr("bot.outbox.queue.utcnow", clock)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    fake.subscribers.append(queue)
    task = asyncio.create_task(worker.run())
    try:
        # Only the wake can deliver it: the next poll is an hour away, far past this wait.
        received = await asyncio.wait_for(queue.get(), timeout=PATIENCE_SECONDS)
        assert received.body["text"]["content"] == "woken"
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=PATIENCE_SECONDS)
    assert looks >= 2


async def test_late_result_of_a_worker_whose_lease_ran_out_is_ignored(
    app: web.Application, settings: Settings, fake: FakeWeChatAPI, wechat_gate: Gate
) -> None:
    row_id = await add_text(app, "o-user-1", "hello")
    await app[WECHAT_API].access_token()
    # Worker A is slow, not dead: its request reaches WeChat and hangs there past its lease.
    path = "/cgi-bin/" + CUSTOM_SEND
    wechat_gate.hold(path, only=1)
    async with aiohttp.ClientSession() as http:
        slow_api = WeChatAPI(http, app[SESSIONS], settings, app[METRICS])
        slow = OutboxWorker(app[SESSIONS], {"wechat": WeChatSender(slow_api)}, app[METRICS])
        slow_run = asyncio.create_task(slow.run_once())
        await eventually(lambda: wechat_gate.arrived(path) == 1, "worker A's send reaches WeChat")
        await set_row(app, row_id, lease_until=utcnow() - timedelta(seconds=1))
        # Worker B takes the row over and delivers it; A's late failure must not undo that.
        assert await app[WORKER].run_once() == 1
        fake.fail(CUSTOM_SEND, -1)  # what A hears back, late
        wechat_gate.release(path)
        assert await slow_run == 1
    row = await get(app, row_id)
    assert row.status == "sent"
    assert row.attempts == 2
    assert row.last_error is None
    assert fake.texts_to("o-user-1") == ["hello"]
    assert failures(app, "wechat_-1") == 1


# --- WeChat's rules ------------------------------------------------------------------------------


async def test_customer_service_message_outside_the_48_hour_window_is_dead_lettered(
    app: web.Application, fake: FakeWeChatAPI
) -> None:
    row_id = await add_text(app, "o-quiet", "提醒")
    await set_account(app, "o-quiet", last_inbound_at=utcnow() - timedelta(hours=49))
    never = await add_text(app, "o-never-wrote", "你好")
    async with app[SESSIONS]() as session, session.begin():
        await session.execute(delete(PlatformAccount).where(PlatformAccount.user_id == "o-never-wrote"))
    template = await add(app, "o-quiet", "template", {"template_id": "t1", "data": {"first": "接种提醒"}})
    await app[WORKER].run_once()
    for dead in (row_id, never):
        row = await get(app, dead)
        assert row.status == "dead" and row.last_error is not None and "outside_service_window" in row.last_error
    assert fake.sent_to("o-quiet") == [] and fake.sent_to("o-never-wrote") == []
    assert (await get(app, template)).status == "sent"  # template messages are not bound to the window


async def test_not_following_marks_the_account(app: web.Application, fake: FakeWeChatAPI) -> None:
    fake.fail(CUSTOM_SEND, 43004)
    row_id = await add_text(app, "o-left", "你好")
    await app[WORKER].run_once()
    assert (await get(app, row_id)).status == "dead"
    async with app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-left"))).one()
        assert account.following is False


async def set_account(app: web.Application, user_id: str, **values: Any) -> None:
    async with app[SESSIONS]() as session, session.begin():
        await session.execute(update(PlatformAccount).where(PlatformAccount.user_id == user_id).values(**values))


async def test_one_recipients_messages_keep_their_order_through_a_failure(
    app: web.Application, fake: FakeWeChatAPI
) -> None:
    ids = [await add_text(app, "o-order", text) for text in ("第一条", "第二条", "第三条")]
    fake.fail(CUSTOM_SEND, -1)  # the first one fails once (system busy)
    assert await app[WORKER].run_once() == 3
    assert fake.texts_to("o-order") == []  # the later ones were not sent ahead of it
    rows = [await get(app, row_id) for row_id in ids]
    assert [row.status for row in rows] == ["pending", "pending", "pending"]
    assert [row.attempts for row in rows] == [1, 0, 0]  # waiting behind it costs no attempt
    assert rows[1].available_at == rows[0].available_at == rows[2].available_at
    for row_id in ids:
        await make_due(app, row_id)
    assert await app[WORKER].run_once() == 3
    assert fake.texts_to("o-order") == ["第一条", "第二条", "第三条"]


async def test_a_dead_message_does_not_hold_back_the_next(app: web.Application, fake: FakeWeChatAPI) -> None:
    ids = [await add_text(app, "o-next", text) for text in ("第一条", "第二条")]
    fake.fail(CUSTOM_SEND, 45047)  # permanent for the first
    await app[WORKER].run_once()
    assert [(await get(app, row_id)).status for row_id in ids] == ["dead", "sent"]
    assert fake.texts_to("o-next") == ["第二条"]
