"""Face-verification attempts: one single-use, expiring link per attempt, re-checked with the provider."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class VerificationStatus(StrEnum):
    """pending → starting → started (provider called) → checking → passed | failed | mismatch; or expired.

    ``starting`` and ``checking`` are held while a provider call is in flight, so one click runs it once.
    """

    PENDING = "pending"
    STARTING = "starting"
    STARTED = "started"
    CHECKING = "checking"
    PASSED = "passed"
    FAILED = "failed"
    MISMATCH = "mismatch"
    EXPIRED = "expired"


class Verification(Base):
    """One attempt by one chat account to prove who they are.

    The link the user opens carries a random handle; only its hash is stored. The name and ID number the
    user typed are sealed; the provider's reference (BizToken, certify_id, verify_id) is not personal data.
    """

    __tablename__ = "verifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    handle_hash: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("platform_accounts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))  # tencent | wechat_mini | alipay | dev
    provider_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[VerificationStatus] = mapped_column(
        StrEnumType(VerificationStatus), default=VerificationStatus.PENDING
    )
    reason: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
