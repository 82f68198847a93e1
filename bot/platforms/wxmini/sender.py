"""The mini program's outbox sender: customer-service messages within their window, subscription messages.

Customer-service messages (text, image, link) may follow the user's own contact only: for 48 hours after a
message the user sent, for one minute after they merely opened the chat (``user_enter_tempsession``). A
subscription message needs no window but one consent each, spent when the row was queued (see
``bot.miniprogram.consents``); a row of any other kind (a template message) cannot reach a mini-program user.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.update import UpdateKind
from bot.outbox.queue import SendError, addressee
from bot.platforms.wechat.client import WeChatAPIError
from bot.platforms.wechat.sender import classify
from bot.platforms.wxmini.client import MiniProgramAPI
from models import OutboxKind, OutboxMessage, PlatformAccount, utcnow

MESSAGE_WINDOW = timedelta(hours=48)  # after a message the user sent
ENTER_WINDOW = timedelta(minutes=1)  # after the user only opened the customer-service chat
CUSTOMER_SERVICE_KINDS = frozenset({OutboxKind.TEXT, OutboxKind.IMAGE, OutboxKind.NEWS})


class MiniProgramSender:
    """Delivers outbox rows of the ``wxmini`` platform, mapping errcodes to retry or dead-letter."""

    def __init__(self, api: MiniProgramAPI, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._api = api
        self._sessions = sessions

    async def send(self, row: OutboxMessage) -> None:
        """Deliver one row or raise :class:`SendError`."""
        if row.kind in CUSTOMER_SERVICE_KINDS:
            await self._check_window(row)
        elif row.kind != OutboxKind.SUBSCRIBE:
            raise SendError("wxmini_kind", f"a mini program cannot receive {row.kind} messages", retryable=False)
        try:
            await self._send(row)
        except WeChatAPIError as exc:
            raise classify(exc) from exc

    async def _check_window(self, row: OutboxMessage) -> None:
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(PlatformAccount.last_inbound_at, PlatformAccount.last_interaction_kind).where(addressee(row))
                )
            ).first()
        last, last_kind = (found[0], found[1]) if found is not None else (None, None)
        window = ENTER_WINDOW if last_kind == UpdateKind.ENTER.value else MESSAGE_WINDOW
        if last is None or utcnow() - last > window:
            raise SendError("wxmini_window", "outside_service_window", retryable=False)

    async def _send(self, row: OutboxMessage) -> None:
        payload = row.payload
        if row.kind == OutboxKind.TEXT:
            await self._api.send_text(row.recipient, str(payload["content"]))
        elif row.kind == OutboxKind.IMAGE:
            media_id = payload.get("media_id")
            if not media_id:
                media_id = await self._api.upload_image(base64.b64decode(payload["png_base64"]))
            await self._api.send_image(row.recipient, str(media_id))
        elif row.kind == OutboxKind.NEWS:
            await self._api.send_link(row.recipient, {key: str(value) for key, value in payload.items()})
        else:
            data = {str(name): str(value) for name, value in dict(payload["data"]).items()}
            await self._api.send_subscribe(
                row.recipient, str(payload["template_id"]), data, str(payload.get("page", ""))
            )
