"""Telling a certificate's family: the holder and every grantee active now, on each platform they follow.

Shared by the day-before booking reminder and the lottery's news: one template message per account through
the outbox (in the WeChat mini program a subscription message, only with a consent), each keyed so that a
second pass queues nothing new. The caller audits whom it told.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bot.certificates.rules import active_grants
from bot.core.update import Platform, TemplateMessage
from bot.identity.accounts import reachable_accounts
from bot.outbox import queue as outbox
from bot.platforms.wxmini.consents import queue_subscription
from models import Certificate, OutboxKind, PlatformAccount

KEYWORD_LIMIT = 20


def short(text: str, limit: int = KEYWORD_LIMIT) -> str:
    """``text`` cut to a template keyword's length, with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def tell_family(
    session: AsyncSession,
    certificate: Certificate,
    message: TemplateMessage,
    *,
    key: str,
    template_id: Callable[[str], str],
    page: str,
    now: datetime,
) -> list[PlatformAccount]:
    """Queue ``message`` to the holder and every active grantee, once per ``key`` and account; who was told."""
    grantees = [grant.grantee_id_number_hash for grant in await active_grants(session, certificate.id)]
    accounts = await reachable_accounts(
        session, identity_ids=[certificate.holder_identity_id], id_number_hashes=grantees
    )
    told: list[PlatformAccount] = []
    for account in accounts:
        account_key = f"{key}:{account.id}"
        template = template_id(account.platform)
        if account.platform == Platform.WXMINI:
            data = {f"thing{n}": short(value.value) for n, value in enumerate(message.keywords, 1)}
            queued = await queue_subscription(
                session, account, template_id=template, data=data, page=page, key=account_key, now=now
            )
            if queued is not None:
                told.append(account)
            continue
        told.append(account)
        outbox.enqueue(
            session,
            platform=account.platform,
            app_id=account.app_id,
            recipient=account.user_id,
            kind=OutboxKind.TEMPLATE,
            payload=dataclasses.replace(message, template_id=template).payload(),
            idempotency_key=account_key,
        )
    return told
