"""HTTP endpoints the platforms call: verify first, then hand a platform-neutral update to the engine."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from bot.appkeys import ENGINE, METRICS, SETTINGS, WECHAT
from bot.platforms.wechat import Rejected
from models import utcnow

log = logging.getLogger("vaxbot.webhook")


def setup_routes(app: web.Application) -> None:
    """Mount the platform webhooks."""
    app.router.add_get("/wechat", wechat_check)
    app.router.add_post("/wechat", wechat_post)


async def wechat_check(request: web.Request) -> web.Response:
    """WeChat's URL check: echo ``echostr`` when the signature holds."""
    metrics = request.app[METRICS]
    try:
        echostr = request.app[WECHAT].check_url(request.query)
    except Rejected as exc:
        metrics.requests.labels("wechat", "rejected").inc()
        log.warning("wechat url check rejected", extra={"reason": exc.reason})
        return web.Response(status=exc.status, text=exc.reason)
    metrics.requests.labels("wechat", "url_check").inc()
    return web.Response(text=echostr)


async def wechat_post(request: web.Request) -> web.Response:
    """A message or event: answered within the deadline, passively when the reply is ready in time."""
    started = time.perf_counter()
    received_at = utcnow()
    metrics = request.app[METRICS]
    settings = request.app[SETTINGS]
    gateway = request.app[WECHAT]
    outcome = "ok"
    try:
        if request.content_length is not None and request.content_length > settings.max_body_bytes:
            raise Rejected(413, "body too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise Rejected(413, "body too large") from exc
        update, encrypted = gateway.open(request.query, body)
        reply = await request.app[ENGINE].respond(update, settings.reply_deadline_seconds, received_at)
        if reply is None:
            outcome = "acknowledged"
        text = gateway.render(update, reply, encrypted)
        return web.Response(text=text, content_type="application/xml" if reply else "text/plain")
    except Rejected as exc:
        outcome = "rejected"
        log.warning("wechat request rejected", extra={"reason": exc.reason, "status": exc.status})
        return web.Response(status=exc.status, text=exc.reason)
    finally:
        metrics.requests.labels("wechat", outcome).inc()
        metrics.latency.labels("wechat").observe(time.perf_counter() - started)
