"""The delivery report of a clinic's notice: per account told, sent, waiting or failed (with the reason).

Read from the outbox row each delivery links: sent (or answered passively) is sent; pending or being sent is
waiting (with the last error when a try failed and it will be tried again); dead is failed with the platform's
reason; a delivery with no row (a mini-program user without a consent) failed for the reason it records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.identity.accounts import mask_user_id
from models import Notice, NoticeDelivery, OutboxMessage, OutboxStatus, PlatformAccount


class DeliveryState(StrEnum):
    """Where one account's message stands."""

    SENT = "sent"
    WAITING = "waiting"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class DeliveryLine:
    """One account told: its platform, the masked account, where the message stands and why it failed."""

    platform: str
    recipient: str  # masked
    state: DeliveryState
    reason: str = ""  # the last error, or the delivery's own problem (a catalogue key's suffix)
    problem: str = ""


@dataclasses.dataclass(frozen=True)
class Report:
    """A notice's delivery report: counts by state, and one line per account."""

    notice: Notice
    lines: Sequence[DeliveryLine]

    def count(self, state: DeliveryState) -> int:
        """How many accounts are in ``state``."""
        return sum(1 for line in self.lines if line.state == state)


def _state(row: OutboxMessage | None) -> DeliveryState:
    if row is None or row.status == OutboxStatus.DEAD:
        return DeliveryState.FAILED
    if row.status in (OutboxStatus.SENT, OutboxStatus.PASSIVE):
        return DeliveryState.SENT
    return DeliveryState.WAITING


async def notices_of(session: AsyncSession, clinic_id: int, limit: int = 50) -> Sequence[Notice]:
    """A clinic's notices, newest first."""
    query = select(Notice).where(Notice.clinic_id == clinic_id).order_by(Notice.created_at.desc(), Notice.id.desc())
    return (await session.scalars(query.limit(limit))).all()


async def report(session: AsyncSession, clinic_id: int, notice_id: int) -> Report | None:
    """The delivery report of one of this clinic's notices (None: no such notice at this clinic)."""
    notice = await session.get(Notice, notice_id)
    if notice is None or notice.clinic_id != clinic_id:
        return None
    rows = await session.execute(
        select(NoticeDelivery, PlatformAccount, OutboxMessage)
        .join(PlatformAccount, PlatformAccount.id == NoticeDelivery.account_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == NoticeDelivery.outbox_id)
        .where(NoticeDelivery.notice_id == notice.id)
        .order_by(NoticeDelivery.id)
    )
    lines = [
        DeliveryLine(
            platform=delivery.platform,
            recipient=mask_user_id(account.user_id),
            state=_state(row),
            reason=(row.last_error or "") if row is not None else "",
            problem=delivery.problem,
        )
        for delivery, account, row in rows.all()
    ]
    return Report(notice, lines)
