"""Mini-program login: the platform's code → the user's account → our own short-lived session token.

The platform turns the page's one-time code into the user's id (WeChat ``jscode2session``: openid, maybe
unionid, and ``session_key``; Alipay ``alipay.system.oauth.token``: user_id). That happens in the web layer;
here the account is found or made, joined to its person when the platform vouches for it (the same
``unionid`` as an account already verified, or on Alipay the same ``user_id`` as a life-account user who
is), and a session opened. The token is random, shown once, and stored only as a keyed hash; WeChat's
``session_key`` is sealed in the row and never leaves the server. Each code is also remembered (keyed hash,
in the processed-keys table) so a replayed code is refused here even before the platform is asked.
"""

from __future__ import annotations

import dataclasses
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.certificates.rules import actor
from bot.core.audit import record_access
from bot.core.catalogue import Catalogue
from bot.core.db import dialect_insert
from bot.core.pii import Vault
from bot.identity.accounts import record_union, tell_earlier_accounts, union_digest
from models import AccountUnion, Identity, MiniSession, PlatformAccount, ProcessedMessage

TOKEN_BYTES = 32


@dataclasses.dataclass(frozen=True)
class Login:
    """Who the platform says logged in (``union``: WeChat's unionid, or Alipay's user_id; may be empty)."""

    platform: str  # wxmini | alipaymini
    app_id: str
    user_id: str
    union: str = ""
    session_key: str = dataclasses.field(default="", repr=False)


def token_digest(vault: Vault, token: str) -> str:
    """The stored form of a session token."""
    return vault.digest("mp_session", token)


async def spend_code(session: AsyncSession, vault: Vault, platform: str, app_id: str, code: str, now: datetime) -> bool:
    """Remember a login code as used; False when it was used before (a replay)."""
    insert = dialect_insert(session)
    result = await session.execute(
        insert(ProcessedMessage)
        .values(
            platform=platform,
            app_id=app_id,
            dedupe_key="login:" + vault.digest("mp_login_code", code),
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["platform", "app_id", "dedupe_key"])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def log_in(
    session: AsyncSession,
    vault: Vault,
    catalogue: Catalogue,
    login: Login,
    *,
    now: datetime,
    ttl: timedelta,
) -> tuple[str, PlatformAccount]:
    """Open a session for the platform user of ``login``; returns (the token, shown once; the account)."""
    query = select(PlatformAccount).where(
        PlatformAccount.platform == login.platform,
        PlatformAccount.app_id == login.app_id,
        PlatformAccount.user_id == login.user_id,
    )
    account = (await session.scalars(query)).first()
    if account is None:
        account = PlatformAccount(
            platform=login.platform, app_id=login.app_id, user_id=login.user_id, following=True, created_at=now
        )
        session.add(account)
        await session.flush()
    if login.union:
        await _join_by_union(session, vault, catalogue, account, login, now)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        MiniSession(
            token_hash=token_digest(vault, token),
            account_id=account.id,
            session_key_enc=vault.seal("mp_session_key", login.session_key) if login.session_key else None,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return token, account


async def _join_by_union(
    session: AsyncSession, vault: Vault, catalogue: Catalogue, account: PlatformAccount, login: Login, now: datetime
) -> None:
    """Record the account's union id; an unbound account joins the person a verified twin belongs to."""
    digest = union_digest(vault, login.platform, login.union)
    await record_union(session, vault, account, login.union, now)
    if account.identity_id is not None:
        return
    twins = select(PlatformAccount).where(PlatformAccount.identity_id.is_not(None), PlatformAccount.id != account.id)
    if login.platform == "alipaymini":
        # Alipay's user_id is the same person in every Alipay app: the life account's user with that id.
        twins = twins.where(PlatformAccount.platform == "alipay", PlatformAccount.user_id == login.union)
    else:
        twins = twins.join(AccountUnion, AccountUnion.account_id == PlatformAccount.id).where(
            AccountUnion.union_hash == digest
        )
    twin = (await session.scalars(twins.order_by(PlatformAccount.id).limit(1))).first()
    if twin is None or twin.identity_id is None:
        return
    identity = await session.get(Identity, twin.identity_id)
    if identity is None:
        return
    account.identity_id = identity.id
    record_access(
        session,
        actor_kind="account",
        actor_ref=actor(identity, account),
        action="identity_bound",
        reason="union_id",
        platform=account.platform,
        detail={"identity_id": identity.id, "twin_account": twin.id},
    )
    # As after a verification: the person's other accounts hear at once that one more speaks for them.
    await tell_earlier_accounts(session, catalogue, account, identity, key=f"bound-union:{account.id}", now=now)


async def session_account(session: AsyncSession, vault: Vault, token: str, now: datetime) -> PlatformAccount | None:
    """The account a live session token belongs to; None for an unknown, expired or ended token."""
    row = (
        await session.scalars(select(MiniSession).where(MiniSession.token_hash == token_digest(vault, token)))
    ).first()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    return await session.get(PlatformAccount, row.account_id)


async def end_session(session: AsyncSession, vault: Vault, token: str, now: datetime) -> bool:
    """Log out: the token stops working at once; False when it was not live."""
    result = await session.execute(
        update(MiniSession)
        .where(MiniSession.token_hash == token_digest(vault, token), MiniSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
