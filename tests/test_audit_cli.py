"""``vaxbot audit show``: a certificate's audit rows, or rows by action and time, oldest first, in China time."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import bot.cli
from bot.core.config import load_settings
from bot.core.db import create_engine, migrate, sessionmaker
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import CHILD, PARENT
from models import AuditEntry, Certificate, FileProfile, Identity, Vaccinee
from models.registry import PROFILE_FIELD


async def _prepare(url: str, keys_dir: Path) -> tuple[int, int]:
    """A migrated database with two certificates; audit rows for the first, none for the second."""
    settings = load_settings(environ={}, env_file=Path("/nonexistent/.env"), database_url=url, keys_dir=keys_dir)
    engine = create_engine(settings)
    vault = Vault(load_keyring(keys_dir))
    try:
        await migrate(engine)
        async with sessionmaker(engine)() as session, session.begin():
            holder = Identity(
                id_number_hash=vault.digest("id_number", PARENT.id_number),
                id_number_enc=vault.seal("id_number", PARENT.id_number),
                name_enc=vault.seal("name", PARENT.name),
                verified_at=datetime(2025, 3, 1, tzinfo=UTC),
                verification_method="face",
            )
            session.add(holder)
            files = [
                Vaccinee(
                    registry_ref=f"T-{n}",
                    id_number_hash=vault.digest("id_number", CHILD.id_number + str(n)),
                    id_number_enc=vault.seal("id_number", CHILD.id_number),
                    name_enc=vault.seal("name", CHILD.name),
                    birth_date_enc=vault.seal("birth_date", CHILD.birth.isoformat()),
                    profile_enc=vault.seal(PROFILE_FIELD, FileProfile("M", "320602", None).to_json()),
                    effective_from=date(2020, 1, 1),
                )
                for n in range(2)
            ]
            session.add_all(files)
            await session.flush()
            certificates = [
                Certificate(
                    vaccinee_id=file.id,
                    holder_identity_id=holder.id,
                    kind="child",
                    claimed_at=datetime(2025, 3, 1, tzinfo=UTC),
                    claimed_via="wechat",
                )
                for file in files
            ]
            session.add_all(certificates)
            await session.flush()
            first = certificates[0]
            rows = [
                # 16:30 UTC is half past midnight the next day in China.
                (datetime(2025, 3, 1, 16, 30, tzinfo=UTC), "grant", "grandmother", "wechat", first.id),
                (datetime(2025, 3, 2, 1, 5, 9, tzinfo=UTC), "records_view", "grantee", "alipay", first.id),
                (datetime(2025, 3, 3, 2, 0, tzinfo=UTC), "revoke", "grandmother", None, first.id),
                (datetime(2025, 3, 4, 2, 0, tzinfo=UTC), "records_view", "holder", "wechat", certificates[1].id),
            ]
            for at, action, reason, platform, certificate_id in rows:
                session.add(
                    AuditEntry(
                        at=at,
                        actor_kind="identity",
                        # A chat account's action names the account too; the third row came from no chat.
                        actor_ref=f"identity:{holder.id}/account:{7 if platform == 'wechat' else 8}"
                        if platform
                        else f"identity:{holder.id}",
                        action=action,
                        reason=reason,
                        certificate_id=certificate_id,
                        vaccinee_id=None,
                        platform=platform,
                        detail={"grant_id": 7},
                    )
                )
            return first.id, certificates[1].id
    finally:
        await engine.dispose()


@pytest.fixture
def audit_db(tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """The command's environment points at a temporary SQLite database holding a few audit rows."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    ids = asyncio.run(_prepare(url, keys_dir))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAXBOT_ENV", "test")
    monkeypatch.setenv("VAXBOT_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("VAXBOT_DATABASE_URL", url)
    monkeypatch.setenv("VAXBOT_KEYS_DIR", str(keys_dir))
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    return ids


def test_shows_the_rows_of_one_certificate_in_china_time(
    audit_db: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = audit_db
    assert bot.cli.main(["audit", "show", "--certificate", str(first)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"certificate {first}: 3 audit entries"
    assert lines[1].split() == ["time", "(China)", "actor", "action", "reason", "platform"]
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["2025-03-02", "00:30:00", "+08:00", "identity:1/account:7", "grant", "grandmother", "wechat"],
        ["2025-03-02", "09:05:09", "+08:00", "identity:1/account:8", "records_view", "grantee", "alipay"],
        ["2025-03-03", "10:00:00", "+08:00", "identity:1", "revoke", "grandmother", "-"],
    ]


def test_a_certificate_without_rows_and_an_unknown_id(
    audit_db: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _, second = audit_db
    assert bot.cli.main(["audit", "show", "--certificate", str(second)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"certificate {second}: 1 audit entry\n")
    assert "2025-03-04 10:00:00 +08:00" in out and "grant" not in out
    assert bot.cli.main(["audit", "show", "--certificate", "99999"]) == 0
    assert capsys.readouterr().out.strip() == "no certificate with id 99999"


def test_a_filter_is_required(audit_db: tuple[int, int], capsys: pytest.CaptureFixture[str]) -> None:
    assert bot.cli.main(["audit", "show"]) == 2
    err = capsys.readouterr().err
    assert "--certificate" in err and "--action" in err and "--since" in err
    with pytest.raises(SystemExit) as exited:
        bot.cli.main(["audit", "show", "--since", "yesterday"])
    assert exited.value.code == 2 and "--since" in capsys.readouterr().err


def test_rows_by_action_and_time_with_their_certificates(
    audit_db: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = audit_db
    assert bot.cli.main(["audit", "show", "--action", "records_view"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 audit entries (action records_view)"
    assert lines[1].split() == ["time", "(China)", "actor", "action", "reason", "platform", "certificate", "file"]
    assert [line.split()[3:] for line in lines[2:]] == [
        ["identity:1/account:8", "records_view", "grantee", "alipay", str(first), "-"],
        ["identity:1/account:7", "records_view", "holder", "wechat", str(second), "-"],
    ]
    # --since is a China date: the 3rd in China starts at 16:00 UTC on the 2nd.
    assert bot.cli.main(["audit", "show", "--since", "2025-03-03"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 audit entries (since 2025-03-03 00:00:00 +08:00)"
    assert [line.split()[4] for line in out[2:]] == ["revoke", "records_view"]
    assert bot.cli.main(["audit", "show", "--since", "2025-03-02T09:05:09", "--action", "records_view"]) == 0
    assert capsys.readouterr().out.startswith("2 audit entries (action records_view, since 2025-03-02 09:05:09 +08:00)")
    # Filters combine with a certificate too.
    assert bot.cli.main(["audit", "show", "--certificate", str(first), "--action", "grant"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"certificate {first}: 1 audit entry (action grant)" and len(out) == 3
