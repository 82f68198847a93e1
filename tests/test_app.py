"""How ``create_app`` builds the service: the router it is given, pages mounted whole, the order of shutdown."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pytest_aiohttp import AiohttpClient

from bot.app import create_app
from bot.chat.conversation import Context, Route, text_in
from bot.core.config import Settings
from bot.dev.fakes.wechat import WeChatClientSim
from bot.identity.verification import DONE_PATH, VERIFY_PATH, VerificationRoutes
from bot.showcode.page import CODE_PATH, PAGE_PATH, CodePageRoutes
from bot.web.appkeys import CODE_PAGES, ENGINE, ROUTER, VERIFICATION, WORKER
from tests.conftest import Serve
from tests.helpers import post, router_with


async def test_updates_go_through_the_router_it_is_given(make_settings: Any, serve: Serve) -> None:
    async def echo(ctx: Context) -> None:
        ctx.say("contact")

    router = router_with(Route(text_in("回声"), echo))
    settings = make_settings()
    client = await serve(settings, router=router)
    assert client.app[ROUTER] is router
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    _, body = await post(client, sim.sign(sim.text("o-echo", "回声")))
    reply = sim.open_reply(body)
    assert reply is not None and "400-101-6588" in reply["Content"]
    # Only that router: the journeys' own words reach its fallback.
    _, body = await post(client, sim.sign(sim.text("o-echo", "申领接种证")))
    reply = sim.open_reply(body)
    assert reply is not None and "没太明白" in reply["Content"]


async def test_pages_are_mounted_up_front_and_served_by_whole_objects(
    settings: Settings, aiohttp_client: AiohttpClient
) -> None:
    app = create_app(settings, migrate_on_start=False)
    mounted = {resource.canonical for resource in app.router.resources()}
    assert {VERIFY_PATH, DONE_PATH, PAGE_PATH, CODE_PATH} <= mounted
    # Nothing behind them exists before the app starts: no half-built object to complete later.
    assert VERIFICATION not in app and CODE_PAGES not in app
    client = await aiohttp_client(app)
    assert isinstance(app[VERIFICATION], VerificationRoutes) and isinstance(app[CODE_PAGES], CodePageRoutes)
    response = await client.get("/verify/no-such-handle")
    assert response.status == 404 and "认证链接无效" in await response.text()
    response = await client.get("/code/no-such-handle")
    assert response.status == 404 and "接种码链接无效" in await response.text()


async def test_shutdown_drains_the_engine_before_the_worker_stops(
    make_settings: Any, aiohttp_client: AiohttpClient
) -> None:
    app = create_app(make_settings(run_outbox_worker=True), migrate_on_start=False)
    order: list[str] = []

    async def watch(app: web.Application) -> Any:
        yield
        engine, worker = app[ENGINE], app[WORKER]
        real_drain, real_stop = engine.drain, worker.stop

        async def drain(grace: float) -> None:
            order.append("engine drained")
            await real_drain(grace)

        def stop() -> None:
            order.append("worker stopped")
            real_stop()

        engine.drain = drain  # type: ignore[method-assign]
        worker.stop = stop  # type: ignore[method-assign]

    # Appended last, so it is the first to be cleaned up: it sees the others' shutdown from the start.
    app.cleanup_ctx.append(watch)
    client = await aiohttp_client(app)
    await client.close()
    assert order == ["engine drained", "worker stopped"]
