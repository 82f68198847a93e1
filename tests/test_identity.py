"""One person on two platforms is one identity, linked only by verification on each."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select

from bot.core.update import Text
from bot.dev.demo import GRANDMA, PARENT
from bot.identity.accounts import accounts_of, bind_verified, notify
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Identity, PlatformAccount, utcnow
from tests.helpers import Client, count, outbox_rows


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


async def test_notify_tells_each_following_account_of_these_people_once(app_client: Client) -> None:
    wechat = await _account(app_client, "wechat", "o-notify")
    alipay = await _account(app_client, "alipay", "2088000000000311")
    gone = await _account(app_client, "wechat", "o-notify-gone")
    grandma = await _account(app_client, "alipay", "2088000000000312")
    bystander = await _account(app_client, "wechat", "o-bystander")
    parent = await _bind(app_client, wechat, PARENT.id_number, PARENT.name)
    for account in (alipay, gone):
        await _bind(app_client, account, PARENT.id_number, PARENT.name)
    await _bind(app_client, grandma, GRANDMA.id_number, GRANDMA.name)
    await _bind(app_client, bystander, "11010519491231002X", "王大明")
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session, session.begin():
        unfollowed = await session.get(PlatformAccount, gone)
        assert unfollowed is not None
        unfollowed.following = False
        extra = await session.get(PlatformAccount, wechat)
        assert extra is not None
        told = await notify(
            session,
            Text("通知"),
            "notice:1",
            identity_ids=[parent, parent],
            id_number_hashes=[
                vault.digest("id_number", GRANDMA.id_number),
                vault.digest("id_number", PARENT.id_number),
            ],
            accounts=[extra],
        )
    assert sorted(account.id for account in told) == sorted([wechat, alipay, grandma])
    rows = await outbox_rows(app_client)
    assert sorted((row.recipient, row.idempotency_key) for row in rows) == sorted(
        [
            ("o-notify", f"notice:1:{wechat}"),
            ("2088000000000311", f"notice:1:{alipay}"),
            ("2088000000000312", f"notice:1:{grandma}"),
        ]
    )
    assert all(row.kind == "text" and "通知" in str(row.payload) for row in rows)
