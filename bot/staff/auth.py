"""Staff accounts, sign-in with lock-out, console sessions (hashed random tokens, idle expiry) and CSRF tokens.

A session token is 32 random bytes that live only in the browser's cookie; the database keeps their keyed
hash, so a copy of the database signs nobody in. Every step is audited under ``staff:N@clinic:M`` (a
sign-in with an unknown login under the clinic alone), and the caller commits after a refusal too, so
failed attempts and lock-outs are counted and recorded.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.audit import record_access
from bot.core.pii import Vault
from bot.staff.passwords import MIN_LENGTH, hash_password_async, needs_rehash, password_matches_async
from models import Clinic, ClinicStaff, StaffRole, StaffSession

MAX_FAILURES = 5  # consecutive wrong passwords before the account is locked
LOCK_DURATION = timedelta(minutes=15)
IDLE_LIMIT = timedelta(minutes=30)  # a console left alone this long signs out
SESSION_LIMIT = timedelta(hours=12)  # and any session ends after a working day
_TOUCH_EVERY = timedelta(seconds=30)  # last_seen_at is written at most this often (the pages poll)
SESSION_FIELD = "staff_session"
CSRF_FIELD = "staff_csrf"
LOGIN_SHAPE_MAX = 64


@dataclasses.dataclass(frozen=True)
class StaffMember:
    """A signed-in staff member and their clinic, as the console needs them."""

    id: int
    clinic_id: int
    clinic_code: str
    clinic_name: str
    login: str
    display_name: str
    role: StaffRole

    def audit_actor(self) -> str:
        """How the audit log names them: ``staff:N@clinic:M``."""
        return f"staff:{self.id}@clinic:{self.clinic_id}"


class StaffError(Exception):
    """A staff account cannot be created as asked; the message says why (English, for the operator)."""


class SignInProblem(StrEnum):
    """Why a sign-in was refused (the page says the same for an unknown login and a wrong password)."""

    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"


class SignInRefused(Exception):
    """A refused sign-in: ``problem``, and when a lock ends (``locked_until``) if the account is locked."""

    def __init__(self, problem: SignInProblem, locked_until: datetime | None = None) -> None:
        super().__init__(problem.value)
        self.problem = problem
        self.locked_until = locked_until


def _member(staff: ClinicStaff, clinic: Clinic) -> StaffMember:
    return StaffMember(
        id=staff.id,
        clinic_id=clinic.id,
        clinic_code=clinic.code,
        clinic_name=clinic.name,
        login=staff.login,
        display_name=staff.display_name,
        role=staff.role,
    )


async def add_staff(
    session: AsyncSession,
    *,
    clinic_code: str,
    login: str,
    display_name: str,
    role: StaffRole,
    password: str,
    hashed: str | None = None,
) -> ClinicStaff:
    """Create a staff member of the clinic ``clinic_code``; raises :class:`StaffError` when it cannot.

    ``hashed``: a hash of ``password`` made already (the demo seeds four accounts with one password).
    """
    clinic = (await session.scalars(select(Clinic).where(Clinic.code == clinic_code))).first()
    if clinic is None:
        raise StaffError(f"no clinic with code {clinic_code!r} (import it with the registry first)")
    login = login.strip()
    if not login or len(login) > LOGIN_SHAPE_MAX or any(character.isspace() for character in login):
        raise StaffError("a login is 1 to 64 characters without spaces")
    if len(password) < MIN_LENGTH:
        raise StaffError(f"a password needs at least {MIN_LENGTH} characters")
    taken = await session.scalars(
        select(ClinicStaff.id).where(ClinicStaff.clinic_id == clinic.id, ClinicStaff.login == login)
    )
    if taken.first() is not None:
        raise StaffError(f"{clinic_code} already has a staff member with the login {login!r}")
    staff = ClinicStaff(
        clinic_id=clinic.id,
        login=login,
        display_name=display_name.strip() or login,
        role=role,
        password_hash=hashed or await hash_password_async(password),
        active=True,
        failed_attempts=0,
    )
    session.add(staff)
    await session.flush()
    record_access(
        session,
        actor_kind="system",
        actor_ref="cli",
        action="staff_added",
        reason=role.value,
        detail={"staff": staff.id, "clinic": clinic.id},
    )
    return staff


async def _find_staff(session: AsyncSession, clinic_code: str, login: str) -> tuple[ClinicStaff, Clinic]:
    found = (
        await session.execute(
            select(ClinicStaff, Clinic)
            .join(Clinic, Clinic.id == ClinicStaff.clinic_id)
            .where(Clinic.code == clinic_code, ClinicStaff.login == login)
        )
    ).first()
    if found is None:
        raise StaffError(f"{clinic_code} has no staff member with the login {login!r}")
    return found[0], found[1]


async def unlock_staff(session: AsyncSession, *, clinic_code: str, login: str) -> ClinicStaff:
    """Lift a lock-out (the operator, after checking with the clinic); raises :class:`StaffError`."""
    staff, clinic = await _find_staff(session, clinic_code, login)
    staff.failed_attempts = 0
    staff.locked_until = None
    record_access(session, actor_kind="system", actor_ref="cli", action="staff_unlocked", detail=_who(staff, clinic))
    return staff


async def deactivate_staff(session: AsyncSession, *, clinic_code: str, login: str, now: datetime) -> int:
    """A staff member leaves: they can no longer sign in, and every open session ends now; returns how many."""
    staff, clinic = await _find_staff(session, clinic_code, login)
    staff.active = False
    ended = await session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff.id, StaffSession.ended_at.is_(None))
        .values(ended_at=now)
        .execution_options(synchronize_session=False)
    )
    count = int(ended.rowcount)  # type: ignore[attr-defined]
    record_access(session, actor_kind="system", actor_ref="cli", action="staff_deactivated", detail=_who(staff, clinic))
    return count


def _who(staff: ClinicStaff, clinic: Clinic) -> dict[str, int]:
    return {"staff": staff.id, "clinic": clinic.id}


def _audit(session: AsyncSession, actor: str, action: str, reason: str = "") -> None:
    record_access(session, actor_kind="staff", actor_ref=actor[:64], action=action, reason=reason)


async def sign_in(
    session: AsyncSession,
    vault: Vault,
    *,
    clinic_code: str,
    login: str,
    password: str,
    now: datetime,
) -> tuple[StaffMember, str]:
    """Check a sign-in; returns the member and a new session token (for the cookie only).

    Raises :class:`SignInRefused`. After :data:`MAX_FAILURES` consecutive wrong passwords the account is
    locked for :data:`LOCK_DURATION`, whatever is typed meanwhile. Commit after a refusal too.
    """
    found = (
        await session.execute(
            select(ClinicStaff, Clinic)
            .join(Clinic, Clinic.id == ClinicStaff.clinic_id)
            .where(Clinic.code == clinic_code.strip(), ClinicStaff.login == login.strip())
        )
    ).first()
    staff, clinic = (found[0], found[1]) if found is not None else (None, None)
    if staff is None or clinic is None or not staff.active:
        await password_matches_async(None, password)  # as long as a real check: names are not probed by time
        actor = f"clinic:{clinic.id}" if clinic is not None else "clinic:unknown"
        _audit(session, actor, "staff_sign_in_refused", "inactive" if staff is not None else "unknown_login")
        raise SignInRefused(SignInProblem.BAD_CREDENTIALS)
    member = _member(staff, clinic)
    if staff.locked_until is not None and staff.locked_until > now:
        _audit(session, member.audit_actor(), "staff_sign_in_refused", "locked")
        raise SignInRefused(SignInProblem.LOCKED, staff.locked_until)
    if not await password_matches_async(staff.password_hash, password):
        # One UPDATE counts the failure, so two desks guessing at once both count.
        failures = (
            await session.execute(
                update(ClinicStaff)
                .where(ClinicStaff.id == staff.id)
                .values(failed_attempts=ClinicStaff.failed_attempts + 1)
                .returning(ClinicStaff.failed_attempts)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one()
        if failures >= MAX_FAILURES:
            until = now + LOCK_DURATION
            await session.execute(
                update(ClinicStaff)
                .where(ClinicStaff.id == staff.id)
                .values(locked_until=until, failed_attempts=0)
                .execution_options(synchronize_session=False)
            )
            _audit(session, member.audit_actor(), "staff_locked", f"{failures}_failures")
            raise SignInRefused(SignInProblem.LOCKED, until)
        _audit(session, member.audit_actor(), "staff_sign_in_refused", "bad_password")
        raise SignInRefused(SignInProblem.BAD_CREDENTIALS)
    staff.failed_attempts = 0
    staff.locked_until = None
    if needs_rehash(staff.password_hash):
        staff.password_hash = await hash_password_async(password)
    token = secrets.token_urlsafe(32)
    session.add(
        StaffSession(token_hash=vault.digest(SESSION_FIELD, token), staff_id=staff.id, created_at=now, last_seen_at=now)
    )
    _audit(session, member.audit_actor(), "staff_sign_in")
    return member, token


async def _open_session(
    session: AsyncSession, vault: Vault, token: str
) -> tuple[StaffSession, ClinicStaff, Clinic] | None:
    if not token or len(token) > 128:
        return None
    found = (
        await session.execute(
            select(StaffSession, ClinicStaff, Clinic)
            .join(ClinicStaff, ClinicStaff.id == StaffSession.staff_id)
            .join(Clinic, Clinic.id == ClinicStaff.clinic_id)
            .where(StaffSession.token_hash == vault.digest(SESSION_FIELD, token), StaffSession.ended_at.is_(None))
        )
    ).first()
    return (found[0], found[1], found[2]) if found is not None else None


async def resume_session(
    session: AsyncSession,
    vault: Vault,
    token: str,
    now: datetime,
    *,
    idle: timedelta = IDLE_LIMIT,
    touch: bool = True,
) -> StaffMember | None:
    """The staff member a session token belongs to, or None (unknown, signed out, idle too long, too old).

    An expired session is ended on the way (commit after), so its token never works again. ``touch=False``
    (a page refreshing itself, a status poll) does not count as use: it does not hold off the idle limit.
    """
    found = await _open_session(session, vault, token)
    if found is None:
        return None
    staff_session, staff, clinic = found
    if not staff.active or now - staff_session.last_seen_at > idle or now - staff_session.created_at > SESSION_LIMIT:
        staff_session.ended_at = now
        reason = "inactive" if not staff.active else "idle"
        _audit(session, _member(staff, clinic).audit_actor(), "staff_session_expired", reason)
        return None
    if touch and now - staff_session.last_seen_at >= _TOUCH_EVERY:
        staff_session.last_seen_at = now
    return _member(staff, clinic)


async def sign_out(session: AsyncSession, vault: Vault, token: str, now: datetime) -> StaffMember | None:
    """End the session of ``token`` (its cookie may still exist somewhere: the token no longer works)."""
    found = await _open_session(session, vault, token)
    if found is None:
        return None
    staff_session, staff, clinic = found
    staff_session.ended_at = now
    member = _member(staff, clinic)
    _audit(session, member.audit_actor(), "staff_sign_out")
    return member


def csrf_token(vault: Vault, session_token: str) -> str:
    """The CSRF token of a session: a keyed hash of its token, put in every form and checked on every POST."""
    return vault.digest(CSRF_FIELD, session_token)


def csrf_matches(vault: Vault, session_token: str, given: str) -> bool:
    """True when ``given`` is the CSRF token of ``session_token`` (compared in constant time)."""
    return bool(session_token) and hmac.compare_digest(csrf_token(vault, session_token).encode(), given.encode())
