"""Verified people and the chat accounts that speak for them."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, UTCDateTime, utcnow


class Identity(Base):
    """A person whose name and ID number were verified (face, birth certificate or household record)."""

    __tablename__ = "identities"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), unique=True)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    verified_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verification_method: Mapped[str] = mapped_column(String(32))  # face | birth_certificate | household
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlatformAccount(Base):
    """One user of one app on one platform (a WeChat openid or an Alipay user id)."""

    __tablename__ = "platform_accounts"
    __table_args__ = (UniqueConstraint("platform", "app_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    identity_id: Mapped[int | None] = mapped_column(ForeignKey("identities.id"), index=True)
    following: Mapped[bool] = mapped_column(Boolean, default=True)
    followed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unfollowed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Customer-service windows are counted from the last thing the user did.
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_interaction_kind: Mapped[str | None] = mapped_column(String(16))
    # Alipay: the China date on which the one message allowed after the user opened the account's page
    # (event_type enter_ppchat) was used.
    enter_sent_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Consent(Base):
    """A separate consent given under PIPL art. 29-31 (what, by whom, for whom, when, withdrawn)."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    subject_ref: Mapped[str | None] = mapped_column(String(64))  # e.g. a vaccinee id for guardian consent
    text_version: Mapped[str] = mapped_column(String(32))
    given_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


Index("ix_platform_accounts_following", PlatformAccount.platform, PlatformAccount.following)
