"""A passive answer that cannot have reached WeChat is pushed instead, once; WeChat's retry then gets `success`."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from bot.chat.conversation import Context, Route, text_in
from bot.dev.fakes.wechat import FakeWeChatAPI, SignedRequest, WeChatClientSim
from bot.web import webhooks
from bot.web.appkeys import ENGINE, SESSIONS, WECHAT
from models import ProcessedMessage
from tests.conftest import Serve
from tests.helpers import PATIENCE_SECONDS, Client, drain_outbox, eventually, outbox_rows, post, router_with

CONTACT = "400-101-6588"  # in the catalogue's "contact" answer


async def _serve(make_settings: Any, serve: Serve, **overrides: Any) -> tuple[Client, WeChatClientSim]:
    settings = make_settings(**overrides)
    client = await serve(settings)
    return client, WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)


async def _age_first_delivery(client: Client, seconds: float) -> None:
    """Move the first delivery's time back, so that the next copy is a retry WeChat sent seconds later."""
    async with client.app[SESSIONS]() as session, session.begin():
        for row in (await session.scalars(select(ProcessedMessage))).all():
            row.created_at -= timedelta(seconds=seconds)


async def _pushed(client: Client, fake: FakeWeChatAPI, user: str) -> list[str]:
    await drain_outbox(client)
    return fake.texts_to(user)


async def _post_raw(host: str, port: int, request: SignedRequest) -> asyncio.StreamWriter:
    """Send a signed request over a raw connection, without reading the answer; the open connection."""
    _, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /wechat?{urlencode(request.query)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {len(request.body)}\r\n\r\n"
    )
    writer.write(head.encode() + request.body)
    await writer.drain()
    return writer


async def test_an_answer_for_a_dropped_connection_is_pushed_once_and_the_retry_gets_success(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def held(ctx: Context) -> None:
        started.append("started")
        await release.wait()  # WeChat gives up while the answer is being made
        ctx.say("contact")

    # The engine waits for the handler (a long deadline), so its answer would be the passive one. The
    # test server cancels the handler of a dropped connection, as a server may (`vaxbot serve` does not:
    # there the clock catches it, see the next test).
    settings = make_settings(reply_deadline_seconds=PATIENCE_SECONDS)
    client = await serve(settings, router=router_with(Route(text_in("慢一点"), held)))
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    xml = sim.text("o-gone", "慢一点", msg_id=515151)
    host, port = str(client.server.host), int(client.server.port or 0)
    assert client.server.runner is not None and client.server.runner.server is not None
    server = client.server.runner.server

    # WeChat sends the message, then closes the connection (its 5 s are up).
    writer = await _post_raw(host, port, sim.sign(xml))
    await eventually(lambda: started == ["started"], "the handler starts")
    writer.close()
    await writer.wait_closed()
    await eventually(lambda: not server.connections, "the server sees the connection closed")
    release.set()

    async def queued() -> bool:
        rows = await outbox_rows(client, recipient="o-gone")
        return [row.status for row in rows] == ["pending"]

    await eventually(queued, "the answer nobody read is queued as a push")
    await eventually(lambda: _has_push(client, fake_wechat[0], "o-gone"), "the answer is pushed")
    await _age_first_delivery(client, 6)
    assert await post(client, sim.sign(xml)) == (200, "success")  # WeChat's retry
    texts = await _pushed(client, fake_wechat[0], "o-gone")
    assert len(texts) == 1 and CONTACT in texts[0]  # read once
    assert [row.status for row in await outbox_rows(client, recipient="o-gone")] == ["sent"]


async def _has_push(client: Client, fake: FakeWeChatAPI, user: str) -> bool:
    return bool(await _pushed(client, fake, user))


@pytest.mark.parametrize(("written_after", "pushed"), [(6.0, True), (4.6, True), (4.4, False)])
async def test_an_answer_written_past_wechats_limit_is_pushed_too(
    make_settings: Any,
    serve: Serve,
    fake_wechat: tuple[FakeWeChatAPI, str],
    monkeypatch: pytest.MonkeyPatch,
    written_after: float,
    pushed: bool,
) -> None:
    client, sim = await _serve(make_settings, serve)
    # A loaded event loop: the answer is written this long after the request was read.
    monkeypatch.setattr(webhooks, "_elapsed", lambda started: written_after)
    request = sim.sign(sim.text("o-late", "客服电话", msg_id=626262))
    status, body = await post(client, request)
    reply = sim.open_reply(body)
    assert status == 200 and reply is not None and CONTACT in reply["Content"]  # written, maybe too late

    if not pushed:
        # Trusted to have arrived: nothing is pushed while no retry says otherwise.
        assert await _pushed(client, fake_wechat[0], "o-late") == []
        assert [row.status for row in await outbox_rows(client, recipient="o-late")] == ["passive"]
    await _age_first_delivery(client, 6)
    status, again = await post(client, request)  # WeChat's retry: it did not get the answer after all
    assert again == "success"
    await eventually(lambda: _has_push(client, fake_wechat[0], "o-late"), "the answer is pushed")
    assert len(await _pushed(client, fake_wechat[0], "o-late")) == 1
    _, third = await post(client, request)  # WeChat's second retry: nothing more
    assert third == "success"
    assert len(await _pushed(client, fake_wechat[0], "o-late")) == 1


async def test_an_answer_in_time_is_not_pushed(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    client, sim = await _serve(make_settings, serve)
    request: SignedRequest = sim.sign(sim.text("o-fast", "客服电话", msg_id=737373))
    status, body = await post(client, request)
    reply = sim.open_reply(body)
    assert status == 200 and reply is not None and CONTACT in reply["Content"]
    assert await _pushed(client, fake_wechat[0], "o-fast") == []
    assert [(row.status, row.last_error) for row in await outbox_rows(client, recipient="o-fast")] == [
        ("passive", None)
    ]


async def test_missing_twice_pushes_once(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    # The original's answer and a retry's answer (given while the original's was still being written) both
    # come too late: each asks for the push, the first one queues it.
    client, sim = await _serve(make_settings, serve)
    request = sim.sign(sim.text("o-twice", "客服电话", msg_id=848484))
    status, body = await post(client, request)
    assert status == 200 and sim.open_reply(body) is not None
    update, _ = client.app[WECHAT].open(request.query, request.body)
    engine = client.app[ENGINE]
    assert await asyncio.gather(engine.passive_missed(update), engine.passive_missed(update)) in (
        [True, False],
        [False, True],
    )
    await eventually(lambda: _has_push(client, fake_wechat[0], "o-twice"), "the answer is pushed")
    assert await engine.passive_missed(update) is False  # sent: nothing to requeue
    texts = await _pushed(client, fake_wechat[0], "o-twice")
    assert len(texts) == 1 and CONTACT in texts[0]
