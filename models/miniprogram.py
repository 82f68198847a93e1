"""The mini programs: one-time subscription consents, our own login sessions, and cross-app union ids."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class ConsentSource(StrEnum):
    """Who told us of a consent first: WeChat's push (``subscribe_msg_popup_event``) or the page."""

    PUSH = "push"
    PAGE = "page"


class SubscriptionConsent(Base):
    """One one-time consent (一次性订阅) to one subscription template: it allows exactly one message.

    The same tap may be reported twice, by WeChat's push and by the page after ``wx.requestSubscribeMessage``;
    the second report confirms the first instead of adding a consent (``push_seen``/``page_seen``).
    """

    __tablename__ = "subscription_consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("platform_accounts.id"))
    template_id: Mapped[str] = mapped_column(String(128))
    source: Mapped[ConsentSource] = mapped_column(StrEnumType(ConsentSource))
    push_seen: Mapped[bool] = mapped_column(Boolean, default=False)
    page_seen: Mapped[bool] = mapped_column(Boolean, default=False)
    given_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Spent by the one message it allowed (the outbox row's idempotency key); never spent twice.
    spent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    spent_for: Mapped[str | None] = mapped_column(String(128))


Index(
    "ix_subscription_consents_unspent",
    SubscriptionConsent.account_id,
    SubscriptionConsent.template_id,
    SubscriptionConsent.spent_at,
)


class MiniSession(Base):
    """Our own short-lived login session for a mini-program user; the token is stored only as a keyed hash.

    ``session_key_enc`` is WeChat's ``session_key`` sealed with the vault: it never leaves the server.
    """

    __tablename__ = "mp_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("platform_accounts.id"), index=True)
    session_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AccountUnion(Base):
    """The platform's cross-app id of an account (WeChat ``unionid``; Alipay's ``user_id``), as a keyed hash.

    Two accounts with the same union hash are the same platform user in two apps of one developer.
    """

    __tablename__ = "account_unions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("platform_accounts.id"), unique=True)
    union_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
