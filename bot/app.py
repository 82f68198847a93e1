"""The aiohttp application: typed app keys, one cleanup context per resource, ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from aiohttp import web
from sqlalchemy import text

from bot.chat.conversation import Router, Services
from bot.chat.engine import HANDLER_LIMIT_SECONDS, Engine
from bot.chat.inbox import Inbox, inbox_database
from bot.core.catalogue import build_catalogue
from bot.core.config import SANDBOX_MOUNT, ConfigError, Settings
from bot.core.db import create_engine, migrate, sessionmaker, warm
from bot.core.keys import Keyring, load_keyring, refuse_open_key_files
from bot.core.metrics import Metrics
from bot.core.pages import simple_page
from bot.core.pii import Vault
from bot.core.scheduler import Scheduler, register_housekeeping
from bot.identity.face.dev import MOUNT as DEV_FACE_MOUNT
from bot.identity.face.dev import DevFace
from bot.identity.face.providers import build_face_providers, by_provider_name, needs_dev_face
from bot.identity.verification import VerificationRoutes, web_authorisations
from bot.outbox.queue import OutboxWorker, Sender, outbox_depth
from bot.outbox.queue import register_jobs as outbox_jobs
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.client import AlipayAPI
from bot.platforms.alipay.inbound import AlipayGateway
from bot.platforms.alipay.sender import AlipaySender
from bot.platforms.wechat.client import WeChatAPI
from bot.platforms.wechat.inbound import WeChatGateway
from bot.platforms.wechat.sender import WeChatSender
from bot.platforms.wxmini.client import MiniProgramAPI
from bot.platforms.wxmini.inbound import MiniProgramGateway
from bot.platforms.wxmini.sender import MiniProgramSender
from bot.registry.apply import register_jobs as registry_jobs
from bot.reminders.doses import register_jobs as reminder_jobs
from bot.reminders.lottery_news import register_jobs as lottery_jobs
from bot.showcode.page import CodePageRoutes
from bot.web import clinic_api, lottery_record, webhooks
from bot.web.appkeys import (
    ALIPAY,
    ALIPAY_API,
    ALIPAY_MINI_API,
    CODE_PAGES,
    CONSOLE,
    DB,
    DEV_FACE,
    ENGINE,
    HTTP,
    KEYRING,
    METRICS,
    MP_API,
    ROUTER,
    SCHEDULER,
    SERVICES,
    SESSIONS,
    SETTINGS,
    VERIFICATION,
    WECHAT,
    WECHAT_API,
    WORKER,
    WXMINI,
    WXMINI_API,
)
from bot.web.console.routes import ConsoleRoutes
from bot.web.mini_webhook import setup_mini_routes
from bot.web.mp_api import MiniProgramApi
from handlers import build_router
from models import OutboxStatus

log = logging.getLogger("vaxbot.app")


def refuse_unsafe_production(settings: Settings, keyring: Keyring) -> None:
    """Raise :class:`ConfigError` when production would run with development keys or secrets.

    Also when development is wired to a real platform, and (production) when the Alipay private key file
    is open to other users; an unset VAXBOT_ENV gets production's rules, and the message says so.
    """
    settings.refuse_unsafe_development()
    if settings.production:
        problems = settings.production_problems(dev_keys=keyring.dev)
        if problems:
            # With VAXBOT_ENV unset the way out comes first: the list after it may be long.
            hint = settings.env_unset_hint.strip(" ()")
            lead = f"refusing to start: {hint}; as production: " if hint else "refusing to start in production: "
            raise ConfigError(lead + "; ".join(problems))
        if settings.alipay_enabled:
            refuse_open_key_files([settings.alipay_private_key_path])


def create_app(
    settings: Settings,
    *,
    router: Router | None = None,
    migrate_on_start: bool = True,
    dev_face: DevFace | None = None,
) -> web.Application:
    """Build the service; refuses production settings that still use development keys or secrets.

    ``router`` is the conversation router every update goes through (default: the journeys' router).
    Development's tools are mounted only when ``settings.dev_tools``; ``dev_face`` is a simulated face
    provider whose page the caller serves itself (tests), used when a platform's provider is ``dev``.
    """
    keyring = load_keyring(settings.keys_dir, private=settings.production)
    refuse_unsafe_production(settings, keyring)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[KEYRING] = keyring
    app[METRICS] = Metrics()
    app[ROUTER] = router if router is not None else build_router()
    app[WECHAT] = WeChatGateway(settings)
    if settings.wxmini_enabled:
        app[WXMINI] = MiniProgramGateway(settings)
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
    if needs_dev_face(settings):  # development only (settings.dev_tools)
        dev_face = dev_face or DevFace(settings.public_url)
        app.add_subapp(DEV_FACE_MOUNT, dev_face.app())
    if dev_face is not None:
        app[DEV_FACE] = dev_face

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings)
        if migrate_on_start:
            await migrate(engine, vault)
        try:
            await warm(engine)
        except Exception:
            log.exception("could not open the database's connections at start-up; they open on demand")
        app[DB] = engine
        app[SESSIONS] = sessionmaker(engine)
        yield
        await engine.dispose()

    # Started in this order, stopped in the reverse: the scheduler first, then the engine drains its
    # late updates, then the worker delivers what they queued, and the HTTP clients and database last.
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(_http_clients)
    app.cleanup_ctx.append(_browser_pages)
    app.cleanup_ctx.append(_outbox_worker)
    app.cleanup_ctx.append(_conversation_engine)
    app.cleanup_ctx.append(_scheduler)
    webhooks.setup_routes(app)
    setup_mini_routes(app)
    clinic_api.setup_routes(app)
    lottery_record.setup_routes(app)
    # The browser-facing pages: mounted now, served by route objects built whole at start-up.
    VerificationRoutes.setup(app, VERIFICATION)
    CodePageRoutes.setup(app, CODE_PAGES)
    MiniProgramApi.setup(app, MP_API)
    ConsoleRoutes.setup(app, CONSOLE)  # the clinic console, /clinic/…
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    if settings.metrics_token:  # otherwise /metrics is not served at all
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


async def _http_clients(app: web.Application) -> AsyncIterator[None]:
    """One HTTP client session, and the platforms' API clients that use it."""
    settings = app[SETTINGS]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        app[HTTP] = session
        app[WECHAT_API] = WeChatAPI(session, app[SESSIONS], settings, app[METRICS])
        if settings.alipay_enabled:
            app[ALIPAY_API] = AlipayAPI.from_settings(session, settings, app[METRICS])
        if settings.wxmini_enabled:
            app[WXMINI_API] = MiniProgramAPI(session, app[SESSIONS], settings, app[METRICS])
        if settings.alipay_mini_enabled:
            # The Alipay mini program is an app of its own, signing with the same key pair as the life account.
            mini = dataclasses.replace(settings, alipay_appid=settings.alipay_mini_appid)
            app[ALIPAY_MINI_API] = AlipayAPI.from_settings(session, mini, app[METRICS])
        yield


async def _browser_pages(app: web.Application) -> AsyncIterator[None]:
    """The objects behind the verification and code pages, whole before the app serves a request."""
    services = app[SERVICES]
    sessions = app[SESSIONS]
    face = build_face_providers(
        app[SETTINGS],
        app[HTTP],
        app[WECHAT_API],
        app.get(ALIPAY_API),
        dev=app.get(DEV_FACE),
        mini_api=app.get(WXMINI_API),
        alipay_mini_api=app.get(ALIPAY_MINI_API),
    )
    authorisations = web_authorisations(app[WECHAT_API], app.get(ALIPAY_API))
    app[VERIFICATION] = VerificationRoutes(services, sessions, by_provider_name(face), authorisations)
    app[CODE_PAGES] = CodePageRoutes(services, sessions)
    app[MP_API] = MiniProgramApi(services, sessions, app[VERIFICATION], app.get(WXMINI_API), app.get(ALIPAY_MINI_API))
    app[CONSOLE] = ConsoleRoutes(services, sessions)
    yield


async def _outbox_worker(app: web.Application) -> AsyncIterator[None]:
    """The outbox worker: runs while the app does, and makes a last pass for what drained updates queued."""
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    senders: dict[str, Sender] = {"wechat": WeChatSender(app[WECHAT_API], sessions)}
    if ALIPAY_API in app:
        senders["alipay"] = AlipaySender(app[ALIPAY_API], sessions)
    if WXMINI_API in app:
        senders["wxmini"] = MiniProgramSender(
            app[WXMINI_API],
            sessions,
            notice_template=settings.wxmini_notice_template,
            notice_page=settings.wxmini_notice_page,
        )
    worker = OutboxWorker(
        sessions,
        senders,
        app[METRICS],
        batch_size=settings.outbox_batch_size,
        max_attempts=settings.outbox_max_attempts,
        poll_seconds=settings.outbox_poll_seconds,
    )
    app[WORKER] = worker
    task = asyncio.create_task(worker.run()) if settings.run_outbox_worker else None
    yield
    if task is not None:
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=15)
            # One last pass for what the drained requests just queued; anything left waits for the
            # next process (rows are committed, nothing is lost).
            await asyncio.wait_for(worker.run_once(), timeout=5)
        except TimeoutError:
            log.warning("outbox worker did not stop in time; its leases will expire and be retried")


async def _conversation_engine(app: web.Application) -> AsyncIterator[None]:
    """The engine that runs updates through the router; on the way out it finishes late updates."""
    settings = app[SETTINGS]
    # The inbox writes on a connection of its own: a late update must not queue for the connections
    # the updates ahead of it hold (on SQLite, the only one, or the file's write lock).
    inbox_db = await inbox_database(settings, app[DB])
    lease = timedelta(seconds=settings.inbox_lease_seconds)
    engine = Engine(
        app[SESSIONS],
        app[ROUTER],
        app[SERVICES],
        app[METRICS],
        state_ttl=timedelta(seconds=settings.state_ttl_seconds),
        inbox=Inbox(sessionmaker(inbox_db), app[SERVICES].vault, lease=lease),
        on_enqueued=app[WORKER].wake,
        # SQLite has one connection: one group at a time. PostgreSQL overlaps a few groups' round trips.
        group_runners=1 if app[DB].dialect.name == "sqlite" else 4,
    )
    app[ENGINE] = engine
    try:
        # Before the first request: what a stopped process left long ago goes ahead of anything new.
        await engine.recover()
    except Exception:
        log.exception("could not look at the inbox at start-up; the upkeep tries again")
    upkeep = asyncio.create_task(engine.keep_inbox(every=lease.total_seconds() / 4))
    yield
    # Why here: requests have drained (aiohttp stops accepting first); finish their late updates so
    # their replies are queued before the worker (stopped next) makes its last pass.
    upkeep.cancel()  # an update it was finishing rolls back; its lease lapses and the next process takes it
    await asyncio.gather(upkeep, return_exceptions=True)
    await engine.drain(grace=HANDLER_LIMIT_SECONDS + 5)
    if inbox_db is not app[DB]:
        await inbox_db.dispose()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    """Housekeeping, registry batches and reminders, on their schedules."""
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    services = app[SERVICES]
    scheduler = Scheduler()
    # Each feature registers its own jobs.
    register_housekeeping(
        scheduler,
        sessions,
        timedelta(days=settings.processed_key_ttl_days),
        timedelta(days=settings.delivered_outbox_ttl_days),
    )
    registry_jobs(scheduler, sessions, services.vault)
    outbox_jobs(scheduler, sessions)
    reminder_jobs(scheduler, sessions, services.vault, services.catalogue, settings)
    lottery_jobs(scheduler, sessions, services.vault, services.catalogue, settings)
    app[SCHEDULER] = scheduler
    task = asyncio.create_task(scheduler.run()) if settings.run_scheduler else None
    yield
    if task is not None:
        scheduler.stop()
        await asyncio.wait({task}, timeout=5)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, 503 otherwise."""
    try:
        async with request.app[DB].connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: database unreachable")
        return web.json_response({"status": "unavailable", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok", "database": "ok"})


def _bearer_ok(request: web.Request, token: str) -> bool:
    """True when the request carries ``Authorization: Bearer <token>`` (compared in constant time)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition, with the outbox depth read at scrape time; only with the metrics bearer token."""
    if not _bearer_ok(request, request.app[SETTINGS].metrics_token):
        return web.Response(status=401, text="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    registry = request.app[METRICS]
    try:
        async with request.app[SESSIONS]() as session:
            depth = await outbox_depth(session)
        for status in OutboxStatus:
            registry.outbox_depth.labels(status.value).set(depth.get(status, 0))
    except Exception:
        log.exception("metrics: could not read the outbox depth")
    return web.Response(body=registry.render(), content_type="text/plain", charset="utf-8")
