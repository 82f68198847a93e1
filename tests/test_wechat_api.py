"""The async WeChat API client against the fake WeChat server: tokens, retries, errcodes, every call."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from bot.chat.menu import wechat_menu
from bot.core import qr as qr_drawing
from bot.core.config import Settings
from bot.core.db import create_engine, sessionmaker
from bot.core.metrics import Metrics
from bot.core.update import TemplateMessage, TemplateValue
from bot.dev.fakes.wechat import FakeWeChatAPI, Received
from bot.outbox.queue import SendError
from bot.platforms.wechat.client import WeChatAPI, WeChatAPIError
from bot.platforms.wechat.sender import PERMANENT_REASONS, WeChatSender, classify
from bot.web.appkeys import HTTP, METRICS, SESSIONS, WECHAT_API
from models import OutboxMessage, PlatformToken, utcnow
from tests.helpers import STALL_SECONDS
from tests.test_show_code import read_qr

# The smallest well-formed PNG (1×1, transparent) and JPEG magic: what the fake accepts.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
CUSTOM_SEND = "message/custom/send"


@pytest.fixture
def api(app: web.Application) -> WeChatAPI:
    return app[WECHAT_API]


@pytest.fixture
def sender(api: WeChatAPI) -> WeChatSender:
    return WeChatSender(api)


@contextlib.asynccontextmanager
async def another_process(settings: Settings) -> AsyncIterator[WeChatAPI]:
    """A second client with its own engine, connection pool and HTTP session: what another process has."""
    engine = create_engine(settings)
    try:
        async with aiohttp.ClientSession() as http:
            yield WeChatAPI(http, sessionmaker(engine), settings, Metrics())
    finally:
        await engine.dispose()


async def token_row(app: web.Application) -> PlatformToken | None:
    async with app[SESSIONS]() as session:
        return (await session.scalars(select(PlatformToken).where(PlatformToken.platform == "wechat"))).first()


def token_refreshes(app: web.Application) -> float:
    value = app[METRICS].registry.get_sample_value("vaxbot_access_token_refreshes_total", {"platform": "wechat"})
    return value or 0.0


def calls(fake: FakeWeChatAPI, path: str) -> list[Received]:
    return [item for item in fake.received if item.path == path]


def row(kind: str, payload: dict[str, Any], recipient: str = "o-user-1") -> OutboxMessage:
    """An outbox row as the worker hands it to the sender (not stored: the sender only reads it)."""
    return OutboxMessage(
        id=1, platform="wechat", app_id="wx0000000000de0001", recipient=recipient, kind=kind, payload=payload
    )


# --- the access token -------------------------------------------------------------------------


async def test_token_fetched_once_and_reused(app: web.Application, api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    for n in range(3):
        await api.send_text("o-user-1", f"message {n}")
    assert fake.token_fetches == 1
    assert fake.texts_to("o-user-1") == ["message 0", "message 1", "message 2"]
    tokens = {item.token for item in fake.received}
    assert tokens == {fake.current_token}
    stored = await token_row(app)
    assert stored is not None and stored.token == fake.current_token and stored.refresh_count == 1
    assert stored.expires_at is not None and stored.expires_at > utcnow() + timedelta(hours=1)
    assert token_refreshes(app) == 1


async def test_new_process_takes_the_stored_token(settings: Settings, api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    first = await api.access_token()
    async with another_process(settings) as other:
        assert await other.access_token() == first
        await other.send_text("o-user-1", "from the other process")
    assert fake.token_fetches == 1
    assert fake.received[-1].token == first


async def test_two_processes_asking_at_once_share_one_token(
    settings: Settings, app: web.Application, api: WeChatAPI, fake: FakeWeChatAPI
) -> None:
    async with another_process(settings) as other, another_process(settings) as third:
        tokens = await asyncio.gather(api.access_token(), other.access_token(), third.access_token())
        assert len(set(tokens)) == 1
        await asyncio.gather(api.send_text("o-a", "one"), other.send_text("o-b", "two"), third.send_text("o-c", "3"))
    assert fake.token_fetches == 1
    assert {item.token for item in fake.received} == {tokens[0]}
    stored = await token_row(app)
    assert stored is not None and stored.refresh_count == 1


async def test_concurrent_asks_in_one_process_fetch_once(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    tokens = await asyncio.gather(*(api.access_token() for _ in range(10)))
    assert len(set(tokens)) == 1
    assert fake.token_fetches == 1


async def test_token_close_to_expiry_is_refreshed_before_use(
    settings: Settings, app: web.Application, api: WeChatAPI, fake: FakeWeChatAPI
) -> None:
    await api.access_token()
    async with app[SESSIONS]() as session, session.begin():
        await session.execute(update(PlatformToken).values(expires_at=utcnow() + timedelta(minutes=2)))
    async with another_process(settings) as other:
        await other.send_text("o-user-1", "hello")
    # Asked again (not forced): WeChat answers with the token and how long it really has left.
    stored = await token_row(app)
    assert stored is not None and stored.expires_at is not None
    assert stored.refresh_count == 2
    assert stored.expires_at > utcnow() + timedelta(hours=1)
    assert fake.token_fetches == 1
    assert fake.received[-1].token == stored.token == fake.current_token


async def test_expired_token_mid_send_refreshes_once_and_retries(
    app: web.Application, api: WeChatAPI, fake: FakeWeChatAPI
) -> None:
    await api.send_text("o-user-1", "before")
    old = fake.current_token
    fake.expire_all_tokens()
    await api.send_text("o-user-1", "after")
    assert fake.texts_to("o-user-1") == ["before", "after"]
    assert fake.token_fetches == 2
    assert fake.received[-1].token == fake.current_token != old
    assert token_refreshes(app) == 2
    stored = await token_row(app)
    assert stored is not None and stored.token == fake.current_token


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_rejected_token_forces_a_new_one(api: WeChatAPI, fake: FakeWeChatAPI, errcode: int) -> None:
    # WeChat still considers the token valid, so only force_refresh makes it issue another one.
    old = await api.access_token()
    fake.fail(CUSTOM_SEND, errcode, times=1)
    await api.send_text("o-user-1", "hello")
    assert fake.token_fetches == 2
    assert fake.current_token != old
    assert fake.received[-1].token == fake.current_token
    assert fake.texts_to("o-user-1") == ["hello"]


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_token_error_that_persists_is_retried_once_then_raised(
    api: WeChatAPI, fake: FakeWeChatAPI, errcode: int
) -> None:
    fake.fail(CUSTOM_SEND, errcode, times=5)
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("o-user-1", "first")
    assert caught.value.errcode == errcode
    assert fake.token_fetches == 2  # the first fetch and exactly one refresh
    # Each send made exactly two calls: 5 failures = 2 (first) + 2 (second) + 1 (third, then success).
    with pytest.raises(WeChatAPIError):
        await api.send_text("o-user-1", "second")
    assert fake.token_fetches == 3
    await api.send_text("o-user-1", "third")
    assert fake.texts_to("o-user-1") == ["third"]
    assert fake.token_fetches == 4
    # The outbox would try again later (token trouble is not the user's fault).
    assert classify(caught.value).retryable


async def test_two_processes_rejected_together_refresh_once(
    settings: Settings, api: WeChatAPI, fake: FakeWeChatAPI
) -> None:
    async with another_process(settings) as other:
        old = await api.access_token()
        assert await other.access_token() == old
        fake.fail(CUSTOM_SEND, 40001, times=2)
        await asyncio.gather(api.send_text("o-a", "one"), other.send_text("o-b", "two"))
        # The second to reach the row lock finds the other's fresh token and does not force yet another one.
        assert fake.token_fetches == 2
        assert fake.texts_to("o-a") == ["one"] and fake.texts_to("o-b") == ["two"]
        assert {item.token for item in fake.received} == {fake.current_token}
        assert await other.access_token() == await api.access_token() == fake.current_token


async def test_two_processes_after_expiry_refresh_once(settings: Settings, api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    async with another_process(settings) as other:
        await asyncio.gather(api.access_token(), other.access_token())
        fake.expire_all_tokens()
        await asyncio.gather(api.send_text("o-a", "one"), other.send_text("o-b", "two"))
        assert fake.token_fetches == 2
        assert fake.texts_to("o-a") == ["one"] and fake.texts_to("o-b") == ["two"]


# --- errcodes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("errcode", "minimum"), [(-1, 5.0), (45009, 600.0)])
async def test_busy_and_quota_are_retryable_with_retry_after(
    sender: WeChatSender, fake: FakeWeChatAPI, errcode: int, minimum: float
) -> None:
    fake.fail(CUSTOM_SEND, errcode)
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "hello"}))
    assert caught.value.retryable
    assert caught.value.retry_after == minimum
    assert caught.value.code == f"wechat_{errcode}"
    assert fake.received == []
    await sender.send(row("text", {"content": "hello"}))
    assert fake.texts_to("o-user-1") == ["hello"]


@pytest.mark.parametrize(
    ("errcode", "reason"),
    [(43004, "user_not_following"), (45015, "outside_service_window"), (45047, "service_message_limit")],
)
async def test_user_state_errors_are_permanent(
    sender: WeChatSender, fake: FakeWeChatAPI, errcode: int, reason: str
) -> None:
    fake.fail(CUSTOM_SEND, errcode)
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "hello"}))
    assert not caught.value.retryable
    assert caught.value.code == f"wechat_{errcode}"
    assert reason in str(caught.value)
    assert fake.token_fetches == 1  # not a token problem: no refresh


async def test_subscription_refused_is_permanent(sender: WeChatSender, fake: FakeWeChatAPI) -> None:
    fake.fail("message/subscribe/bizsend", 43101)
    payload = {"template_id": "tpl-remind", "data": {"thing1": "百白破疫苗第二针"}}
    with pytest.raises(SendError) as caught:
        await sender.send(row("subscribe", payload))
    assert not caught.value.retryable
    assert "subscription_refused" in str(caught.value)


async def test_missing_template_id_is_permanent(sender: WeChatSender, fake: FakeWeChatAPI) -> None:
    # The fake answers 40037 on its own for an empty template id, as WeChat does.
    with pytest.raises(SendError) as caught:
        await sender.send(row("template", {"template_id": "", "data": {"keyword1": "x"}}))
    assert caught.value.code == "wechat_40037"
    assert not caught.value.retryable
    assert "bad_template_id" in str(caught.value)
    assert fake.received == []


def test_classify_covers_every_code() -> None:
    for code, reason in PERMANENT_REASONS.items():
        error = classify(WeChatAPIError(code, "x"))
        assert not error.retryable and error.code == f"wechat_{code}" and reason in str(error)
    for code in (-2, -3, 40001, 40014, 42001):
        error = classify(WeChatAPIError(code, "x"))
        assert error.retryable and error.retry_after is None
    unknown = classify(WeChatAPIError(49999, "something new"))
    assert unknown.retryable and unknown.code == "wechat_49999"  # retried until the attempts run out


async def test_transport_timeout_is_retryable(
    make_settings: Callable[..., Settings], app: web.Application, fake: FakeWeChatAPI
) -> None:
    quick = make_settings(api_timeout_seconds=0.3)
    # A session with no timeout of its own (aiohttp's default is five minutes): only the configured one applies.
    async with aiohttp.ClientSession() as http:
        api = WeChatAPI(http, app[SESSIONS], quick, app[METRICS])
        await api.access_token()
        fake.stall(CUSTOM_SEND, STALL_SECONDS)  # only the configured timeout can end the call
        with pytest.raises(WeChatAPIError) as caught:
            await api.send_text("o-user-1", "hello")
        assert caught.value.errcode == -2
        error = classify(caught.value)
        assert error.retryable and error.code == "wechat_-2"
        with pytest.raises(SendError) as sent:
            await WeChatSender(api).send(row("text", {"content": "hello"}))
        assert sent.value.retryable


async def test_unreachable_server_is_retryable(
    make_settings: Callable[..., Settings], app: web.Application, unused_tcp_port: int
) -> None:
    closed = make_settings(wechat_api_base=f"http://127.0.0.1:{unused_tcp_port}", api_timeout_seconds=0.5)
    api = WeChatAPI(app[HTTP], app[SESSIONS], closed, app[METRICS])
    with pytest.raises(SendError) as caught:
        await WeChatSender(api).send(row("text", {"content": "hello"}))
    # The token could not be fetched (the server is unreachable): retryable, with the cause kept.
    assert caught.value.retryable and caught.value.code == "wechat_-3" and "-2" in str(caught.value)


async def test_token_refusal_is_retryable_not_dead(app: web.Application, fake: FakeWeChatAPI) -> None:
    fake.fail("stable_token", 40164)  # e.g. the server's IP is not whitelisted yet
    api = app[WECHAT_API]
    with pytest.raises(SendError) as caught:
        await WeChatSender(api).send(row("text", {"content": "hello"}))
    assert caught.value.retryable and "40164" in str(caught.value)
    await WeChatSender(api).send(row("text", {"content": "hello"}))  # fixed: the next attempt goes out
    assert fake.texts_to("o-user-1") == ["hello"]


# --- the calls ------------------------------------------------------------------------------------


async def test_customer_service_text(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    await api.send_text("o-user-1", "您的接种证已生成")
    [call] = calls(fake, CUSTOM_SEND)
    assert call.body == {"touser": "o-user-1", "msgtype": "text", "text": {"content": "您的接种证已生成"}}


async def test_upload_then_customer_service_image(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    media_id = await api.upload_image(PNG)
    assert fake.media[media_id] == PNG
    await api.send_image("o-user-1", media_id)
    [call] = calls(fake, CUSTOM_SEND)
    assert call.body == {"touser": "o-user-1", "msgtype": "image", "image": {"media_id": media_id}}


async def test_jpeg_upload_accepted(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 64
    media_id = await api.upload_image(jpeg, filename="code.jpg")
    assert fake.media[media_id] == jpeg


async def test_upload_rejects_what_is_not_an_image(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    with pytest.raises(WeChatAPIError) as caught:
        await api.upload_image(b"GIF89a not a png")
    assert caught.value.errcode == 40005
    assert fake.media == {}
    assert not classify(caught.value).retryable


async def test_upload_over_2_mb_is_refused_before_sending(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    big = PNG + b"\x00" * (2 * 1024 * 1024)
    with pytest.raises(WeChatAPIError) as caught:
        await api.upload_image(big)
    assert caught.value.errcode == 40009
    assert fake.media == {} and fake.token_fetches == 0


async def test_fake_refuses_upload_over_2_mb(api: WeChatAPI, fake_wechat: tuple[FakeWeChatAPI, str]) -> None:
    fake, base = fake_wechat
    token = await api.access_token()
    form = aiohttp.FormData()
    form.add_field("media", PNG + b"\x00" * (2 * 1024 * 1024), filename="big.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/cgi-bin/media/upload", params={"access_token": token, "type": "image"}, data=form) as r,
    ):
        body = await r.json()
    assert body["errcode"] == 40009
    assert fake.media == {}


async def test_upload_after_token_expiry_resends_the_file(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    await api.access_token()
    fake.expire_all_tokens()
    media_id = await api.upload_image(PNG)
    assert fake.media[media_id] == PNG
    assert fake.token_fetches == 2


async def test_sender_uploads_image_given_as_png(sender: WeChatSender, fake: FakeWeChatAPI) -> None:
    await sender.send(row("image", {"png_base64": base64.b64encode(PNG).decode()}))
    [upload] = calls(fake, "media/upload")
    [call] = calls(fake, CUSTOM_SEND)
    assert call.body["image"]["media_id"] == upload.body["media_id"]
    assert fake.media[upload.body["media_id"]] == PNG


async def test_sender_draws_a_qr_text_in_a_worker_thread_just_before_the_upload(
    sender: WeChatSender, fake: FakeWeChatAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = "VX1:ABCDEFGHIJKLMNOPQRSTUVWX:1795424400:ABCDEFGHIJKLMNOPQRSTUVWX"
    drawn_on: list[int] = []
    draw = qr_drawing.qr_png

    def recording(text: str) -> bytes:
        drawn_on.append(threading.get_ident())
        return draw(text)

    monkeypatch.setattr(qr_drawing, "qr_png", recording)
    await sender.send(row("image", {"qr_text": code, "credential": True}))
    [upload] = calls(fake, "media/upload")
    [call] = calls(fake, CUSTOM_SEND)
    assert call.body["image"]["media_id"] == upload.body["media_id"]
    assert read_qr(fake.media[upload.body["media_id"]]) == code
    assert len(drawn_on) == 1 and drawn_on[0] != threading.get_ident()  # not on the event loop's thread


async def test_sender_refuses_a_qr_text_it_cannot_draw_without_repeating_it(
    sender: WeChatSender, fake: FakeWeChatAPI
) -> None:
    with pytest.raises(SendError) as caught:
        await sender.send(row("image", {"qr_text": "vx1:lower-case:1", "credential": True}))
    assert not caught.value.retryable and caught.value.code == "wechat_image"
    assert "vx1" not in str(caught.value) and fake.media == {}


async def test_customer_service_news(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    article = {
        "title": "预约成功",
        "description": "请按时接种",
        "url": "https://vax.example.cn/b/1",
        "image_url": "https://vax.example.cn/p.png",
    }
    await api.send_news("o-user-1", article)
    [call] = calls(fake, CUSTOM_SEND)
    assert call.body["msgtype"] == "news"
    assert call.body["news"]["articles"] == [
        {
            "title": "预约成功",
            "description": "请按时接种",
            "url": "https://vax.example.cn/b/1",
            "picurl": "https://vax.example.cn/p.png",
        }
    ]


async def test_template_message_returns_msgid(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    template = TemplateMessage(
        "tpl-booking", (TemplateValue("乙肝疫苗"), TemplateValue("2024-05-01")), url="https://vax.example.cn/b"
    )
    msgid = await api.send_template("o-user-1", template)
    assert msgid.isdigit()
    [call] = calls(fake, "message/template/send")
    assert call.body == {
        "touser": "o-user-1",
        "template_id": "tpl-booking",
        "data": {"keyword1": {"value": "乙肝疫苗"}, "keyword2": {"value": "2024-05-01"}},
        "url": "https://vax.example.cn/b",
    }


async def test_subscription_notification(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    thing = "一" * 20  # exactly the limit
    await api.send_subscription("o-user-1", "tpl-remind", {"thing1": thing, "time2": "2024-05-01"}, page="pages/a")
    [call] = calls(fake, "message/subscribe/bizsend")
    assert call.body["data"] == {"thing1": {"value": thing}, "time2": {"value": "2024-05-01"}}
    assert call.body["page"] == "pages/a"


async def test_subscription_thing_over_20_characters_is_permanent(sender: WeChatSender, fake: FakeWeChatAPI) -> None:
    payload = {"template_id": "tpl-remind", "data": {"thing1": "一" * 21}}
    with pytest.raises(SendError) as caught:
        await sender.send(row("subscribe", payload))
    assert caught.value.code == "wechat_47003"
    assert not caught.value.retryable
    assert "bad_template_data" in str(caught.value)
    assert calls(fake, "message/subscribe/bizsend") == []


async def test_create_menu(api: WeChatAPI, fake: FakeWeChatAPI) -> None:
    menu = wechat_menu()
    await api.create_menu(menu)
    [call] = calls(fake, "menu/create")
    assert call.body == menu


async def test_unknown_kind_is_permanent(sender: WeChatSender, fake: FakeWeChatAPI) -> None:
    with pytest.raises(SendError) as caught:
        await sender.send(row("video", {}))
    assert caught.value.code == "unknown_kind" and not caught.value.retryable
    assert fake.received == []
