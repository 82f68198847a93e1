"""One-time subscription consents (一次性订阅): recorded when given, one spent per message, never a message without one.

A consent reaches us from WeChat's push (``subscribe_msg_popup_event``, accepted templates) or from the page,
which reports what ``wx.requestSubscribeMessage`` answered. The same tap may arrive both ways: a report is
first matched against a recent report of the other kind not yet matched (then it only confirms it), so one
tap is one consent whatever the order. Spending is a conditional UPDATE of one unspent consent in the same
transaction that queues the message, so two senders can never spend one consent, and a message is queued
only when a consent was spent for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.outbox import queue as outbox
from models import ConsentSource, OutboxKind, OutboxMessage, PlatformAccount, SubscriptionConsent

# A push and a page report of the same tap arrive within seconds of each other; this is generous.
PAIRING_WINDOW = timedelta(minutes=10)
MAX_TEMPLATES_PER_REPORT = 3  # wx.requestSubscribeMessage asks for at most three templates at a time


async def record_consents(
    session: AsyncSession,
    account: PlatformAccount,
    template_ids: Iterable[str],
    source: ConsentSource,
    now: datetime,
) -> int:
    """Record the consents one report gives (one per template id); returns how many were new, not confirmations."""
    seen_here, seen_there = (
        (SubscriptionConsent.push_seen, SubscriptionConsent.page_seen)
        if source is ConsentSource.PUSH
        else (SubscriptionConsent.page_seen, SubscriptionConsent.push_seen)
    )
    added = 0
    for template_id in list(dict.fromkeys(template_ids))[:MAX_TEMPLATES_PER_REPORT]:
        unmatched = await session.scalar(
            select(SubscriptionConsent.id)
            .where(
                SubscriptionConsent.account_id == account.id,
                SubscriptionConsent.template_id == template_id,
                seen_there.is_(True),
                seen_here.is_(False),
                SubscriptionConsent.given_at >= now - PAIRING_WINDOW,
            )
            .order_by(SubscriptionConsent.id)
            .limit(1)
        )
        if unmatched is not None:
            await session.execute(
                update(SubscriptionConsent).where(SubscriptionConsent.id == unmatched).values({seen_here: True})
            )
            continue
        session.add(
            SubscriptionConsent(
                account_id=account.id,
                template_id=template_id,
                source=source,
                push_seen=source is ConsentSource.PUSH,
                page_seen=source is ConsentSource.PAGE,
                given_at=now,
            )
        )
        added += 1
    await session.flush()
    return added


async def consents_left(session: AsyncSession, account_id: int, template_id: str) -> int:
    """How many messages of ``template_id`` the account's consents still allow."""
    count = await session.scalar(
        select(func.count())
        .select_from(SubscriptionConsent)
        .where(
            SubscriptionConsent.account_id == account_id,
            SubscriptionConsent.template_id == template_id,
            SubscriptionConsent.spent_at.is_(None),
        )
    )
    return int(count or 0)


async def spend_consent(
    session: AsyncSession, account_id: int, template_id: str, spent_for: str, now: datetime
) -> bool:
    """Spend the oldest unspent consent of ``template_id``; False when there is none (then nothing may be sent).

    Spending again for the same ``spent_for`` (a retried delivery) finds the consent already spent for it.
    """
    already = await session.scalar(
        select(SubscriptionConsent.id).where(
            SubscriptionConsent.account_id == account_id,
            SubscriptionConsent.template_id == template_id,
            SubscriptionConsent.spent_for == spent_for[:128],
        )
    )
    if already is not None:
        return True
    while True:
        candidate = await session.scalar(
            select(SubscriptionConsent.id)
            .where(
                SubscriptionConsent.account_id == account_id,
                SubscriptionConsent.template_id == template_id,
                SubscriptionConsent.spent_at.is_(None),
            )
            .order_by(SubscriptionConsent.id)
            .limit(1)
        )
        if candidate is None:
            return False
        result = await session.execute(
            update(SubscriptionConsent)
            .where(SubscriptionConsent.id == candidate, SubscriptionConsent.spent_at.is_(None))
            .values(spent_at=now, spent_for=spent_for[:128])
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return True
        # Someone else spent that one between the two statements: try the next.


async def queue_subscription(
    session: AsyncSession,
    account: PlatformAccount,
    *,
    template_id: str,
    data: Mapping[str, str],
    page: str,
    key: str,
    now: datetime,
) -> OutboxMessage | None:
    """Queue one subscription message to ``account`` if a consent can be spent for it; None when none can.

    ``key`` is the row's idempotency key: the same message is never queued (nor a consent spent) twice.
    """
    already = await session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key))
    if already is not None or not await spend_consent(session, account.id, template_id, key, now):
        return None
    return outbox.enqueue(
        session,
        platform=account.platform,
        app_id=account.app_id,
        recipient=account.user_id,
        kind=OutboxKind.SUBSCRIBE,
        payload={"template_id": template_id, "data": dict(data), "page": page},
        idempotency_key=key,
    )
