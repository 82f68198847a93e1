"""The sandbox's 「微信小程序」 choice: the mini program's chat through its real protocol and fakes."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, build_serving_app
from bot.core.config import DEV_WXMINI_PREFIX
from bot.dev.demo import seed_demo
from bot.dev.sandbox import mini_view
from bot.web.appkeys import SERVICES, SESSIONS
from tests.helpers import drain_outbox
from tests.test_sandbox_routes import _page_post, _transcript


async def test_the_sandbox_chats_as_a_mini_program_user(
    make_settings: Any, aiohttp_client: Any, unused_tcp_port: int
) -> None:
    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        env="development",
        port=port,
        public_url=base,
        wechat_api_base=f"{base}{DEV_API_PREFIX}",
        wechat_oauth_base=f"{base}{DEV_API_PREFIX}",
        alipay_gateway=f"{base}{DEV_ALIPAY_PREFIX}/gateway.do",
        alipay_oauth_base=f"{base}{DEV_ALIPAY_PREFIX}",
        wxmini_api_base=f"{base}{DEV_WXMINI_PREFIX}",
    )
    app = build_serving_app(settings)
    client: TestClient[Any, Any] = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1", "port": port})
    assert await seed_demo(app[SESSIONS], app[SERVICES].vault)
    config = await (await client.get("/sandbox/api/config")).json()
    assert "wxmini" in config["platforms"]
    user = "o-demo-mini"
    for action, value in (("enter", ""), ("text", "客服电话"), ("click", "HELP_FAQ")):
        payload = {"platform": "wxmini", "user": user, "action": action, "value": value}
        response = await _page_post(client, "/sandbox/api/send", payload)
        assert response.status == 200, await response.text()
        await drain_outbox(client)
    entries = (await _transcript(client, "wxmini", user))["items"]
    said = [str(entry.get("text", "")) for entry in entries if entry["who"] == "bot"]
    assert any("400-101-6588" in text for text in said) and any("回复数字" in text for text in said), said
    assert (await _transcript(client, "wechat", user))["items"] == []  # the Official Account's chat is another


def test_a_subscription_message_shows_as_a_card() -> None:
    from bot.core.catalogue import build_catalogue
    from bot.core.config import DEV_SUBSCRIBE_TEMPLATE, load_settings

    settings = load_settings(environ={"VAXBOT_ENV": "test"})
    body = {
        "touser": "o",
        "template_id": DEV_SUBSCRIBE_TEMPLATE,
        "page": "pages/records/index",
        "data": {"thing1": {"value": "林*满"}},
    }
    view = mini_view(body, build_catalogue(settings), settings)
    assert view["kind"] == "template" and view["title"] == "接种提醒"
    link = mini_view(
        {"msgtype": "link", "link": {"title": "t", "description": "d", "url": "u"}}, build_catalogue(settings), settings
    )
    assert link == {"kind": "link", "title": "t", "text": "d", "url": "u"}
