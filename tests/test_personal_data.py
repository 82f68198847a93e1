"""Personal data: field encryption, keyed hashes, masking, validators, log redaction, the audit log."""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from bot.core.audit import entries_for_certificate, record_access
from bot.core.keys import Keyring, generate_dev_keys, load_keyring
from bot.core.logs import JsonFormatter, redact
from bot.core.pii import Vault, VaultError, mask_id_number, mask_name, mask_phone
from bot.core.validators import InvalidIdNumber, id_check_char, normalize_mobile, parse_id_number
from bot.dev.demo import CHILD, PARENT, demo_id_number, seed_demo
from models import AuditEntry

VALID = ["11010519491231002X", "440524188001010014", "11010219840406970X"]
INVALID_CHECK = "110105194912310021"
INVALID_DATE = "440524189001010014"


def vault(tmp_path: Path) -> Vault:
    generate_dev_keys(tmp_path)
    return Vault(load_keyring(tmp_path))


def test_seal_open_round_trip_and_fresh_nonces(tmp_path: Path) -> None:
    v = vault(tmp_path)
    a, b = v.seal("name", "张三"), v.seal("name", "张三")
    assert a != b
    assert v.open("name", a) == v.open("name", b) == "张三"
    assert "张三".encode() not in a


def test_ciphertext_is_bound_to_its_field(tmp_path: Path) -> None:
    v = vault(tmp_path)
    sealed = v.seal("id_number", VALID[0])
    with pytest.raises(VaultError):
        v.open("name", sealed)


def test_tampering_is_detected(tmp_path: Path) -> None:
    v = vault(tmp_path)
    sealed = bytearray(v.seal("phone", "13800000000"))
    sealed[-1] ^= 1
    with pytest.raises(VaultError):
        v.open("phone", bytes(sealed))
    with pytest.raises(VaultError):
        v.open("phone", b"\x01\x01short")


def test_key_rotation_keeps_old_rows_readable(tmp_path: Path) -> None:
    old = Keyring(data_keys={1: bytes(32)}, active_kid=1, hash_key=b"h" * 32, dev=True)
    sealed = Vault(old).seal("name", "李四")
    new = Keyring(data_keys={1: bytes(32), 2: b"\x01" * 32}, active_kid=2, hash_key=b"h" * 32, dev=True)
    rotated = Vault(new)
    assert rotated.open("name", sealed) == "李四"
    assert rotated.seal("name", "李四")[1] == 2
    assert rotated.digest("id_number", VALID[0]) == Vault(old).digest("id_number", VALID[0])


def test_keyed_hash_depends_on_key_and_field(tmp_path: Path) -> None:
    v1 = vault(tmp_path / "a")
    v2 = vault(tmp_path / "b")
    assert v1.digest("id_number", VALID[0]) == v1.digest("id_number", VALID[0])
    assert v1.digest("id_number", VALID[0]) != v2.digest("id_number", VALID[0])
    assert v1.digest("id_number", VALID[0]) != v1.digest("phone", VALID[0])


def test_keyring_file_is_private_and_validated(tmp_path: Path) -> None:
    path = generate_dev_keys(tmp_path)
    assert path.stat().st_mode & 0o077 == 0
    assert load_keyring(tmp_path).dev is True
    raw = json.loads(path.read_text())
    raw["active_kid"] = 9
    path.write_text(json.dumps(raw))
    from bot.core.keys import KeyringError

    with pytest.raises(KeyringError):
        load_keyring(tmp_path)


def test_masks() -> None:
    assert mask_id_number("32060220190101123X") == "3206**********123X"
    assert mask_name("张三") == "张*"
    assert mask_name("欧阳明月") == "欧**月"
    assert mask_name("王") == "*"
    assert mask_phone("13812345678") == "138****5678"


# --- ID numbers and phones ----------------------------------------------------------------------


@pytest.mark.parametrize("value", VALID)
def test_documented_valid_id_numbers(value: str) -> None:
    assert parse_id_number(value).value == value


def test_lower_case_x_and_spaces_are_normalised() -> None:
    parsed = parse_id_number(" 11010519491231002x ")
    assert parsed.value == "11010519491231002X"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.male is False
    assert parse_id_number("440524188001010014").male is True


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (INVALID_CHECK, "id_check_char"),
        (INVALID_DATE, "id_check_char"),
        ("11010519491331002X", "id_birth_date"),
        ("1101051949123100", "id_length"),
        ("11010519491231002Y", "id_chars"),
        ("X10105194912310021", "id_chars"),
        ("", "id_length"),
    ],
)
def test_invalid_id_numbers_name_the_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidIdNumber) as info:
        parse_id_number(value)
    assert info.value.reason == reason


def test_future_birth_date_is_refused() -> None:
    value = demo_id_number("320602", date(2030, 1, 1), 1)
    with pytest.raises(InvalidIdNumber) as info:
        parse_id_number(value, today=date(2026, 11, 23))
    assert info.value.reason == "id_birth_date"


def test_every_reason_has_a_message() -> None:
    from bot.core.catalogue import MESSAGES

    for reason in ("id_length", "id_chars", "id_birth_date", "id_check_char", "phone_invalid"):
        assert reason in MESSAGES


@given(
    st.dates(min_value=date(1800, 1, 1), max_value=date(2026, 1, 1)),
    st.integers(min_value=0, max_value=999),
    st.sampled_from(["110105", "320602", "320213", "440524"]),
)
def test_generated_numbers_validate_and_any_single_digit_change_is_caught(birth: date, seq: int, region: str) -> None:
    value = demo_id_number(region, birth, seq)
    assert parse_id_number(value, today=date(2026, 11, 23)).birth_date == birth
    for position in (0, 5, 14, 16):
        digit = int(value[position])
        changed = value[:position] + str((digit + 1) % 10) + value[position + 1 :]
        assert id_check_char(changed[:17]) != changed[17]


@given(st.text(max_size=30))
def test_validator_never_crashes(text: str) -> None:
    try:
        parse_id_number(text)
    except InvalidIdNumber as exc:
        assert exc.reason in {"id_length", "id_chars", "id_birth_date", "id_check_char"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13812345678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("0086-19912345678", "19912345678"),
        ("12812345678", None),
        ("1381234567", None),
        ("138123456789", None),
        ("abc", None),
    ],
)
def test_mobile_numbers(raw: str, expected: str | None) -> None:
    assert normalize_mobile(raw) == expected


# --- logs -----------------------------------------------------------------------------------------


def test_logs_never_carry_id_numbers_or_phones() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "user %s called from %s", (VALID[0], "13812345678"), None
    )
    record.detail = f"phone=+8613812345678 id={VALID[1]}"
    line = JsonFormatter().format(record)
    for secret in (VALID[0], VALID[1], "13812345678"):
        assert secret not in line
    assert "[id-redacted]" in line and "[phone-redacted]" in line
    assert redact("msg:6054768590064713728") == "msg:6054768590064713728"  # a WeChat MsgId is not an ID number


# --- the database ---------------------------------------------------------------------------------


async def test_demo_data_is_encrypted_at_rest(settings: object, keys_dir: Path, database_url: str) -> None:
    from bot.core.db import create_engine, sessionmaker
    from models import Vaccinee

    engine = create_engine(settings)  # type: ignore[arg-type]
    sessions = sessionmaker(engine)
    v = Vault(load_keyring(keys_dir))
    assert await seed_demo(sessions, v) is True
    assert await seed_demo(sessions, v) is False  # idempotent
    async with sessions() as session:
        child = (await session.scalars(select(Vaccinee).where(Vaccinee.registry_ref == CHILD.ref))).one()
        assert v.open("name", child.name_enc) == CHILD.name
        assert child.id_number_hash == v.digest("id_number", CHILD.id_number)
    await engine.dispose()
    if database_url.startswith("sqlite"):
        raw = Path(database_url.split("///", 1)[1]).read_bytes()
        for secret in (CHILD.id_number, PARENT.id_number, CHILD.name, PARENT.name, "1992-03-14"):
            assert secret.encode() not in raw, secret


async def test_audit_log_is_append_only(settings: object) -> None:
    from bot.core.db import create_engine, sessionmaker

    engine = create_engine(settings)  # type: ignore[arg-type]
    sessions = sessionmaker(engine)
    async with sessions() as session, session.begin():
        record_access(session, actor_kind="system", actor_ref="test", action="view", reason="unit test")
    async with sessions() as session:
        assert len(await entries_for_certificate(session, 1)) == 0
        assert len((await session.scalars(select(AuditEntry))).all()) == 1
    for statement in (update(AuditEntry).values(reason="rewritten"), delete(AuditEntry)):
        with pytest.raises(Exception, match="append-only"):
            async with sessions() as session, session.begin():
                await session.execute(statement)
    async with sessions() as session:
        assert (await session.scalars(select(AuditEntry.reason))).one() == "unit test"
    await engine.dispose()
