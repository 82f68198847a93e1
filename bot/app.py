"""The aiohttp application: typed app keys, one cleanup context per resource, ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from aiohttp import web
from sqlalchemy import text

from bot.chat.conversation import Services
from bot.chat.engine import HANDLER_LIMIT_SECONDS, Engine
from bot.core.catalogue import build_catalogue
from bot.core.config import ConfigError, Settings
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import Keyring, load_keyring
from bot.core.metrics import Metrics
from bot.core.pages import simple_page
from bot.core.pii import Vault
from bot.core.scheduler import Scheduler, prune
from bot.dev.sandbox import MOUNT as SANDBOX_MOUNT
from bot.identity.face.dev import MOUNT as DEV_FACE_MOUNT
from bot.identity.face.dev import DevFace
from bot.identity.face.providers import build_face_providers, by_provider_name, needs_dev_face
from bot.identity.verification import VerificationRoutes
from bot.outbox.queue import OutboxWorker, Sender, outbox_depth
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.client import AlipayAPI, AlipaySender
from bot.platforms.alipay.inbound import AlipayGateway
from bot.platforms.wechat.client import WeChatAPI, WeChatSender
from bot.platforms.wechat.inbound import WeChatGateway
from bot.registry.importer import apply_due_batches
from bot.reminders.doses import plan_reminders, send_due_reminders
from bot.showcode.page import CodePageRoutes
from bot.web import webhooks
from bot.web.appkeys import (
    ALIPAY,
    ALIPAY_API,
    CODE_PAGES,
    DB,
    DEV_FACE,
    ENGINE,
    HTTP,
    KEYRING,
    METRICS,
    SCHEDULER,
    SERVICES,
    SESSIONS,
    SETTINGS,
    VERIFICATION,
    WECHAT,
    WECHAT_API,
    WORKER,
)
from handlers import build_router
from models import utcnow

log = logging.getLogger("vaxbot.app")


def refuse_unsafe_production(settings: Settings, keyring: Keyring) -> None:
    """Raise :class:`ConfigError` when production would run with development keys or secrets."""
    if settings.production:
        problems = settings.production_problems(dev_keys=keyring.dev)
        if problems:
            raise ConfigError("refusing to start in production: " + "; ".join(problems))


def create_app(settings: Settings, *, migrate_on_start: bool = True) -> web.Application:
    """Build the service; refuses production settings that still use development keys or secrets."""
    keyring = load_keyring(settings.keys_dir)
    refuse_unsafe_production(settings, keyring)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[KEYRING] = keyring
    app[METRICS] = Metrics()
    app[WECHAT] = WeChatGateway(settings)
    if settings.alipay_enabled:
        try:
            app[ALIPAY] = AlipayGateway(
                settings.alipay_appid,
                alipay_sign.read_private_key(settings.alipay_private_key_path),
                alipay_sign.read_public_key(settings.alipay_public_key_path),
            )
        except alipay_sign.AlipayKeyError as exc:
            raise ConfigError(f"{exc} (see keys/README.md; set VAXBOT_ALIPAY_APPID empty to turn Alipay off)") from exc
    vault = Vault(keyring)
    app[SERVICES] = Services(settings=settings, vault=vault, catalogue=build_catalogue(settings))

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings)
        if migrate_on_start:
            await migrate(engine)
        app[DB] = engine
        app[SESSIONS] = sessionmaker(engine)
        yield
        await engine.dispose()

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_engine_and_worker)
    webhooks.setup_routes(app)
    # Face verification: the browser-facing routes now, the providers once the HTTP clients exist.
    dev = DevFace(settings.public_url) if needs_dev_face(settings) else None
    if dev is not None:
        app.add_subapp(DEV_FACE_MOUNT, dev.app())
        app[DEV_FACE] = dev
    app[VERIFICATION] = VerificationRoutes(app[SERVICES])
    app[VERIFICATION].setup(app)
    app[CODE_PAGES] = CodePageRoutes(app[SERVICES])
    app[CODE_PAGES].setup(app)
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def home(request: web.Request) -> web.Response:
    """The service's front page (where Alipay's message cards lead); in development, the way to the sandbox."""
    catalogue = request.app[SERVICES].catalogue
    link = (catalogue("page_home_sandbox"), SANDBOX_MOUNT) if _sandbox_mounted(request.app) else None
    return simple_page(catalogue("page_home_title"), catalogue("page_home"), link=link)


def _sandbox_mounted(app: web.Application) -> bool:
    # The sandbox is mounted beside the service only in development (bot.cli), so its presence, not
    # the environment's name, decides: a link must never lead to a page that is not there.
    return any(
        isinstance(resource, web.PrefixedSubAppResource) and resource.canonical == SANDBOX_MOUNT
        for resource in app.router.resources()
    )


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        app[HTTP] = session
        yield


async def _engine_and_worker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    sessions = app[SESSIONS]
    wechat_api = WeChatAPI(app[HTTP], sessions, settings, metrics)
    app[WECHAT_API] = wechat_api
    senders: dict[str, Sender] = {"wechat": WeChatSender(wechat_api, sessions)}
    if settings.alipay_enabled:
        alipay_api = AlipayAPI.from_settings(app[HTTP], settings, metrics)
        app[ALIPAY_API] = alipay_api
        senders["alipay"] = AlipaySender(alipay_api, sessions)
    worker = OutboxWorker(
        sessions,
        senders,
        metrics,
        batch_size=settings.outbox_batch_size,
        max_attempts=settings.outbox_max_attempts,
        poll_seconds=settings.outbox_poll_seconds,
    )
    app[WORKER] = worker
    face = build_face_providers(settings, app[HTTP], wechat_api, app.get(ALIPAY_API), dev=app.get(DEV_FACE))
    app[VERIFICATION].providers.update(by_provider_name(face))
    app[VERIFICATION].sessions = sessions
    app[CODE_PAGES].sessions = sessions
    app[ENGINE] = Engine(
        sessions,
        build_router(),
        app[SERVICES],
        metrics,
        state_ttl=timedelta(seconds=settings.state_ttl_seconds),
        on_enqueued=worker.wake,
    )
    task = asyncio.create_task(worker.run()) if settings.run_outbox_worker else None
    scheduler = Scheduler()
    scheduler.every(
        "housekeeping",
        timedelta(hours=1),
        lambda: prune(
            sessions,
            timedelta(days=settings.processed_key_ttl_days),
            timedelta(days=settings.delivered_outbox_ttl_days),
        ),
        first_in=60,
    )
    # Batches become visible shortly after midnight China time (and at start-up, for any that came due).
    scheduler.every("registry", timedelta(minutes=10), lambda: apply_due_batches(sessions, app[SERVICES].vault))
    services = app[SERVICES]
    scheduler.every(
        "reminders-plan", timedelta(hours=1), lambda: plan_reminders(sessions, services.vault, settings, utcnow())
    )
    scheduler.every(
        "reminders-send",
        timedelta(minutes=5),
        lambda: send_due_reminders(sessions, services.vault, services.catalogue, settings, utcnow()),
    )
    app[SCHEDULER] = scheduler
    scheduler_task = asyncio.create_task(scheduler.run()) if settings.run_scheduler else None
    yield
    if scheduler_task is not None:
        scheduler.stop()
        await asyncio.wait({scheduler_task}, timeout=5)
    # Why this order: requests have drained (aiohttp stops accepting first); finish their late
    # updates so their replies are queued, then let the worker deliver what it has in hand.
    await app[ENGINE].drain(grace=HANDLER_LIMIT_SECONDS + 5)
    if task is not None:
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=15)
            # One last pass for what the drained requests just queued; anything left waits for the
            # next process (rows are committed, nothing is lost).
            await asyncio.wait_for(worker.run_once(), timeout=5)
        except TimeoutError:
            log.warning("outbox worker did not stop in time; its leases will expire and be retried")


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, 503 otherwise."""
    try:
        async with request.app[DB].connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: database unreachable")
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, with the outbox depth read at scrape time."""
    registry = request.app[METRICS]
    try:
        async with request.app[SESSIONS]() as session:
            depth = await outbox_depth(session)
        for status in ("pending", "sending", "sent", "passive", "dead"):
            registry.outbox_depth.labels(status).set(depth.get(status, 0))
    except Exception:
        log.exception("metrics: could not read the outbox depth")
    return web.Response(body=registry.render(), content_type="text/plain", charset="utf-8")
