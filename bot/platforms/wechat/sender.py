"""The WeChat outbox sender: delivers outbox rows through :class:`WeChatAPI`, mapping errcodes to retry or not."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.qr import NotAlphanumeric, png_in_thread
from bot.core.update import TemplateMessage
from bot.outbox.queue import SendError, addressee, mark_unfollowed
from bot.platforms.wechat.client import TOKEN_ERRORS, WeChatAPI, WeChatAPIError
from models import OutboxKind, OutboxMessage, PlatformAccount, utcnow

# Customer-service messages may only follow a user's own message within this window.
SERVICE_WINDOW = timedelta(hours=48)
CUSTOMER_SERVICE_KINDS = frozenset({OutboxKind.TEXT, OutboxKind.IMAGE, OutboxKind.NEWS})
RETRYABLE = {-1: 5.0, 45009: 600.0}  # errcode → minimum seconds before trying again
PERMANENT_REASONS = {
    43004: "user_not_following",
    45015: "outside_service_window",
    45047: "service_message_limit",
    43101: "subscription_refused",
    40037: "bad_template_id",
    40003: "bad_openid",
    47003: "bad_template_data",
    40004: "bad_media_type",
    40005: "bad_file_type",
    40007: "bad_media_id",
    40009: "image_too_large",
    44002: "empty_body",
    47001: "bad_body_format",
    48001: "api_not_authorised",
}


class WeChatSender:
    """Delivers outbox rows through :class:`WeChatAPI`, mapping errcodes to retry or dead-letter."""

    def __init__(self, api: WeChatAPI, sessions: async_sessionmaker[AsyncSession] | None = None) -> None:
        self._api = api
        self._sessions = sessions

    async def send(self, row: OutboxMessage) -> None:
        """Deliver one row or raise :class:`SendError`."""
        if row.kind in CUSTOMER_SERVICE_KINDS and self._sessions is not None:
            await self._check_window(row)
        try:
            await self._send(row)
        except WeChatAPIError as exc:
            if exc.errcode == 43004 and self._sessions is not None:
                await mark_unfollowed(self._sessions, row)
            raise classify(exc) from exc

    async def _check_window(self, row: OutboxMessage) -> None:
        """Customer-service messages only reach users who wrote to us in the last 48 hours."""
        assert self._sessions is not None
        async with self._sessions() as session:
            last = await session.scalar(select(PlatformAccount.last_inbound_at).where(addressee(row)))
        if last is None or utcnow() - last > SERVICE_WINDOW:
            raise SendError("wechat_window", "outside_service_window", retryable=False)

    async def _send(self, row: OutboxMessage) -> None:
        payload = row.payload
        if row.kind == OutboxKind.TEXT:
            await self._api.send_text(row.recipient, str(payload["content"]))
        elif row.kind == OutboxKind.IMAGE:
            media_id = payload.get("media_id")
            if not media_id:
                media_id = await self._api.upload_image(await image_bytes(payload))
            await self._api.send_image(row.recipient, str(media_id))
        elif row.kind == OutboxKind.NEWS:
            await self._api.send_news(row.recipient, {k: str(v) for k, v in payload.items()})
        elif row.kind == OutboxKind.TEMPLATE:
            await self._api.send_template(row.recipient, TemplateMessage.from_payload(payload))
        elif row.kind == OutboxKind.SUBSCRIBE:
            await self._api.send_subscription(
                row.recipient,
                str(payload["template_id"]),
                dict(payload["data"]),
                str(payload.get("page", "")),
            )
        else:
            raise SendError("unknown_kind", row.kind, retryable=False)


async def image_bytes(payload: Mapping[str, Any]) -> bytes:
    """The PNG to upload: a QR code drawn now, off the event loop, or the bytes the row carries."""
    try:
        if payload.get("qr_text"):
            return await png_in_thread(str(payload["qr_text"]))
        return base64.b64decode(str(payload["png_base64"]), validate=True)
    except (KeyError, NotAlphanumeric, binascii.Error, ValueError) as exc:
        # The reason only: a QR text is a credential and never goes into a log or an error.
        raise SendError("wechat_image", f"no image to upload ({type(exc).__name__})", retryable=False) from None


def classify(exc: WeChatAPIError) -> SendError:
    """Retry (busy, quota, transport, token trouble) or give up (user state, bad request)."""
    code = exc.errcode
    if code in RETRYABLE:
        return SendError(f"wechat_{code}", exc.errmsg, retryable=True, retry_after=RETRYABLE[code])
    if code in (-2, -3) or code in TOKEN_ERRORS:
        return SendError(f"wechat_{code}", exc.errmsg, retryable=True)
    if code in PERMANENT_REASONS:
        return SendError(f"wechat_{code}", PERMANENT_REASONS[code], retryable=False)
    # An errcode we do not know: retry with back-off until the attempts run out, keeping the code.
    return SendError(f"wechat_{code}", exc.errmsg or "unknown errcode", retryable=True)
