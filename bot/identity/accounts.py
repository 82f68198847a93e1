"""One person, many chat accounts: binding a verified account to its identity, unbinding, and telling a person.

The identity is keyed by the keyed hash of the ID number, so a person verified on WeChat and again on
Alipay is one identity with two accounts: what they claimed or were granted on one platform is theirs
on the other. Binding happens only after a confirmed verification on the account's own platform; an
account is never linked because someone typed a matching ID number. When an account joins a person who
already has others, those others are told at once, so a stranger's account cannot join unnoticed; the
person can then see their accounts and unbind one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.certificates.rules import accounts_for_id_hash, actor
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.chinatime import CHINA
from bot.core.db import dialect_insert
from bot.core.pii import Vault, mask_name
from bot.core.update import OutMessage, Text
from bot.outbox import queue as outbox
from models import (
    AccountUnion,
    CodePage,
    CodeToken,
    Grant,
    Identity,
    PlatformAccount,
    Verification,
    VerificationStatus,
    utcnow,
)


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
        actor_ref=actor(identity, account),
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


async def reachable_accounts(
    session: AsyncSession,
    *,
    identity_ids: Iterable[int] = (),
    id_number_hashes: Iterable[str] = (),
    accounts: Iterable[PlatformAccount] = (),
) -> list[PlatformAccount]:
    """Every account of these people that still follows, each once: identities, keyed ID hashes, given accounts.

    A person found by identity or ID hash is reached on one kind of channel (:func:`one_channel_each`), so
    who follows the Official Account and also uses the mini program hears once; given accounts are kept.
    """
    found: dict[int, PlatformAccount] = {}
    people = [
        *await following_accounts_of(session, identity_ids),
        *[each for digest in dict.fromkeys(id_number_hashes) for each in await accounts_for_id_hash(session, digest)],
    ]
    for account in [*accounts, *one_channel_each([each for each in people if each.following])]:
        if account.following and account.id not in found:
            found[account.id] = account
    return list(found.values())


# Mini programs (WeChat: customer service within a window, subscription messages with a consent each);
# the Alipay mini program only logs in, and is never written to.
MINI_PROGRAM_PLATFORMS = frozenset({"wxmini", "alipaymini"})
UNWRITABLE_PLATFORMS = frozenset({"alipaymini"})


def one_channel_each(accounts: Iterable[PlatformAccount]) -> list[PlatformAccount]:
    """The accounts to tell each person on: a person who follows an Official Account or a life account is told
    there, not also in a mini program; a mini-program-only person in the mini program. Order is kept.
    """
    listed = [account for account in accounts if account.platform not in UNWRITABLE_PLATFORMS]
    followers = {
        account.identity_id
        for account in listed
        if account.platform not in MINI_PROGRAM_PLATFORMS and account.identity_id is not None
    }
    return [
        account
        for account in listed
        if account.platform not in MINI_PROGRAM_PLATFORMS or account.identity_id not in followers
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
    told = await reachable_accounts(
        session, identity_ids=identity_ids, id_number_hashes=id_number_hashes, accounts=accounts
    )
    for account in told:
        outbox.enqueue_message(
            session,
            platform=account.platform,
            app_id=account.app_id,
            recipient=account.user_id,
            message=message,
            idempotency_key=f"{key}:{account.id}",
        )
    return told


# --- seeing one's accounts, unbinding one, and the notice when one joins ----------------------------


def mask_user_id(user_id: str) -> str:
    """A platform user id as a person may see it: ``o6_bmjrPTlm6_2sgVt7hMZOPfXk3`` → ``o6_b…Xk3``."""
    if len(user_id) <= 8:
        return user_id[:1] + "…" + user_id[-1:] if len(user_id) > 2 else "…"
    return f"{user_id[:4]}…{user_id[-3:]}"


def china_minute(catalogue: Catalogue, moment: datetime) -> str:
    """A moment as people read it: China time, to the minute (「2026年12月1日 09:05」)."""
    local = moment.astimezone(CHINA)
    return catalogue(
        "accounts_time", year=local.year, month=local.month, day=local.day, hour=local.hour, minute=local.minute
    )


@dataclasses.dataclass(frozen=True)
class BoundAccount:
    """One chat account of a person, and when it was bound (its newest passed verification as them)."""

    account: PlatformAccount
    bound_at: datetime | None  # None when bound without a verification on record (seeded data)


async def bound_accounts(session: AsyncSession, identity: Identity) -> list[BoundAccount]:
    """Every chat account bound to ``identity``, oldest first, with when each was bound."""
    accounts = await accounts_of(session, identity.id)
    if not accounts:
        return []
    rows = await session.execute(
        select(Verification.account_id, func.max(Verification.completed_at))
        .where(
            Verification.account_id.in_([account.id for account in accounts]),
            Verification.status == VerificationStatus.PASSED,
            Verification.id_number_hash == identity.id_number_hash,
        )
        .group_by(Verification.account_id)
    )
    bound_at: dict[int, datetime | None] = {account_id: at for account_id, at in rows}
    return [BoundAccount(account, bound_at.get(account.id)) for account in accounts]


async def unbind_account(session: AsyncSession, identity: Identity, acting: PlatformAccount, target_id: int) -> bool:
    """Unbind account ``target_id`` from ``identity`` at ``acting``'s request; False when it was not bound to them.

    One conditional UPDATE: a double confirmation or a concurrent unbinding finds nothing to move. From
    then on the target's platform account no longer points at the person, so it sees nothing of theirs,
    and the person's live codes and code pages end too.
    """
    result = await session.execute(
        update(PlatformAccount)
        .where(PlatformAccount.id == target_id, PlatformAccount.identity_id == identity.id)
        .values(identity_id=None)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    # Codes and code pages belong to the person, not to the account that opened them: end every live one,
    # so nothing the unbound account already holds keeps working (the person simply shows a new code).
    now = utcnow()
    await session.execute(
        update(CodePage).where(CodePage.identity_id == identity.id, CodePage.expires_at > now).values(expires_at=now)
    )
    await session.execute(
        update(CodeToken)
        .where(CodeToken.shown_by_identity_id == identity.id, CodeToken.used_at.is_(None), CodeToken.expires_at > now)
        .values(expires_at=now)
    )
    record_access(
        session,
        actor_kind="identity",
        actor_ref=actor(identity, acting),
        action="account_unbound",
        reason="self" if target_id == acting.id else "other",
        platform=acting.platform,
        detail={"account": target_id},
    )
    return True


async def tell_earlier_accounts(
    session: AsyncSession,
    catalogue: Catalogue,
    account: PlatformAccount,
    identity: Identity,
    *,
    key: str,
    now: datetime,
) -> Sequence[PlatformAccount]:
    """Tell the person's other accounts that ``account`` was just bound to them; returns the accounts told.

    Which platform, when (China time) and what to do if it was not them. Call it only when the binding is
    new (not a repeated verification of an account already theirs); ``key`` names this binding.
    """
    earlier = [other for other in await accounts_of(session, identity.id) if other.id != account.id]
    if not earlier:
        return []
    notice = catalogue(
        "accounts_bound_notice",
        platform=catalogue(f"accounts_platform_{account.platform}"),
        user=mask_user_id(account.user_id),
        time=china_minute(catalogue, now),
    )
    return await notify(session, Text(notice), key, accounts=earlier)


async def tell_unbinding(
    session: AsyncSession,
    catalogue: Catalogue,
    acting: PlatformAccount,
    target: PlatformAccount,
    identity: Identity,
    *,
    now: datetime,
) -> Sequence[PlatformAccount]:
    """Tell the unbound account and the person's other accounts (not the one acting) who unbound whom, and when.

    An account bound by someone else could otherwise unbind the owner's accounts unseen; this way the owner
    hears of it at once, wherever they follow.
    """
    others = [other for other in await accounts_of(session, identity.id) if other.id != acting.id]
    notice = catalogue(
        "accounts_unbound_notice",
        time=china_minute(catalogue, now),
        actor_platform=catalogue(f"accounts_platform_{acting.platform}"),
        actor_user=mask_user_id(acting.user_id),
        platform=catalogue(f"accounts_platform_{target.platform}"),
        user=mask_user_id(target.user_id),
    )
    key = f"unbound:{target.id}:{int(now.timestamp())}"
    return await notify(session, Text(notice), key, accounts=[target, *others])


async def tell_grantee(
    session: AsyncSession,
    catalogue: Catalogue,
    vault: Vault,
    holder: Identity,
    child: str,
    grant: Grant,
    *,
    revoked: bool = False,
) -> Sequence[PlatformAccount]:
    """Tell a grantee, wherever they are reached, that ``holder`` authorised them (or no longer does) to see
    ``child`` (the masked name); the chat and the pages alike. Returns the accounts told."""
    key, prefix = ("grant_notice_revoked", "revoke-notice") if revoked else ("grant_notice_grantee", "grant-notice")
    notice = catalogue(key, holder=mask_name(vault.open("name", holder.name_enc)), child=child)
    return await notify(session, Text(notice), f"{prefix}:{grant.id}", id_number_hashes=[grant.grantee_id_number_hash])


def union_digest(vault: Vault, platform: str, union: str) -> str:
    """The stored form of a union id: the same for every app of one platform family (WeChat, Alipay)."""
    family = "alipay" if platform.startswith("alipay") else "wechat"
    return vault.digest("union_id", f"{family}:{union}")


async def record_union(
    session: AsyncSession, vault: Vault, account: PlatformAccount, union: str, now: datetime
) -> None:
    """Remember an account's union id (the platform's id of the user across the developer's apps), once."""
    insert = dialect_insert(session)
    await session.execute(
        insert(AccountUnion)
        .values(account_id=account.id, union_hash=union_digest(vault, account.platform, union), created_at=now)
        .on_conflict_do_nothing(index_elements=["account_id"])
    )
