"""One person on two platforms is one identity, linked only by verification on each."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select

from bot.dev.demo import GRANDMA, PARENT
from bot.identity.accounts import accounts_of, bind_verified
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Identity, PlatformAccount, utcnow
from tests.helpers import Client, count


async def _account(client: Client, platform: str, user_id: str) -> int:
    async with client.app[SESSIONS]() as session, session.begin():
        account = PlatformAccount(platform=platform, app_id="app", user_id=user_id, following=True)
        session.add(account)
        await session.flush()
        return account.id


async def _bind(client: Client, account_id: int, id_number: str, name: str, now: datetime | None = None) -> int:
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        account = await session.get(PlatformAccount, account_id)
        assert account is not None
        identity = await bind_verified(
            session, vault, account, id_number=id_number, name=name, method="face", now=now or utcnow()
        )
        return identity.id


async def test_verified_on_both_platforms_is_one_identity(app_client: Client) -> None:
    wechat = await _account(app_client, "wechat", "o-parent")
    alipay = await _account(app_client, "alipay", "2088000000000301")
    grandma = await _account(app_client, "alipay", "2088000000000302")
    first = await _bind(app_client, wechat, PARENT.id_number, PARENT.name)
    second = await _bind(app_client, alipay, PARENT.id_number, PARENT.name)
    other = await _bind(app_client, grandma, GRANDMA.id_number, GRANDMA.name)
    assert first == second != other
    assert await count(app_client, Identity) == 2
    async with app_client.app[SESSIONS]() as session:
        linked = await accounts_of(session, first)
        assert [(a.platform, a.user_id) for a in linked] == [("wechat", "o-parent"), ("alipay", "2088000000000301")]
        stored = await session.get(Identity, first)
        assert stored is not None
        vault = app_client.app[SERVICES].vault
        assert vault.open("id_number", stored.id_number_enc) == PARENT.id_number
        audit = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "identity_bound"))).all()
        assert len(audit) == 3
        assert all(PARENT.id_number not in str(entry.detail) + entry.actor_ref for entry in audit)


async def test_simultaneous_first_verifications_meet_on_one_identity(app_client: Client) -> None:
    accounts = [await _account(app_client, platform, f"u-{platform}") for platform in ("wechat", "alipay")]
    ids = await asyncio.gather(*(_bind(app_client, account, PARENT.id_number, PARENT.name) for account in accounts))
    assert ids[0] == ids[1]
    assert await count(app_client, Identity) == 1


async def test_a_later_verification_updates_the_name(app_client: Client) -> None:
    account = await _account(app_client, "wechat", "o-rename")
    earlier = utcnow() - timedelta(days=30)
    first = await _bind(app_client, account, PARENT.id_number, "林晓语", now=earlier)
    later = earlier + timedelta(days=29)
    again = await _bind(app_client, account, PARENT.id_number, PARENT.name, now=later)
    assert first == again
    async with app_client.app[SESSIONS]() as session:
        stored = await session.get(Identity, first)
        assert stored is not None
        assert app_client.app[SERVICES].vault.open("name", stored.name_enc) == PARENT.name
        assert stored.verified_at == later
