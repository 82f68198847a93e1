"""The Alipay outbox sender: delivers outbox rows through :class:`AlipayAPI`, inside Alipay's windows.

Customer-service messages (``alipay.open.public.message.custom.send``) may only answer something the
user just did, and the windows are checked here before a call is spent:

* a follow or a menu tap: ``event_type`` ``follow`` / ``click``, within 5 minutes of it;
* a message the user typed or sent (text, image, or a type we do not read): ``chat=1`` and no
  ``event_type``, within 5 minutes. Alipay documents the follow and click windows only; that a chat
  message opens the same 5-minute window is our assumption, and Alipay's own ``MSG_SD_OVER_TIME``
  answer dead-letters the message if it is wrong;
* opening the life account's page (``enter``): ``event_type`` ``enter_ppchat``, one message per China
  calendar day, claimed atomically in ``platform_accounts.enter_sent_on`` before the call.

Template and mini-program subscription messages have no window (they need a follow or a subscription).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.catalogue import MESSAGES
from bot.core.chinatime import china_today
from bot.core.qr import NotAlphanumeric, png_in_thread
from bot.core.update import TemplateMessage, TemplateValue, UpdateKind
from bot.outbox.queue import SendError, addressee, mark_unfollowed
from bot.platforms.alipay.client import AlipayAPI, AlipayAPIError
from models import OutboxKind, OutboxMessage, PlatformAccount, utcnow

log = logging.getLogger("vaxbot.alipay.api")

# Customer-service windows (see the module docstring).
WINDOW = timedelta(minutes=5)
CUSTOMER_SERVICE_KINDS = frozenset({OutboxKind.TEXT, OutboxKind.NEWS, OutboxKind.IMAGE})
# What the user last did (``platform_accounts.last_interaction_kind``) decides the window.
CHAT_KINDS = frozenset({UpdateKind.TEXT, UpdateKind.IMAGE, UpdateKind.UNKNOWN})
EVENT_WINDOWS: dict[str, str] = {UpdateKind.FOLLOW: "follow", UpdateKind.MENU_CLICK: "click"}  # → event_type
ENTER_KIND = UpdateKind.ENTER
ENTER_EVENT = "enter_ppchat"

# The words on a card's button and an image card's title (fixed; no placeholders).
NEWS_ACTION_NAME = MESSAGES["card_action_details"]
IMAGE_ACTION_NAME = MESSAGES["card_action_image"]
IMAGE_TITLE = MESSAGES["card_image_title"]
DEFAULT_HEAD_COLOR = "#000000"

RETRY_AFTER = {"20000": 5.0, "20001": 600.0}  # code → minimum seconds before trying again
PERMANENT_CODES = frozenset({"40001", "40002", "40004", "40006"})


@dataclasses.dataclass(frozen=True)
class Window:
    """How a customer-service message may go: its ``event_type`` and ``chat`` flag."""

    event_type: str | None
    chat: bool
    enter_claimed: bool = False  # this message holds the day's enter_ppchat message
    enter_before: date | None = None  # what enter_sent_on was before the claim (to give it back)


class AlipaySender:
    """Delivers outbox rows through :class:`AlipayAPI`, inside Alipay's customer-service windows."""

    def __init__(self, api: AlipayAPI, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._api = api
        self._sessions = sessions

    async def send(self, row: OutboxMessage) -> None:
        """Deliver one row or raise :class:`SendError`."""
        try:
            if row.kind in CUSTOMER_SERVICE_KINDS:
                await self._send_custom(row)
            elif row.kind == OutboxKind.TEMPLATE:
                await self._send_template(row)
            elif row.kind == OutboxKind.MINI_TEMPLATE:
                payload = row.payload
                await self._api.mini_template_send(
                    row.recipient, str(payload["user_template_id"]), str(payload.get("page", "")), payload["data"]
                )
            else:
                raise SendError("unknown_kind", row.kind, retryable=False)
        except AlipayAPIError as exc:
            if exc.code == "40004" and exc.sub_code.endswith("MSG_SD_NOFOLLOW"):
                await mark_unfollowed(self._sessions, row)
            raise classify(exc) from exc

    async def _send_custom(self, row: OutboxMessage) -> None:
        payload = row.payload
        png = await _png(payload) if row.kind == OutboxKind.IMAGE else b""
        window = await self._open_window(row)
        sending = False
        try:
            text: str | None = None
            articles: list[dict[str, str]] | None = None
            if row.kind == OutboxKind.TEXT:
                text = str(payload["content"])
            elif row.kind == OutboxKind.NEWS:
                articles = [
                    {
                        "title": str(payload.get("title", "")),
                        "desc": str(payload.get("description", "")),
                        "url": str(payload.get("url", "")),
                        "image_url": str(payload.get("image_url", "")),
                        "action_name": NEWS_ACTION_NAME,
                    }
                ]
            else:
                image_url = await self._api.upload_image(png)
                articles = [
                    {
                        "title": str(payload.get("title") or IMAGE_TITLE),
                        "desc": str(payload.get("description", "")),
                        "url": image_url,
                        "image_url": image_url,
                        "action_name": IMAGE_ACTION_NAME,
                    }
                ]
            sending = True
            await self._api.custom_send(
                row.recipient, text=text, articles=articles, event_type=window.event_type, chat=window.chat
            )
        except AlipayAPIError as exc:
            # The day's enter message is given back unless Alipay may have delivered it.
            if window.enter_claimed and not (sending and exc.may_have_arrived):
                await self._release_enter(row, window.enter_before)
            raise

    async def _account(self, session: AsyncSession, row: OutboxMessage) -> PlatformAccount | None:
        query = select(PlatformAccount).where(addressee(row))
        return (await session.scalars(query)).first()

    async def _open_window(self, row: OutboxMessage) -> Window:
        """How this message may go now, or a permanent ``alipay_window`` error."""
        now = utcnow()
        async with self._sessions() as session, session.begin():
            account = await self._account(session, row)
            kind = account.last_interaction_kind if account is not None else None
            last = account.last_inbound_at if account is not None else None
            recent = last is not None and now - last <= WINDOW
            if account is not None and kind in EVENT_WINDOWS and recent:
                return Window(EVENT_WINDOWS[kind], chat=False)
            if account is not None and kind in CHAT_KINDS and recent:
                return Window(None, chat=True)
            if account is not None and kind == ENTER_KIND:
                today = china_today()
                previous = account.enter_sent_on
                # One message per China day after the page was opened: whoever updates the row first has it.
                result = await session.execute(
                    update(PlatformAccount)
                    .where(
                        PlatformAccount.id == account.id,
                        PlatformAccount.last_interaction_kind == ENTER_KIND,
                        or_(PlatformAccount.enter_sent_on.is_(None), PlatformAccount.enter_sent_on != today),
                    )
                    .values(enter_sent_on=today)
                    .execution_options(synchronize_session=False)
                )
                if getattr(result, "rowcount", 0):
                    return Window(ENTER_EVENT, chat=False, enter_claimed=True, enter_before=previous)
        raise SendError("alipay_window", "outside_service_window", retryable=False)

    async def _release_enter(self, row: OutboxMessage, previous: date | None) -> None:
        """Give the day's enter message back: Alipay refused the call, so it was not used."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(PlatformAccount)
                .where(addressee(row), PlatformAccount.enter_sent_on == china_today())
                .values(enter_sent_on=previous)
            )

    async def _send_template(self, row: OutboxMessage) -> None:
        template = TemplateMessage.from_payload(row.payload)
        context: dict[str, Any] = {
            "head_color": template.head_color or DEFAULT_HEAD_COLOR,
            "url": template.url or self._api.settings.public_url,
            "action_name": NEWS_ACTION_NAME,
        }
        context.update({name: _template_value(value) for name, value in template.data().items()})
        await self._api.template_send(row.recipient, template.template_id, context)


def _template_value(value: TemplateValue) -> dict[str, str]:
    """A template value as Alipay wants it: ``{"value": …}``, with ``color`` when one is given."""
    return {"value": value.value, "color": value.color} if value.color else {"value": value.value}


async def _png(payload: Mapping[str, Any]) -> bytes:
    """The image bytes of an ``image`` row: a QR code drawn now (off the event loop), or the PNG it carries.

    A WeChat ``media_id`` means nothing to Alipay.
    """
    if payload.get("qr_text"):
        try:
            return await png_in_thread(str(payload["qr_text"]))
        except NotAlphanumeric:  # the reason only: a QR text is a credential, never in a log or an error
            raise SendError("alipay_image", "qr_text is not alphanumeric", retryable=False) from None
    encoded = payload.get("png_base64")
    if not encoded:
        raise SendError("alipay_image", "no png_base64 or qr_text (a media_id is WeChat-only)", retryable=False)
    try:
        return base64.b64decode(str(encoded), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SendError("alipay_image", "png_base64 is not base64", retryable=False) from exc


def classify(exc: AlipayAPIError) -> SendError:
    """Retry (busy, auth trouble, transport, unknown codes) or give up (user state, bad request)."""
    code, sub_code = exc.code, exc.sub_code
    name = f"alipay_{code}"
    if code == "20001":
        # Our app's authorisation is broken (keys, permissions): nothing fixes itself, an operator must.
        log.error(
            "alipay refused the app's authorisation; fix the app's keys or permissions",
            extra={"code": code, "sub_code": sub_code},
        )
    if code in RETRY_AFTER:
        return SendError(name, sub_code or exc.msg, retryable=True, retry_after=RETRY_AFTER[code])
    if code in ("transport", "bad_response"):
        return SendError(name, exc.msg, retryable=True)
    if code == "response_signature_invalid":
        # Not retried: the call may have gone through, and a second copy is worse than none.
        return SendError(name, exc.msg, retryable=False)
    if sub_code.endswith("MSG_SD_NOFOLLOW"):
        return SendError(name, "user_not_following", retryable=False)
    if "MSG_SD_OVER_TIME" in sub_code:
        return SendError(name, "outside_service_window", retryable=False)
    if code in PERMANENT_CODES:
        return SendError(name, sub_code or exc.msg or "refused", retryable=False)
    # A code we do not know: retry with back-off until the attempts run out, keeping the code.
    return SendError(name, sub_code or exc.msg or "unknown code", retryable=True)
