"""The mini program's outbox sender: customer-service messages within their window, subscription messages.

Customer-service messages (text, image, link) may follow the user's own contact only: for 48 hours after a
message the user sent, for one minute after they merely opened the chat (``user_enter_tempsession``). Outside
it, a text (a notice: a queue number, a grant…) goes out as a subscription notice when a notice template is
configured and the user consented to it (one consent spent per row, once however often it is retried). A
subscription message needs no window but one consent each, spent when the row was queued (see ``consents``);
a row of any other kind (a template message) cannot reach a mini-program user.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.chinatime import CHINA
from bot.core.update import UpdateKind
from bot.outbox.queue import SendError, addressee
from bot.platforms.wechat.client import WeChatAPIError
from bot.platforms.wechat.sender import classify, image_bytes
from bot.platforms.wxmini.client import MiniProgramAPI
from bot.platforms.wxmini.consents import consents_left, spend_consent
from models import OutboxKind, OutboxMessage, PlatformAccount, utcnow

MESSAGE_WINDOW = timedelta(hours=48)  # after a message the user sent
ENTER_WINDOW = timedelta(minutes=1)  # after the user only opened the customer-service chat
CUSTOMER_SERVICE_KINDS = frozenset({OutboxKind.TEXT, OutboxKind.IMAGE, OutboxKind.NEWS})
NOTICE_LIMIT = 20  # a thing value


def in_service_window(last_inbound_at: datetime | None, last_kind: str | None, now: datetime) -> bool:
    """Whether a customer-service message may follow the user's last contact (48 hours, or a minute after enter)."""
    window = ENTER_WINDOW if last_kind == UpdateKind.ENTER.value else MESSAGE_WINDOW
    return last_inbound_at is not None and now - last_inbound_at <= window


async def may_reach(session: AsyncSession, account: PlatformAccount, notice_template: str, now: datetime) -> bool:
    """Whether a text queued now for ``account`` will likely reach them (other platforms: yes).

    A mini-program user is reached inside the window, or outside it with a consent to the notice template
    (a consent someone else spends first may still leave them unreached: this is the best knowledge now).
    """
    if account.platform != "wxmini":
        return True
    if in_service_window(account.last_inbound_at, account.last_interaction_kind, now):
        return True
    return bool(notice_template) and await consents_left(session, account.id, notice_template) > 0


class MiniProgramSender:
    """Delivers outbox rows of the ``wxmini`` platform, mapping errcodes to retry or dead-letter."""

    def __init__(
        self,
        api: MiniProgramAPI,
        sessions: async_sessionmaker[AsyncSession],
        *,
        notice_template: str = "",
        notice_page: str = "",
    ) -> None:
        self._api = api
        self._sessions = sessions
        self._notice_template = notice_template
        self._notice_page = notice_page

    async def send(self, row: OutboxMessage) -> None:
        """Deliver one row or raise :class:`SendError`."""
        if row.kind not in CUSTOMER_SERVICE_KINDS and row.kind != OutboxKind.SUBSCRIBE:
            raise SendError("wxmini_kind", f"a mini program cannot receive {row.kind} messages", retryable=False)
        try:
            if row.kind in CUSTOMER_SERVICE_KINDS and not await self._in_window(row):
                await self._send_as_notice(row)
            else:
                await self._send(row)
        except WeChatAPIError as exc:
            raise classify(exc) from exc

    async def _in_window(self, row: OutboxMessage) -> bool:
        async with self._sessions() as session:
            found = (
                await session.execute(
                    select(PlatformAccount.last_inbound_at, PlatformAccount.last_interaction_kind).where(addressee(row))
                )
            ).first()
        last, last_kind = (found[0], found[1]) if found is not None else (None, None)
        return in_service_window(last, last_kind, utcnow())

    async def _send_as_notice(self, row: OutboxMessage) -> None:
        """Outside the chat's window a text reaches the user only as a subscription notice, with a consent."""
        if not self._notice_template or row.kind != OutboxKind.TEXT:
            raise SendError("wxmini_window", "outside_service_window", retryable=False)
        async with self._sessions() as session, session.begin():
            account_id = await session.scalar(select(PlatformAccount.id).where(addressee(row)))
            spent = account_id is not None and await spend_consent(
                session, account_id, self._notice_template, f"outbox:{row.id}", utcnow()
            )
        if not spent:
            raise SendError("wxmini_window", "outside_service_window_no_consent", retryable=False)
        data = notice_data(str(row.payload.get("content", "")), utcnow())
        await self._api.send_subscribe(row.recipient, self._notice_template, data, self._notice_page)

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
            await self._api.send_link(row.recipient, {key: str(value) for key, value in payload.items()})
        else:
            data = {str(name): str(value) for name, value in dict(payload["data"]).items()}
            await self._api.send_subscribe(
                row.recipient, str(payload["template_id"]), data, str(payload.get("page", ""))
            )


def notice_data(text: str, now: datetime) -> dict[str, str]:
    """A chat notice as the notice template takes it: thing1 its first line (20 characters at most), time2 now."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "") or "服务通知"
    local = now.astimezone(CHINA)
    when = f"{local.year}年{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}"
    return {"thing1": first if len(first) <= NOTICE_LIMIT else first[: NOTICE_LIMIT - 1] + "…", "time2": when}
