"""Hostile input that is not a protocol violation: deep XML, stalled bodies, image floods, foreign clinics."""

from __future__ import annotations

from typing import Any

import pytest

from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.wechat import WeChatClientSim
from bot.platforms.common import MAX_XML_DEPTH, Rejected, safe_xml
from models import ProcessedMessage
from tests.conftest import Serve
from tests.helpers import count, post, post_alipay

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
