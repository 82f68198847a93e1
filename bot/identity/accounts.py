"""One person, many chat accounts: binding a verified account to its identity, and telling a person.

The identity is keyed by the keyed hash of the ID number, so a person verified on WeChat and again on
Alipay is one identity with two accounts: what they claimed or were granted on one platform is theirs
on the other. Binding happens only after a confirmed verification on the account's own platform; an
account is never linked because someone typed a matching ID number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.certificates.rules import accounts_for_id_hash
from bot.core.audit import record_access
from bot.core.db import dialect_insert
from bot.core.pii import Vault
from bot.core.update import OutMessage
from bot.outbox import queue as outbox
from models import Identity, PlatformAccount


async def bind_verified(
    session: AsyncSession,
    vault: Vault,
    account: PlatformAccount,
    *,
    id_number: str,
    name: str,
    method: str,
    now: datetime,
) -> Identity:
    """Bind ``account`` to the identity of a just-verified person, creating the identity the first time.

    ``id_number`` must already be validated and normalised (upper-case check character). Concurrent
    first verifications of the same person on two platforms meet on the unique hash: one inserts, the
    other finds the row.
    """
    digest = vault.digest("id_number", id_number)
    insert = dialect_insert(session)
    created = await session.execute(
        insert(Identity)
        .values(
            id_number_hash=digest,
            id_number_enc=vault.seal("id_number", id_number),
            name_enc=vault.seal("name", name),
            verified_at=now,
            verification_method=method,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["id_number_hash"])
        .returning(Identity.id)
    )
    is_new = created.first() is not None
    identity = (await session.scalars(select(Identity).where(Identity.id_number_hash == digest))).one()
    if not is_new:
        # Known already: the newest confirmed verification speaks for the name (a registry correction).
        identity.name_enc = vault.seal("name", name)
        identity.verified_at = now
        identity.verification_method = method
    account.identity_id = identity.id
    record_access(
        session,
        actor_kind="account",
        actor_ref=f"{account.platform}:{vault.pseudonym(account.user_id)}",
        action="identity_bound",
        reason="verified:" + method,
        platform=account.platform,
        detail={"identity_id": identity.id},
    )
    return identity


async def accounts_of(session: AsyncSession, identity_id: int) -> list[PlatformAccount]:
    """Every chat account bound to one identity (to tell a person on each platform they use)."""
    query = select(PlatformAccount).where(PlatformAccount.identity_id == identity_id).order_by(PlatformAccount.id)
    return list((await session.scalars(query)).all())


async def following_accounts_of(session: AsyncSession, identity_ids: Iterable[int]) -> list[PlatformAccount]:
    """The accounts of these people that still follow the service (each person once, in the given order)."""
    return [
        account
        for person in dict.fromkeys(identity_ids)
        for account in await accounts_of(session, person)
        if account.following
    ]


async def notify(
    session: AsyncSession,
    message: OutMessage,
    key: str,
    *,
    identity_ids: Iterable[int] = (),
    id_number_hashes: Iterable[str] = (),
    accounts: Iterable[PlatformAccount] = (),
) -> Sequence[PlatformAccount]:
    """Tell these people, on every platform they follow, through the outbox; returns the accounts told.

    People are verified identities, people known only by their ID number's keyed hash (a grantee), or
    given chat accounts; an account that no longer follows is skipped. Each account is told once, in a
    row keyed ``{key}:{account id}`` (unique in the outbox: the same notice cannot be queued twice).
    """
    told: dict[int, PlatformAccount] = {}
    for account in [
        *accounts,
        *await following_accounts_of(session, identity_ids),
        *[found for digest in dict.fromkeys(id_number_hashes) for found in await accounts_for_id_hash(session, digest)],
    ]:
        if account.following and account.id not in told:
            told[account.id] = account
    for account in told.values():
        outbox.enqueue_message(
            session,
            platform=account.platform,
            app_id=account.app_id,
            recipient=account.user_id,
            message=message,
            idempotency_key=f"{key}:{account.id}",
        )
    return list(told.values())
