"""Show-code credentials (亮码): short-lived signed reference tokens, drawn as QR codes.

A code is ``VX1:<handle>:<expiry>:<signature>``: a random handle, its expiry in Unix seconds, and a
keyed signature over both. It carries no personal data and no database id; the clinic's scan resolves the
handle server-side, under the clinic's access, and a code works once. Every character is in the QR
alphanumeric set (upper-case Base32, digits, ``:``), so the symbol stays small (version 4 at level Q).
The signature lets a scanner refuse a forged or expired code before it touches the database. Symbols are
drawn by :mod:`bot.core.qr` (the ``qrcode`` package's matrix, a fast PNG and SVG).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core import qr as drawing
from bot.core.pii import Vault
from models import CodeToken

PREFIX = "VX1"
_HANDLE_BYTES = 15  # 120 bits: 24 Base32 characters without padding
_SIGNATURE_BYTES = 15
_MAX_PAYLOAD = 80  # the real ones are 64 characters: anything longer is not ours
_EXPIRY = re.compile(r"[0-9]{1,12}")  # ASCII digits only (str.isdigit also takes "²", which int() refuses)


class CodeProblem(StrEnum):
    """Why a scanned code was refused (a clinic screen shows the matching text)."""

    MALFORMED = "malformed"
    FORGED = "forged"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    USED = "used"
    NO_ACCESS = "no_access"  # the person who showed it may no longer see the certificate


class CodeRejected(Exception):
    """A scanned code cannot be used; ``problem`` says why, ``token`` is its row when it was ours (for the audit)."""

    def __init__(self, problem: CodeProblem, token: CodeToken | None = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.token = token


@dataclasses.dataclass(frozen=True)
class IssuedCode:
    """A code just issued: the text to draw, and when it stops working."""

    payload: str
    expires_at: datetime


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def _signature(vault: Vault, handle: str, expires: int) -> str:
    digest = bytes.fromhex(vault.digest("code_signature", f"{PREFIX}:{handle}:{expires}"))
    return _b32(digest[:_SIGNATURE_BYTES])


def handle_digest(vault: Vault, handle: str) -> str:
    """The stored form of a code's handle (the database never holds a usable code)."""
    return vault.digest("code_handle", handle)


def make_payload(vault: Vault, handle: str, expires_at: datetime) -> str:
    """The text of a code for ``handle``, valid until ``expires_at``."""
    expires = int(expires_at.timestamp())
    return f"{PREFIX}:{handle}:{expires}:{_signature(vault, handle, expires)}"


def parse_payload(vault: Vault, payload: str, now: datetime) -> str:
    """Check a scanned code's shape, signature and expiry; returns its handle or raises :class:`CodeRejected`."""
    text = payload.strip()
    parts = text.split(":")
    if len(text) > _MAX_PAYLOAD or len(parts) != 4 or parts[0] != PREFIX or not _EXPIRY.fullmatch(parts[2]):
        raise CodeRejected(CodeProblem.MALFORMED)
    _, handle, expires_text, signature = parts
    expected = _signature(vault, handle, int(expires_text)).encode("ascii")
    if not hmac.compare_digest(signature.encode("utf-8"), expected):
        raise CodeRejected(CodeProblem.FORGED)
    if int(expires_text) <= now.timestamp():
        raise CodeRejected(CodeProblem.EXPIRED)
    return handle


def issue_code(
    session: AsyncSession, vault: Vault, *, certificate_id: int, identity_id: int, now: datetime, ttl: timedelta
) -> IssuedCode:
    """Record a new code for a certificate, shown by ``identity_id``; returns the text to draw."""
    handle = _b32(secrets.token_bytes(_HANDLE_BYTES))
    # Whole seconds, so the expiry in the code and the one in the database are the same instant.
    expires_at = datetime.fromtimestamp(int((now + ttl).timestamp()), UTC)
    session.add(
        CodeToken(
            handle_hash=handle_digest(vault, handle),
            certificate_id=certificate_id,
            shown_by_identity_id=identity_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return IssuedCode(make_payload(vault, handle, expires_at), expires_at)


async def redeem_code(session: AsyncSession, vault: Vault, payload: str, now: datetime) -> CodeToken:
    """Use a scanned code once: returns its row, or raises :class:`CodeRejected`.

    One conditional UPDATE decides, so two desks scanning the same code at once cannot both succeed. A
    refusal carries the code's row when there is one (used, expired), so the refusal is audited against
    its certificate; a forged, malformed or unknown code has none.
    """
    try:
        handle = parse_payload(vault, payload, now)
    except CodeRejected as exc:
        if exc.problem is not CodeProblem.EXPIRED:
            raise
        # Signed by us, only late: the handle is authentic, so its row says whose certificate it was.
        late = handle_digest(vault, payload.strip().split(":")[1])
        token = (await session.scalars(select(CodeToken).where(CodeToken.handle_hash == late))).first()
        raise CodeRejected(CodeProblem.EXPIRED, token) from None
    digest = handle_digest(vault, handle)
    result = await session.execute(
        update(CodeToken)
        .where(CodeToken.handle_hash == digest, CodeToken.used_at.is_(None), CodeToken.expires_at > now)
        .values(used_at=now)
        .returning(CodeToken.id)
    )
    used = result.scalar_one_or_none()
    if used is not None:
        token = await session.get(CodeToken, used)
        assert token is not None
        return token
    row = (await session.scalars(select(CodeToken).where(CodeToken.handle_hash == digest))).first()
    if row is None:
        raise CodeRejected(CodeProblem.UNKNOWN)
    raise CodeRejected(CodeProblem.USED if row.used_at is not None else CodeProblem.EXPIRED, row)


def qr(payload: str) -> drawing.Symbol:
    """The QR symbol of a code: alphanumeric mode, error correction Q (a phone screen may be scratched)."""
    return drawing.symbol(payload, "Q")


def qr_png(payload: str, scale: int = 8) -> bytes:
    """The code as a PNG for a chat image (a quiet zone of four modules, as scanners expect).

    Chat images are drawn by the platform senders at send time (``Image(qr_text=…)``), not here.
    """
    return drawing.png(qr(payload), scale)


def qr_svg(payload: str) -> str:
    """The code as an inline SVG for the code page (scales to the screen without blurring)."""
    return drawing.svg(qr(payload))
