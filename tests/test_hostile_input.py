"""Hostile input that is not a protocol violation: deep XML, stalled bodies, image floods, foreign clinics."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.wechat import WeChatClientSim
from bot.platforms.common import MAX_XML_DEPTH, Rejected, safe_xml
from models import ProcessedMessage
from tests.conftest import Serve
from tests.helpers import PATIENCE_SECONDS, Client, count, post, post_alipay

ROOMY = 512 * 1024  # bodies large enough to carry 5,000 nested elements (percent-encoded on Alipay)


def _deep(depth: int) -> str:
    return "<a>" * depth + "x" + "</a>" * depth


def test_nesting_up_to_the_limit_is_read_and_deeper_is_refused() -> None:
    inside = safe_xml("<xml>" + _deep(MAX_XML_DEPTH - 1) + "</xml>", "xml")  # the root counts as one level
    assert "a" in inside
    with pytest.raises(Rejected) as refused:
        safe_xml("<xml>" + _deep(MAX_XML_DEPTH) + "</xml>", "xml")
    assert (refused.value.status, refused.value.reason) == (400, "xml nested too deeply")


async def test_deep_xml_is_refused_on_wechat(make_settings: Any, serve: Serve) -> None:
    settings = make_settings(max_body_bytes=ROOMY)
    client = await serve(settings)
    wechat = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    xml = wechat.text("o-deep", "你好").replace("<Content>", "<Content>" + _deep(5000))
    for mode in ("safe", "plain"):  # inside the encrypted envelope, and as the envelope itself
        status, body = await post(client, wechat.sign(xml, mode=mode))
        assert (status, body) == (400, "xml nested too deeply")
    assert await count(client, ProcessedMessage) == 0


async def test_deep_xml_is_refused_on_alipay(make_settings: Any, serve: Serve, alipay: AlipayClientSim) -> None:
    client = await serve(make_settings(max_body_bytes=ROOMY))
    xml = alipay.text("2088000000000301", "你好").replace("</XML>", _deep(5000) + "</XML>")
    status, body, _ = await post_alipay(client, alipay.form(xml))
    assert (status, body) == (400, b"xml nested too deeply")
    assert await count(client, ProcessedMessage) == 0


# --- bodies that never finish ------------------------------------------------------------------------------


async def _raw_post(client: Client, path: str, content_type: str, body: bytes, sent: int) -> bytes:
    """Announce ``body``, send only its first ``sent`` bytes; return all the server says until it closes."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: vaxbot.test\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body[:sent])
        await writer.drain()
        # Bounded: read() returns once the server closes the connection; the bound only ends a hung test.
        return await asyncio.wait_for(reader.read(), PATIENCE_SECONDS)
    finally:
        writer.close()


async def test_a_stalled_body_gets_408_and_its_connection_closed(
    make_settings: Any, serve: Serve, alipay: AlipayClientSim
) -> None:
    settings = make_settings(body_read_timeout_seconds=0.2)
    client = await serve(settings)
    wechat = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    signed = wechat.sign(wechat.text("o-stall", "客服电话"))
    path = "/wechat?" + urlencode(signed.query)
    answer = await _raw_post(client, path, "text/xml", signed.body, len(signed.body) // 2)
    assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b"body not received in time")
    assert b"\r\nConnection: close\r\n" in answer

    form = alipay.form(alipay.text("2088000000000302", "客服电话"))
    answer = await _raw_post(client, "/alipay", "application/x-www-form-urlencoded", form, 10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert await count(client, ProcessedMessage) == 0


async def test_a_body_that_arrives_in_pieces_is_answered(app_client: Client, wechat: WeChatClientSim) -> None:
    signed = wechat.sign(wechat.text("o-pieces", "客服电话"))
    assert app_client.server.host is not None and app_client.server.port is not None
    reader, writer = await asyncio.open_connection(app_client.server.host, app_client.server.port)
    try:
        head = (
            f"POST /wechat?{urlencode(signed.query)} HTTP/1.1\r\nHost: vaxbot.test\r\nContent-Type: text/xml\r\n"
            f"Content-Length: {len(signed.body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + signed.body[:40])
        await writer.drain()
        writer.write(signed.body[40:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), PATIENCE_SECONDS)
    finally:
        writer.close()
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200 ")
    reply = wechat.open_reply(body.decode())
    assert reply is not None and "400-101-6588" in reply["Content"]
