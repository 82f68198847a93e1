"""Electronic certificates, their single holder, family grants, short-lived code tokens and code pages."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, StrEnumType, UTCDateTime, utcnow


class CertificateKind(StrEnum):
    """A child's certificate (claimed by a guardian) or an adult's own."""

    CHILD = "child"
    ADULT = "adult"


class Certificate(Base):
    """A claimed certificate; one per registry file, so a child is claimed by one person only."""

    __tablename__ = "certificates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    vaccinee_id: Mapped[int] = mapped_column(ForeignKey("vaccinees.id"), unique=True)
    holder_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"), index=True)
    kind: Mapped[CertificateKind] = mapped_column(StrEnumType(CertificateKind, 8))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_via: Mapped[str] = mapped_column(String(16))  # platform the claim came from


class Grant(Base):
    """A family member authorised to see a child's certificate (证照授权)."""

    __tablename__ = "grants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), index=True)
    grantee_id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    grantee_id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    grantee_name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    grantee_phone_enc: Mapped[bytes] = mapped_column(LargeBinary)
    relationship: Mapped[str] = mapped_column(String(16))
    granted_by_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# One active grant per person per certificate (a partial unique index works on both databases).
Index(
    "uq_grants_active",
    Grant.certificate_id,
    Grant.grantee_id_number_hash,
    unique=True,
    sqlite_where=text("revoked_at IS NULL"),
    postgresql_where=text("revoked_at IS NULL"),
)


class CodeToken(Base):
    """A short-lived signed reference shown as a QR code; resolves server-side, carries no personal data."""

    __tablename__ = "code_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    handle_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # A certificate's code, or (auto-filing, 自动建档) the code of a person who has no file yet.
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificates.id"), index=True)
    filing_request_id: Mapped[int | None] = mapped_column(ForeignKey("filing_requests.id"))
    shown_by_identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CodePage(Base):
    """A link to a page that keeps a fresh code on screen (亮码页面); the URL's handle is stored hashed."""

    __tablename__ = "code_pages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    handle_hash: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id"), index=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the page last got a new code: refreshes faster than the page's own timer are refused.
    last_code_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
