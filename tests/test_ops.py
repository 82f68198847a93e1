"""Operations: health, metrics, and the menu command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_aiohttp import AiohttpServer

from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from tests.conftest import Serve, _settings
from tests.helpers import Client, post


async def test_healthz_reports_the_database(app_client: Client) -> None:
    response = await app_client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["database"] == "ok"


async def test_healthz_fails_when_the_database_is_unreachable(keys_dir: Path, serve: Serve) -> None:
    client = await serve(_settings("postgresql+asyncpg://nobody@127.0.0.1:9/none", keys_dir))
    response = await client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["database"] == "unreachable"


METRICS_TOKEN = "ops-metrics-token-0123456789"


async def test_metrics_count_requests_outcomes_and_outbox(
    make_settings: Any, serve: Serve, wechat: WeChatClientSim
) -> None:
    app_client = await serve(make_settings(metrics_token=METRICS_TOKEN))
    await post(app_client, wechat.sign(wechat.text("o-m", "你好")))
    bad = wechat.sign(wechat.text("o-m", "你好"))
    bad.query["signature"] = "0" * 40
    await post(app_client, bad)
    response = await app_client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status == 200
    text = await response.text()
    assert 'vaxbot_webhook_requests_total{outcome="ok",platform="wechat"} 1.0' in text
    assert 'vaxbot_webhook_requests_total{outcome="rejected",platform="wechat"} 1.0' in text
    assert 'vaxbot_outbox_messages{status="passive"} 1.0' in text
    assert "vaxbot_webhook_seconds_bucket" in text
    assert "o-m" not in text  # no user ids in metrics


async def test_menu_command_pushes_the_menu(
    make_settings: Any, serve: Serve, fake_wechat: tuple[FakeWeChatAPI, str]
) -> None:
    from bot.chat.menu import wechat_menu
    from bot.web.appkeys import WECHAT_API

    client = await serve(make_settings())
    await client.app[WECHAT_API].create_menu(wechat_menu())
    menus = [item for item in fake_wechat[0].received if item.path == "menu/create"]
    assert len(menus) == 1
    names = [button["name"] for button in menus[0].body["button"]]
    assert names == ["我的接种证", "亮码预约", "帮助"]


async def test_alipay_menu_command_pushes_the_same_menu(
    keys_dir: Any, tmp_path: Any, aiohttp_server: AiohttpServer
) -> None:
    """``vaxbot alipay menu`` end to end: its own event loop (in a thread), signed, verified by the fake gateway."""
    import argparse
    import asyncio

    from bot.cli import cmd_alipay_menu
    from bot.core.config import DEV_ALIPAY_APPID
    from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
    from bot.platforms.alipay import sign as alipay_sign

    fake = FakeAlipayGateway(
        DEV_ALIPAY_APPID,
        alipay_sign.read_public_key(keys_dir / "alipay_app_public.pem"),
        alipay_sign.read_private_key(keys_dir / "alipay_platform_private.pem"),
    )
    server = await aiohttp_server(fake.app())
    settings = _settings(
        f"sqlite+aiosqlite:///{tmp_path / 'menu.db'}", keys_dir, alipay_gateway=str(server.make_url("/gateway.do"))
    )
    # The command runs its own event loop; this test's loop keeps serving the fake meanwhile.
    assert await asyncio.to_thread(cmd_alipay_menu, argparse.Namespace(), settings) == 0
    assert fake.menu is not None
    names = [button["name"] for button in fake.menu["button"]]
    assert names == ["我的接种证", "亮码预约", "帮助"]
    keys = [sub["action_param"] for button in fake.menu["button"] for sub in button["sub_button"]]
    assert "CERT_CLAIM" in keys and "HELP_FAQ" in keys
    off = _settings(f"sqlite+aiosqlite:///{tmp_path / 'off.db'}", keys_dir, alipay_appid="")
    assert await asyncio.to_thread(cmd_alipay_menu, argparse.Namespace(), off) == 2
