"""The platform account behind an update: created on first contact, its last contact kept for the windows."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.update import CONTACT_KINDS, Update
from models import PlatformAccount

# How stale the recorded last contact may get before it is rewritten (windows are counted in hours).
INBOUND_PRECISION = timedelta(minutes=1)


async def touch_account(session: AsyncSession, update: Update, now: datetime) -> PlatformAccount:
    """The platform account behind the update, created on first contact, with its last interaction."""
    platform, app_id, user_id = update.user_key
    query = select(PlatformAccount).where(
        PlatformAccount.platform == platform,
        PlatformAccount.app_id == app_id,
        PlatformAccount.user_id == user_id,
    )
    account = (await session.scalars(query)).first()
    if account is None:
        account = PlatformAccount(platform=platform, app_id=app_id, user_id=user_id, following=True, created_at=now)
        session.add(account)
    if update.kind in CONTACT_KINDS and contact_outdated(
        account.last_inbound_at, account.last_interaction_kind, update, now
    ):
        account.last_inbound_at = now
        account.last_interaction_kind = update.kind.value
    return account


def contact_outdated(last_at: datetime | None, last_kind: str | None, update: Update, now: datetime) -> bool:
    """Whether the recorded last contact must be rewritten for this update.

    Windows are counted in hours: a write per minute is precise enough and spares the hot path.
    """
    return last_at is None or now - last_at > INBOUND_PRECISION or last_kind != update.kind.value
