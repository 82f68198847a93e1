"""Clinic staff: argon2 hashes, sign-in, lock-out after wrong passwords, sessions (signed out, idle, too old),
CSRF tokens, the role table, and ``vaxbot clinic staff add`` reading the password from stdin, never argv.

Time is injected (``now``): no test waits on the wall clock.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import bot.cli
from bot.core.audit import entries_matching
from bot.staff.auth import (
    IDLE_LIMIT,
    LOCK_DURATION,
    MAX_FAILURES,
    SESSION_LIMIT,
    SignInProblem,
    SignInRefused,
    StaffError,
    add_staff,
    csrf_matches,
    csrf_token,
    deactivate_staff,
    resume_session,
    sign_in,
    sign_out,
    unlock_staff,
)
from bot.staff.roles import ALLOWED, Permission, may
from bot.web.appkeys import SERVICES, SESSIONS
from models import ClinicStaff, StaffRole, StaffSession, utcnow
from tests.helpers import Client
from tests.world import NANJING, NANTONG, clinic

PASSWORD = "correct horse battery"


async def _staff(client: Client, login: str = "nurse-li", role: StaffRole = StaffRole.REGISTRAR) -> int:
    await clinic(client, *NANTONG)
    async with client.app[SESSIONS]() as session, session.begin():
        staff = await add_staff(
            session, clinic_code=NANTONG[0], login=login, display_name="李护士", role=role, password=PASSWORD
        )
        return staff.id


async def _sign_in(client: Client, password: str, now: object, login: str = "nurse-li") -> str:
    """Sign in (committing a refusal too, as the console does); returns the token or raises."""
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session:
        async with session.begin():
            try:
                _member, token = await sign_in(
                    session, vault, clinic_code=NANTONG[0], login=login, password=password, now=now
                )
                return token
            except SignInRefused as exc:
                refused = exc
        raise refused


async def test_password_is_stored_as_an_argon2id_hash(app_client: Client) -> None:
    staff_id = await _staff(app_client)
    async with app_client.app[SESSIONS]() as session:
        staff = await session.get(ClinicStaff, staff_id)
    assert staff is not None
    assert staff.password_hash.startswith("$argon2id$") and PASSWORD not in staff.password_hash


async def test_add_staff_refuses_short_passwords_duplicates_and_unknown_clinics(app_client: Client) -> None:
    await _staff(app_client)
    async with app_client.app[SESSIONS]() as session:
        for clinic_code, login, password in (
            (NANTONG[0], "nurse-wang", "short"),
            (NANTONG[0], "nurse-li", PASSWORD),
            ("NO-SUCH", "nurse-wang", PASSWORD),
            (NANTONG[0], "two words", PASSWORD),
        ):
            with pytest.raises(StaffError):
                await add_staff(
                    session,
                    clinic_code=clinic_code,
                    login=login,
                    display_name="王",
                    role=StaffRole.OBSERVER,
                    password=password,
                )


async def test_sign_in_resume_and_sign_out(app_client: Client) -> None:
    staff_id = await _staff(app_client)
    now = utcnow()
    token = await _sign_in(app_client, PASSWORD, now)
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session, session.begin():
        member = await resume_session(session, vault, token, now + timedelta(minutes=5))
        assert member is not None and member.id == staff_id and member.role is StaffRole.REGISTRAR
        assert (
            member.clinic_code == NANTONG[0] and member.audit_actor() == f"staff:{staff_id}@clinic:{member.clinic_id}"
        )
        stored = (await session.scalars(select(StaffSession.token_hash))).all()
        assert stored and token not in stored  # only a keyed hash of the token is kept
        assert await resume_session(session, vault, token + "x", now) is None
        assert await sign_out(session, vault, token, now + timedelta(minutes=6)) is not None
    async with app_client.app[SESSIONS]() as session, session.begin():
        # The cookie may have been copied: after sign-out the token is worth nothing.
        assert await resume_session(session, vault, token, now + timedelta(minutes=7)) is None
        actions = [entry.action for entry in await entries_matching(session, since=now - timedelta(minutes=1))]
    assert actions[-2:] == ["staff_sign_in", "staff_sign_out"]


async def test_wrong_passwords_lock_the_account_and_the_lock_ends(app_client: Client) -> None:
    await _staff(app_client)
    now = utcnow()
    for attempt in range(MAX_FAILURES - 1):
        with pytest.raises(SignInRefused) as refused:
            await _sign_in(app_client, f"wrong password {attempt}", now)
        assert refused.value.problem is SignInProblem.BAD_CREDENTIALS
    # A good sign-in before the limit resets the count…
    await _sign_in(app_client, PASSWORD, now)
    for attempt in range(MAX_FAILURES - 1):
        with pytest.raises(SignInRefused):
            await _sign_in(app_client, f"wrong password {attempt}", now)
    # …and the limit-th wrong password in a row locks the account.
    with pytest.raises(SignInRefused) as refused:
        await _sign_in(app_client, "wrong again", now)
    assert refused.value.problem is SignInProblem.LOCKED and refused.value.locked_until == now + LOCK_DURATION
    # Locked, even the right password is refused until the lock ends.
    with pytest.raises(SignInRefused) as refused:
        await _sign_in(app_client, PASSWORD, now + LOCK_DURATION - timedelta(seconds=1))
    assert refused.value.problem is SignInProblem.LOCKED
    assert await _sign_in(app_client, PASSWORD, now + LOCK_DURATION + timedelta(seconds=1))
    async with app_client.app[SESSIONS]() as session:
        reasons = [(entry.action, entry.reason) for entry in await entries_matching(session, action="staff_locked")]
        refusals = await entries_matching(session, action="staff_sign_in_refused")
    assert reasons == [("staff_locked", f"{MAX_FAILURES}_failures")]
    assert [entry.reason for entry in refusals].count("locked") == 1
    assert all("wrong" not in str(entry.detail) for entry in refusals)  # what was typed is never recorded


async def test_unknown_login_and_other_clinic_are_refused_alike(app_client: Client) -> None:
    await _staff(app_client)
    await clinic(app_client, *NANJING)
    now = utcnow()
    with pytest.raises(SignInRefused) as refused:
        await _sign_in(app_client, PASSWORD, now, login="nobody")
    assert refused.value.problem is SignInProblem.BAD_CREDENTIALS
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session, session.begin():
        with pytest.raises(SignInRefused):  # the right login and password, but at another clinic
            await sign_in(session, vault, clinic_code=NANJING[0], login="nurse-li", password=PASSWORD, now=now)


async def test_idle_sessions_expire_and_stay_expired(app_client: Client) -> None:
    await _staff(app_client)
    start = utcnow()
    token = await _sign_in(app_client, PASSWORD, start)
    vault = app_client.app[SERVICES].vault
    sessions = app_client.app[SESSIONS]
    moment = start
    # Used every 20 minutes, the session lives on (each use moves the idle clock)…
    for _ in range(3):
        moment += timedelta(minutes=20)
        async with sessions() as session, session.begin():
            assert await resume_session(session, vault, token, moment) is not None
    # …but left alone longer than the idle limit it ends, and coming back does not revive it.
    async with sessions() as session, session.begin():
        assert await resume_session(session, vault, token, moment + IDLE_LIMIT + timedelta(seconds=1)) is None
    async with sessions() as session, session.begin():
        assert await resume_session(session, vault, token, moment + timedelta(minutes=1)) is None


async def test_a_session_ends_after_a_working_day_however_busy(app_client: Client) -> None:
    await _staff(app_client)
    start = utcnow()
    token = await _sign_in(app_client, PASSWORD, start)
    vault = app_client.app[SERVICES].vault
    moment = start
    while moment - start < SESSION_LIMIT - timedelta(minutes=20):
        moment += timedelta(minutes=20)
        async with app_client.app[SESSIONS]() as session, session.begin():
            assert await resume_session(session, vault, token, moment) is not None
    async with app_client.app[SESSIONS]() as session, session.begin():
        assert await resume_session(session, vault, token, start + SESSION_LIMIT + timedelta(minutes=1)) is None


async def test_csrf_token_belongs_to_its_session(app_client: Client) -> None:
    vault = app_client.app[SERVICES].vault
    mine, theirs = "a" * 43, "b" * 43
    assert csrf_matches(vault, mine, csrf_token(vault, mine))
    assert not csrf_matches(vault, mine, csrf_token(vault, theirs))
    assert not csrf_matches(vault, mine, "")
    assert not csrf_matches(vault, "", csrf_token(vault, ""))


def test_role_table() -> None:
    assert not may(StaffRole.REGISTRAR, Permission.VACCINATE)
    assert may(StaffRole.REGISTRAR, Permission.REGISTER) and may(StaffRole.REGISTRAR, Permission.SCAN)
    assert may(StaffRole.VACCINATOR, Permission.VACCINATE) and not may(StaffRole.VACCINATOR, Permission.REGISTER)
    assert not may(StaffRole.OBSERVER, Permission.REGISTER) and not may(StaffRole.OBSERVER, Permission.VACCINATE)
    assert may(StaffRole.OBSERVER, Permission.FINISH)
    assert ALLOWED[StaffRole.ADMIN] == frozenset(Permission)
    assert all(Permission.VIEW in allowed for allowed in ALLOWED.values())


# --- the command: the password comes from a prompt or stdin, never from the arguments ---------------------


class _Stdin:
    """Standard input that is not a terminal, holding one line."""

    def __init__(self, line: str) -> None:
        self._line = line

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        line, self._line = self._line, ""
        return line


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A development home with keys, schema and the demo clinics, as the working directory."""
    for key in [key for key in os.environ if key.startswith("VAXBOT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("VAXBOT_ENV", "development")
    monkeypatch.setenv("VAXBOT_ENV_FILE", str(tmp_path / "no-such.env"))
    monkeypatch.setenv("VAXBOT_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("VAXBOT_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'vaxbot.db'}")
    monkeypatch.setenv("VAXBOT_SEED_DEMO_DATA", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    assert bot.cli.main(["init"]) == 0
    return tmp_path


def test_cli_adds_staff_with_the_password_from_stdin(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add = ["clinic", "staff", "add", "--clinic", "NT-CC-01", "--role", "vaccinator", "--login", "nurse-zhou"]
    monkeypatch.setattr(sys, "stdin", _Stdin("a long enough password\n"))
    assert bot.cli.main([*add, "--name", "周护士"]) == 0
    assert "login nurse-zhou, role vaccinator" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", _Stdin("a long enough password\n"))
    assert bot.cli.main(add) == 1  # the login is taken
    assert "already has" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Stdin("short\n"))
    assert bot.cli.main([*add[:-1], "nurse-wu"]) == 1
    assert "at least" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # there is no way to give the password as an argument
        bot.cli.main([*add[:-1], "nurse-wu", "--password", "a long enough password"])
    capsys.readouterr()
    assert bot.cli.main(["clinic", "staff", "unlock", "--clinic", "NT-CC-01", "--login", "nurse-zhou"]) == 0
    assert "may sign in again" in capsys.readouterr().out
    assert bot.cli.main(["clinic", "staff", "deactivate", "--clinic", "NT-CC-01", "--login", "nurse-zhou"]) == 0
    assert "can no longer sign in; 0 open session(s) ended" in capsys.readouterr().out
    assert bot.cli.main(["clinic", "staff", "deactivate", "--clinic", "NT-CC-01", "--login", "nobody"]) == 1


async def test_the_operator_unlocks_and_deactivates_staff(app_client: Client) -> None:
    await _staff(app_client)
    now = utcnow()
    for attempt in range(MAX_FAILURES):
        with pytest.raises(SignInRefused):
            await _sign_in(app_client, f"wrong {attempt}", now)
    with pytest.raises(SignInRefused) as refused:
        await _sign_in(app_client, PASSWORD, now)
    assert refused.value.problem is SignInProblem.LOCKED
    async with app_client.app[SESSIONS]() as session, session.begin():
        await unlock_staff(session, clinic_code=NANTONG[0], login="nurse-li")
    token = await _sign_in(app_client, PASSWORD, now)
    # She leaves the clinic: the open session ends at once, and no password works any more.
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session, session.begin():
        assert await deactivate_staff(session, clinic_code=NANTONG[0], login="nurse-li", now=now) == 1
    async with app_client.app[SESSIONS]() as session, session.begin():
        assert await resume_session(session, vault, token, now) is None
    with pytest.raises(SignInRefused) as refused:
        await _sign_in(app_client, PASSWORD, now)
    assert refused.value.problem is SignInProblem.BAD_CREDENTIALS
    async with app_client.app[SESSIONS]() as session, session.begin():
        with pytest.raises(StaffError):
            await unlock_staff(session, clinic_code=NANTONG[0], login="nobody")
        actions = [entry.action for entry in await entries_matching(session, since=now - timedelta(minutes=1))]
    assert "staff_unlocked" in actions and "staff_deactivated" in actions
