"""Clinics and their API keys: adding a clinic, issuing a key, and checking a signed clinic API request.

A clinic information system signs each request to ``/clinic/api/v1`` with its key's secret:
HMAC-SHA256 over the method, the path with its query string, the timestamp, a nonce and the SHA-256 of
the body (:func:`string_to_sign`). A request is refused when the key is unknown or revoked, the
timestamp is more than five minutes from the server's clock, the signature does not match (compared in
constant time) or the nonce was used before by that key (a replay). The secret is sealed with the vault
(it is needed in the clear to check a signature) and shown once, when the key is made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.audit import record_access
from bot.core.pii import Vault
from bot.desk.steps import DeskActor
from models import Clinic, ClinicApiKey, ClinicApiNonce
from models.clinic import API_SECRET_FIELD

CLOCK_SKEW = timedelta(minutes=5)
# Nonces are kept a little longer than a timestamp stays acceptable: a replay inside the window is caught.
NONCE_KEPT = CLOCK_SKEW * 2 + timedelta(minutes=1)
NONCE_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CLINIC_CODE_SHAPE = re.compile(r"^[A-Za-z0-9-]{2,32}$")
REGION_SHAPE = re.compile(r"^\d{6}$")

HEADER_KEY = "X-Vaxbot-Key"
HEADER_TIMESTAMP = "X-Vaxbot-Timestamp"
HEADER_NONCE = "X-Vaxbot-Nonce"
HEADER_SIGNATURE = "X-Vaxbot-Signature"


class ClinicInvalid(ValueError):
    """A clinic or key could not be added; the message says why (for the operator)."""


async def add_clinic(
    session: AsyncSession, *, code: str, name: str, region_code: str, address: str = "", phone: str = ""
) -> Clinic:
    """A new clinic (接种门诊) with the registry's code; refuses a code in use or a malformed one."""
    code, name = code.strip(), " ".join(name.split())
    if not CLINIC_CODE_SHAPE.match(code):
        raise ClinicInvalid(f"clinic code {code!r}: 2–32 letters, digits or '-'")
    if not name or len(name) > 128:
        raise ClinicInvalid("the clinic's name is needed (at most 128 characters)")
    if not REGION_SHAPE.match(region_code):
        raise ClinicInvalid(f"region code {region_code!r}: six digits (GB/T 2260)")
    if (await session.scalars(select(Clinic).where(Clinic.code == code))).first() is not None:
        raise ClinicInvalid(f"a clinic with code {code} exists already")
    clinic = Clinic(code=code, name=name, region_code=region_code, address=address.strip(), phone=phone.strip())
    session.add(clinic)
    await session.flush()
    record_access(session, actor_kind="operator", actor_ref="cli", action="clinic_added", detail={"clinic": clinic.id})
    return clinic


@dataclasses.dataclass(frozen=True)
class IssuedKey:
    """A new API key: its public id and the secret, shown this once."""

    key_id: str
    secret: str
    clinic_id: int


async def add_api_key(session: AsyncSession, vault: Vault, clinic_code: str, *, label: str = "") -> IssuedKey:
    """A new API key for the clinic ``clinic_code``; the secret is sealed, and returned only here."""
    clinic = (await session.scalars(select(Clinic).where(Clinic.code == clinic_code))).first()
    if clinic is None:
        raise ClinicInvalid(f"no clinic with code {clinic_code}")
    key_id = "ck_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ClinicApiKey(
        key_id=key_id, clinic_id=clinic.id, secret_enc=vault.seal(API_SECRET_FIELD, secret), label=label[:64]
    )
    session.add(row)
    await session.flush()
    record_access(
        session,
        actor_kind="operator",
        actor_ref="cli",
        action="clinic_api_key_added",
        detail={"clinic": clinic.id, "key": row.id},
    )
    return IssuedKey(key_id, secret, clinic.id)


async def revoke_api_key(session: AsyncSession, key_id: str, now: datetime) -> bool:
    """Revoke a clinic API key at once (its next request is refused); False when no live key has that id."""
    result = await session.execute(
        update(ClinicApiKey)
        .where(ClinicApiKey.key_id == key_id, ClinicApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ClinicApiKey.id)
    )
    revoked = result.scalar_one_or_none()
    if revoked is None:
        return False
    record_access(
        session, actor_kind="operator", actor_ref="cli", action="clinic_api_key_revoked", detail={"key": revoked}
    )
    return True


def string_to_sign(method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What is signed: method, path with query, timestamp, nonce and the body's SHA-256 (hex), one per line."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path_qs, timestamp, nonce, digest]).encode("utf-8")


def sign(secret: str, method: str, path_qs: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The request's signature: HMAC-SHA256 with the key's secret, lower-case hex."""
    message = string_to_sign(method, path_qs, timestamp, nonce, body)
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


class ApiProblem(StrEnum):
    """Why a clinic API request was not let in."""

    UNSIGNED = "unsigned"  # a header missing or malformed
    UNKNOWN_KEY = "unknown_key"  # no such key, or revoked
    STALE = "stale"  # the timestamp is more than five minutes away
    BAD_SIGNATURE = "bad_signature"
    REPLAY = "replay"  # the nonce was used before


class ApiRefused(Exception):
    """A clinic API request was refused before any step ran."""

    def __init__(self, problem: ApiProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class SignedRequest:
    """The parts of a request its signature covers, and the headers that carry it."""

    method: str
    path_qs: str
    body: bytes
    key_id: str
    timestamp: str
    nonce: str
    signature: str


async def authenticate(session: AsyncSession, vault: Vault, request: SignedRequest, now: datetime) -> DeskActor:
    """The desk actor a correctly signed, fresh, first-seen request speaks for; raises :class:`ApiRefused`.

    The signature is checked first: the nonce is recorded (in the caller's transaction) only once it holds,
    so nobody can use up a key's nonces without its secret, and only a correctly signed request that is
    stale or replayed is audited under the key (a bad signature is logged by the caller, not audited,
    so a key's public id alone cannot fill the audit log).
    """
    if not (request.key_id and request.timestamp and request.nonce and request.signature):
        raise ApiRefused(ApiProblem.UNSIGNED)
    if not request.timestamp.isdigit() or not NONCE_SHAPE.match(request.nonce) or len(request.signature) != 64:
        raise ApiRefused(ApiProblem.UNSIGNED)
    key = (
        await session.scalars(
            select(ClinicApiKey).where(ClinicApiKey.key_id == request.key_id, ClinicApiKey.revoked_at.is_(None))
        )
    ).first()
    if key is None:
        raise ApiRefused(ApiProblem.UNKNOWN_KEY)
    actor = DeskActor(clinic_id=key.clinic_id, api_key_id=key.id)
    secret = vault.open(API_SECRET_FIELD, key.secret_enc)
    expected = sign(secret, request.method, request.path_qs, request.timestamp, request.nonce, request.body)
    if not hmac.compare_digest(expected, request.signature.lower()):
        # Not audited: anyone who knows a key's public id could otherwise fill the audit log (it is logged).
        raise ApiRefused(ApiProblem.BAD_SIGNATURE)
    try:
        moment = datetime.fromtimestamp(int(request.timestamp), now.tzinfo)
    except (OverflowError, ValueError, OSError):
        moment = None
    if moment is None or abs(moment - now) > CLOCK_SKEW:
        await _refused(session, actor, ApiProblem.STALE)
    await session.execute(
        delete(ClinicApiNonce).where(ClinicApiNonce.api_key_id == key.id, ClinicApiNonce.seen_at < now - NONCE_KEPT)
    )
    try:
        async with session.begin_nested():
            session.add(ClinicApiNonce(api_key_id=key.id, nonce=request.nonce, seen_at=now))
    except IntegrityError:
        await _refused(session, actor, ApiProblem.REPLAY)
    await session.execute(update(ClinicApiKey).where(ClinicApiKey.id == key.id).values(last_used_at=now))
    return actor


async def _refused(session: AsyncSession, actor: DeskActor, problem: ApiProblem) -> None:
    """Audit a refused request of a known key, then refuse it (commit after: the refusal is on record)."""
    record_access(
        session, actor_kind="clinic_api", actor_ref=actor.audit_actor(), action="clinic_api_refused", reason=problem
    )
    raise ApiRefused(problem)
