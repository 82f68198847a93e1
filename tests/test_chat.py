"""The terminal client against the development server (the fake WeChat API mounted in-process)."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
from pytest_aiohttp import AiohttpServer

from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, build_serving_app
from bot.dev.chat import AlipayChatSession, ChatSession, run_chat


async def test_chat_session_talks_through_the_signed_webhook(
    make_settings: Any, aiohttp_server: AiohttpServer, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    settings = make_settings(
        env="development",
        port=port,
        wechat_api_base=f"http://127.0.0.1:{port}{DEV_API_PREFIX}",
        run_outbox_worker=True,
    )
    await aiohttp_server(build_serving_app(settings), port=port)
    async with aiohttp.ClientSession() as http:
        chat = ChatSession(http, f"http://127.0.0.1:{port}", settings, "demo-chat", "safe")
        await chat.start()
        assert any("欢迎关注" in answer for answer in await chat.send("/follow"))
        assert any("400-101-6588" in answer for answer in await chat.send("客服电话"))
        assert any("回复数字" in answer for answer in await chat.send("/click HELP_FAQ"))

    lines = iter(["/menu", "狂犬疫苗", "/quit"])
    out = io.StringIO()
    await run_chat(settings, f"http://127.0.0.1:{port}", "demo-chat-2", "compatible", lambda: next(lines), out)
    text = out.getvalue()
    assert "申领接种证=/click CERT_CLAIM" in text
    assert "vaxbot> 狂犬疫苗的接种信息记录在犬伤预防接种信息系统" in text


async def test_chat_explains_when_no_server_runs(make_settings: Any, unused_tcp_port: int) -> None:
    out = io.StringIO()
    await run_chat(make_settings(), f"http://127.0.0.1:{unused_tcp_port}", "u", "safe", lambda: "/quit", out)
    assert "请先运行 make run" in out.getvalue()


async def test_alipay_chat_talks_through_the_signed_gateway(
    make_settings: Any, aiohttp_server: AiohttpServer, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    settings = make_settings(
        env="development",
        port=port,
        wechat_api_base=f"http://127.0.0.1:{port}{DEV_API_PREFIX}",
        alipay_gateway=f"http://127.0.0.1:{port}{DEV_ALIPAY_PREFIX}/gateway.do",
        run_outbox_worker=True,
    )
    await aiohttp_server(build_serving_app(settings), port=port)
    async with aiohttp.ClientSession() as http:
        chat = AlipayChatSession(http, f"http://127.0.0.1:{port}", settings, "2088000000000501")
        await chat.start()
        assert any("欢迎关注" in answer for answer in await chat.send("/follow"))
        assert any("400-101-6588" in answer for answer in await chat.send("客服电话"))
        assert any("回复数字" in answer for answer in await chat.send("/click HELP_FAQ"))
        assert await chat.send("/enter CLINIC-NT-CC-01") == []

    lines = iter(["狂犬疫苗", "/quit"])
    out = io.StringIO()
    await run_chat(settings, f"http://127.0.0.1:{port}", "2088000000000502", "safe", lambda: next(lines), out, "alipay")
    text = out.getvalue()
    assert "你是支付宝用户" in text
    assert "vaxbot> 狂犬疫苗的接种信息记录在犬伤预防接种信息系统" in text


def test_links_and_images_come_with_an_address_to_open() -> None:
    from bot.dev.chat import describe, describe_alipay

    base = "http://127.0.0.1:8080"
    news = {"msgtype": "news", "news": {"articles": [{"title": "点击进行人脸识别", "url": f"{base}/verify/h"}]}}
    assert describe(news, base) == f"[链接] 点击进行人脸识别 {base}/verify/h"
    passive = {"MsgType": "news", "Articles": {"item": {"Title": "打开", "Url": f"{base}/code/h"}}}
    assert describe(passive) == f"[链接] 打开 {base}/code/h"
    assert describe({"msgtype": "image", "image": {"media_id": "m1"}}, base) == f"[图片] {base}/sandbox/api/media/m1"
    card = {"msg_type": "image-text", "articles": [{"title": "请查看图片", "url": f"{base}/_dev/alipay/images/x.png"}]}
    assert describe_alipay("alipay.open.public.message.custom.send", card) == (
        f"[图文] 请查看图片 {base}/_dev/alipay/images/x.png"
    )
