"""HTTP endpoints the platforms call: verify first, then hand a platform-neutral update to the engine."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from bot.chat.engine import Unrecorded
from bot.core.config import Settings
from bot.platforms.alipay import inbound as alipay
from bot.platforms.common import Rejected
from bot.web.appkeys import ALIPAY, ENGINE, METRICS, SETTINGS, WECHAT
from models import utcnow

log = logging.getLogger("vaxbot.webhook")


def setup_routes(app: web.Application) -> None:
    """Mount the platform webhooks."""
    app.router.add_get("/wechat", wechat_check)
    app.router.add_post("/wechat", wechat_post)
    if ALIPAY in app:
        app.router.add_post("/alipay", alipay_post)


async def _read_body(request: web.Request, settings: Settings) -> bytes:
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        raise Rejected(413, "body too large")
    try:
        # aiohttp itself waits for a body as long as the client likes.
        async with asyncio.timeout(settings.body_read_timeout_seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise Rejected(413, "body too large") from exc
    except TimeoutError as exc:
        raise Rejected(408, "body not received in time") from exc


async def _refuse(request: web.Request, exc: Rejected) -> web.Response:
    """The answer to a rejected request; a stalled body's connection is closed once the answer is out."""
    response = web.Response(status=exc.status, text=exc.reason)
    if exc.status == 408:
        # Left to itself aiohttp would go on reading (and ignoring) the rest of the body for its lingering
        # time, 10 s, keeping the connection the client stalled. Send the answer, then close.
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


# WeChat drops the connection 5 s after it sent the message. Our clock starts later (when the request was
# read), so an answer written just under 5 s by it may or may not arrive: we cannot tell. There a rare
# duplicate (the passive answer arrived and the push also goes out) is better than a lost answer, so an
# answer written after this many seconds is also pushed; one written earlier on an open connection is
# trusted to arrive. `VAXBOT_REPLY_DEADLINE_SECONDS` (4 s) stays the point where the engine stops waiting.
PASSIVE_TRUSTED_SECONDS = 4.5


async def _answered_in_time(request: web.Request, response: web.Response, started: float) -> bool:
    """Write a passive answer now; False when it cannot have reached the platform in time.

    That is when the client's connection is already gone or closing, the write fails, or it was written
    past :data:`PASSIVE_TRUSTED_SECONDS`.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        # "Cannot write to closing transport": a ConnectionResetError (a RuntimeError in older aiohttp).
        return False
    return _elapsed(started) < PASSIVE_TRUSTED_SECONDS


def _elapsed(started: float) -> float:
    """Seconds since ``started`` (a :func:`time.perf_counter` reading); tests replace it to play a loaded loop."""
    return time.perf_counter() - started


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
        body = await _read_body(request, settings)
        update, encrypted = gateway.open(request.query, body)
        try:
            reply = await request.app[ENGINE].respond(update, settings.reply_deadline_seconds, received_at)
        except Unrecorded:
            # Neither processed nor written down: no acknowledgement, so that WeChat delivers it again.
            outcome = "unavailable"
            return web.Response(status=503, text="temporarily unavailable")
        if reply is None:
            outcome = "acknowledged"
        text = gateway.render(update, reply, encrypted)
        response = web.Response(text=text, content_type="application/xml" if reply else "text/plain")
        if reply is not None and not await _answered_in_time(request, response, started):
            # WeChat cannot have read it: the same answer goes out as a push, and its retry gets `success`.
            outcome = "passive_missed"
            await request.app[ENGINE].passive_missed(update)
        return response
    except Rejected as exc:
        outcome = "rejected"
        log.warning("wechat request rejected", extra={"reason": exc.reason, "status": exc.status})
        return await _refuse(request, exc)
    finally:
        metrics.requests.labels("wechat", outcome).inc()
        metrics.latency.labels("wechat").observe(time.perf_counter() - started)


async def alipay_post(request: web.Request) -> web.Response:
    """Alipay's developer gateway: the check handshake, or a message acknowledged once it is recorded.

    Every answer goes out through the outbox. The ack is sent when the update is recorded, or at the
    deadline once it is written to the inbox (processing goes on); a 503 when the database could record
    neither, so Alipay delivers it again rather than the message being lost.
    """
    started = time.perf_counter()
    received_at = utcnow()
    metrics = request.app[METRICS]
    settings = request.app[SETTINGS]
    gateway = request.app[ALIPAY]
    outcome = "ok"
    try:
        inbound = gateway.open(await _read_body(request, settings))
        if isinstance(inbound, alipay.Check):
            outcome = "check" if inbound.passed else "check_failed"
            if not inbound.passed:
                log.warning("alipay gateway check failed verification")
            return _xml(gateway.check_reply(inbound), inbound.charset)
        update = inbound.update
        age = (received_at - update.created_at).total_seconds()
        if age > settings.alipay_max_message_age_seconds:
            # A replay (or a delivery from long ago): older than any key we keep to recognise it.
            outcome = "stale"
            log.warning("alipay message too old; acknowledged and ignored", extra={"age_seconds": int(age)})
            return _xml(gateway.ack(inbound), inbound.charset)
        recorded = await request.app[ENGINE].deliver(update, settings.reply_deadline_seconds, received_at)
        if recorded is False:
            outcome = "unavailable"
            return web.Response(status=503, text="temporarily unavailable")
        if recorded is None:
            outcome = "acknowledged"
        return _xml(gateway.ack(inbound), inbound.charset)
    except Rejected as exc:
        outcome = "rejected"
        log.warning("alipay request rejected", extra={"reason": exc.reason, "status": exc.status})
        return await _refuse(request, exc)
    finally:
        metrics.requests.labels("alipay", outcome).inc()
        metrics.latency.labels("alipay").observe(time.perf_counter() - started)


def _xml(body: bytes, charset: str) -> web.Response:
    return web.Response(body=body, headers={"Content-Type": alipay.content_type(charset)})
