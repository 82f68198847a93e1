"""``/wechat/mini``: the WeChat mini program's message push (customer-service messages and events).

The same checks as ``/wechat`` with the mini program's credentials; every answer goes out through the outbox
(``message/custom/send`` with the mini program's token), so the push is only acknowledged: ``success`` once
the update is recorded (or the deadline passed and processing goes on), 503 when it could not be recorded,
so that WeChat delivers it again.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from bot.platforms.common import Rejected
from bot.web.appkeys import ENGINE, METRICS, SETTINGS, WXMINI
from bot.web.webhooks import _read_body, _refuse
from models import utcnow

log = logging.getLogger("vaxbot.webhook")

MINI_PATH = "/wechat/mini"


def setup_mini_routes(app: web.Application) -> None:
    """Mount the mini program's push endpoint (when the mini program is configured)."""
    if WXMINI in app:
        app.router.add_get(MINI_PATH, wechat_mini_check)
        app.router.add_post(MINI_PATH, wechat_mini_post)


async def wechat_mini_check(request: web.Request) -> web.Response:
    """The push configuration's URL check: echo ``echostr`` when the signature holds."""
    metrics = request.app[METRICS]
    try:
        echostr = request.app[WXMINI].check_url(request.query)
    except Rejected as exc:
        metrics.requests.labels("wxmini", "rejected").inc()
        log.warning("wechat mini url check rejected", extra={"reason": exc.reason})
        return web.Response(status=exc.status, text=exc.reason)
    metrics.requests.labels("wxmini", "url_check").inc()
    return web.Response(text=echostr)


async def wechat_mini_post(request: web.Request) -> web.Response:
    """A push: verified, recorded and answered through the outbox; acknowledged with ``success``."""
    started = time.perf_counter()
    received_at = utcnow()
    metrics = request.app[METRICS]
    settings = request.app[SETTINGS]
    outcome = "ok"
    try:
        update = request.app[WXMINI].open_push(request.query, await _read_body(request, settings))
        recorded = await request.app[ENGINE].deliver(update, settings.reply_deadline_seconds, received_at)
        if recorded is False:
            outcome = "unavailable"
            return web.Response(status=503, text="temporarily unavailable")
        if recorded is None:
            outcome = "acknowledged"
        return web.Response(text="success")
    except Rejected as exc:
        outcome = "rejected"
        log.warning("wechat mini request rejected", extra={"reason": exc.reason, "status": exc.status})
        return await _refuse(request, exc)
    finally:
        metrics.requests.labels("wxmini", outcome).inc()
        metrics.latency.labels("wxmini").observe(time.perf_counter() - started)
