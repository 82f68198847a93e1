"""Telling the family what happens at the desk: the person who showed the code and the certificate's holder.

Each notice goes to every platform those people follow. Inside a platform's customer-service window it
is a plain text; outside it (WeChat: 48 hours since the person last wrote; Alipay: minutes) it goes as a
template message when a desk template is configured, so a family that has not written for days still
hears that the dose was recorded. The template's typed field names (WeChat's current templates name
their fields ``thing1``, ``character_string2``, ``time3``…) come from a field mapping in the settings.

A mini-program user cannot receive a template message: outside the mini program's own window (48 hours after
a message, a minute after only opening the chat) the news goes as a subscription message of the mini program's
desk template (``VAXBOT_WXMINI_DESK_TEMPLATE``, typed fields, the queue number among them) when a consent to
it can be spent; otherwise as a text, which the mini program's sender sends inside the window, turns into its
general notice with that notice's consent, or drops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.catalogue import MESSAGES, Catalogue
from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.update import TemplateMessage, TemplateValue, Text
from bot.identity.accounts import reachable_accounts
from bot.outbox import queue as outbox
from bot.platforms.wxmini.client import fit_subscription_value, subscription_field_problem
from bot.platforms.wxmini.consents import queue_subscription
from bot.platforms.wxmini.sender import in_service_window
from models import OutboxKind, OutboxMessage, PlatformAccount, utcnow

# How long after a person last wrote a customer-service text still reaches them, per platform.
SERVICE_WINDOWS = {"wechat": timedelta(hours=48), "alipay": timedelta(minutes=5)}
# The order of a desk template's values: the person (masked), the step, what it means, when.
TEMPLATE_VALUES = ("name", "step", "detail", "time")
DEFAULT_FIELDS = ("thing1", "thing2", "thing3", "time4")
THING_LIMIT = 20  # WeChat's ``thing`` fields take at most 20 characters
# The mini program's desk subscription template: which typed field carries which value (see the settings).
DEFAULT_MINI_FIELDS = ("name=thing1", "step=phrase2", "detail=thing3", "number=character_string4", "time=time5")


@dataclasses.dataclass(frozen=True)
class DeskNews:
    """One thing the family is told: the full text, and the short values a template carries."""

    text: str
    name: str  # masked
    step: str
    detail: str
    number: str = ""  # the queue number, when the news is about one


@dataclasses.dataclass(frozen=True)
class FamilyTeller:
    """How the desk tells families: the catalogue, and the desk template per platform ("" = text only)."""

    catalogue: Catalogue
    wechat_template: str = ""
    alipay_template: str = ""
    fields: tuple[str, ...] = DEFAULT_FIELDS
    mini_template: str = ""  # the WeChat mini program's desk subscription template ("" = texts only)
    mini_fields: tuple[str, ...] = DEFAULT_MINI_FIELDS  # role=field items
    mini_page: str = ""

    @classmethod
    def plain(cls) -> FamilyTeller:
        """Texts only, from the built-in catalogue (what the desk steps use when given no teller)."""
        return cls(Catalogue(MESSAGES, {}))

    @classmethod
    def from_settings(cls, settings: Settings, catalogue: Catalogue) -> FamilyTeller:
        """The deployment's catalogue and desk templates (``VAXBOT_*_DESK_TEMPLATE``, ``…_FIELDS``)."""
        return cls(
            catalogue,
            wechat_template=settings.wechat_desk_template,
            alipay_template=settings.alipay_desk_template,
            fields=settings.desk_template_fields,
            mini_template=settings.wxmini_desk_template,
            mini_fields=settings.wxmini_desk_fields,
            mini_page=settings.wxmini_desk_page,
        )

    def template_id(self, platform: str) -> str:
        """The desk template of one platform ("" when none is configured).

        The mini programs have none: their sender keeps their own customer-service window and turns a text
        outside it into a subscription notice when the person consented (a template message cannot reach
        them, and the Official Account's template id is not theirs).
        """
        return {"wechat": self.wechat_template, "alipay": self.alipay_template}.get(platform, "")

    def template(self, platform: str, news: DeskNews, now: datetime) -> TemplateMessage:
        """``news`` as this platform's desk template.

        WeChat's values go under the configured typed field names; Alipay's templates keep the classic
        ``keyword1``… names.
        """
        local = now.astimezone(CHINA)
        values = {
            "name": news.name,
            "step": _short(news.step),
            "detail": _short(news.detail),
            "time": f"{local:%Y-%m-%d %H:%M}",
        }
        if platform == "alipay":
            return TemplateMessage(
                template_id=self.template_id(platform),
                keywords=tuple(TemplateValue(values[name]) for name in TEMPLATE_VALUES),
            )
        return TemplateMessage(
            template_id=self.template_id(platform),
            keywords=tuple(TemplateValue(values[name]) for name in TEMPLATE_VALUES[: len(self.fields)]),
            field_names=self.fields,
        )

    def subscription_data(self, news: DeskNews, now: datetime) -> dict[str, str] | None:
        """``news`` as the mini program's desk template's typed fields; None when a value cannot fit its type."""
        local = now.astimezone(CHINA)
        values = {
            "name": news.name,
            "step": news.step,
            "detail": news.detail,
            "number": news.number or "-",
            "time": f"{local.year}年{local.month}月{local.day}日 {local.hour:02d}:{local.minute:02d}",
        }
        data: dict[str, str] = {}
        for item in self.mini_fields:
            role, _, field = item.partition("=")
            value = fit_subscription_value(field, values.get(role, ""))
            if subscription_field_problem(field, value) is not None:
                return None  # WeChat would refuse it (47003): tell them by text instead
            data[field] = value
        return data

    async def _tell_in_mini_program(
        self, session: AsyncSession, account: PlatformAccount, news: DeskNews, key: str, now: datetime
    ) -> bool:
        """Queue ``news`` as a subscription message, spending one consent; False when it cannot be (no consent)."""
        if await session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key)) is not None:
            return True  # told already: neither a second message nor a second consent
        data = self.subscription_data(news, now)
        if data is None:
            return False
        queued = await queue_subscription(
            session, account, template_id=self.mini_template, data=data, page=self.mini_page, key=key, now=now
        )
        return queued is not None

    async def tell(
        self,
        session: AsyncSession,
        news: DeskNews,
        key: str,
        *,
        identity_ids: Iterable[int | None],
        now: datetime | None = None,
    ) -> Sequence[PlatformAccount]:
        """Queue ``news`` for these people on every platform they follow; returns the accounts told."""
        moment = now or utcnow()
        people = [person for person in identity_ids if person is not None]
        told = await reachable_accounts(session, identity_ids=people)
        for account in told:
            template = self.template_id(account.platform)
            idempotency_key = f"{key}:{account.id}"
            if (
                account.platform == "wxmini"
                and self.mini_template
                and not _in_window(account, moment)
                and await self._tell_in_mini_program(session, account, news, idempotency_key, moment)
            ):
                continue
            if template and not _in_window(account, moment):
                outbox.enqueue(
                    session,
                    platform=account.platform,
                    app_id=account.app_id,
                    recipient=account.user_id,
                    kind=OutboxKind.TEMPLATE,
                    payload=self.template(account.platform, news, moment).payload(),
                    idempotency_key=idempotency_key,
                )
            else:
                outbox.enqueue_message(
                    session,
                    platform=account.platform,
                    app_id=account.app_id,
                    recipient=account.user_id,
                    message=Text(news.text),
                    idempotency_key=idempotency_key,
                )
        return told


def _in_window(account: PlatformAccount, now: datetime) -> bool:
    if account.platform == "wxmini":  # the mini program's own rule: 48 hours, or a minute after only opening
        return in_service_window(account.last_inbound_at, account.last_interaction_kind, now)
    window = SERVICE_WINDOWS.get(account.platform, timedelta(0))
    return account.last_inbound_at is not None and now - account.last_inbound_at <= window


def _short(text: str) -> str:
    return text if len(text) <= THING_LIMIT else text[: THING_LIMIT - 1] + "…"
