"""Operational tables: inbox, outbox, conversation state, processed-message keys, audit log, API tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class OutboxKind(StrEnum):
    """What an outbox row carries; each platform's sender knows which it can deliver."""

    TEXT = "text"
    IMAGE = "image"
    NEWS = "news"  # a link card
    TEMPLATE = "template"  # a template message (dose reminders)
    SUBSCRIBE = "subscribe"  # a WeChat subscription notification
    MINI_TEMPLATE = "mini_template"  # an Alipay mini-program subscription message


class OutboxStatus(StrEnum):
    """pending → sending → sent | dead, or passive (delivered as the webhook's own reply)."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    PASSIVE = "passive"
    DEAD = "dead"


class OutboxMessage(Base):
    """Every outbound message is a row first; the worker delivers it (or it was answered passively)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(128))
    kind: Mapped[OutboxKind] = mapped_column(StrEnumType(OutboxKind))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[OutboxStatus] = mapped_column(StrEnumType(OutboxStatus), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker leaves a row alone until then (a passive-reply candidate is held past the deadline).
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(256))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


Index("ix_outbox_due", OutboxMessage.status, OutboxMessage.available_at)


class ConversationState(Base):
    """Where a user is in a flow: a named state, its data and when it lapses."""

    __tablename__ = "conversation_states"
    __table_args__ = (UniqueConstraint("platform", "app_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessedMessage(Base):
    """A delivery key already handled; its unique constraint makes retried deliveries take effect once."""

    __tablename__ = "processed_messages"
    __table_args__ = (UniqueConstraint("platform", "app_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class InboxUpdate(Base):
    """An acknowledged update not yet processed: written before the platform hears the acknowledgement.

    The update is sealed (a chat message may carry a name or an ID number). The process that wrote the
    row holds a lease on it, renewed while it works; a row whose lease lapsed was left by a dead process,
    and the recovery step takes it over. Deleted once the update's transaction has committed.
    """

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("platform", "app_id", "dedupe_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(160))
    update_enc: Mapped[bytes] = mapped_column(LargeBinary)
    owner: Mapped[str] = mapped_column(String(32))
    lease_until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Append-only record of every access to personal data (triggers forbid UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))  # identity | account | staff | system
    actor_ref: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"), index=True)
    vaccinee_id: Mapped[int | None] = mapped_column(ForeignKey("vaccinees.id"), index=True)
    platform: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PlatformToken(Base):
    """The one access token per app, shared by every process through the database."""

    __tablename__ = "platform_tokens"
    __table_args__ = (UniqueConstraint("platform", "app_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(64))
    token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_count: Mapped[int] = mapped_column(Integer, default=0)
    # A process fetching a new token holds this lease, so the others wait instead of fetching too.
    refreshing_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
