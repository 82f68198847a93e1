"""sealed health records: dose details, file profiles and reminders sealed with the vault, plain columns dropped

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:20:00.000000

The data step needs the keyring, so it cannot be plain SQL. It runs here, in Python, between adding the
sealed columns and dropping the plain ones, in the same transaction (PostgreSQL) or the same run (SQLite),
so a database is never left half converted with its plain columns gone. The vault comes from whoever runs
the migration: the app and ``vaxbot`` hand theirs in (``migrate(engine, vault)``); a bare ``alembic``
run opens the configured keys directory (see env.py). A database with no files or doses needs no key.

The downgrade opens them again into the plain columns (with the same vault), for development resets.

The JSON written here is the format ``models.registry.FileProfile`` and ``DoseDetail`` read; it is
spelled out rather than imported because a migration must keep working when the models change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any, Protocol

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The field names bound into the ciphertexts (models.registry's PROFILE_FIELD, DOSE_FIELD, DOSE_KEY_FIELD).
PROFILE_FIELD = "vaccinee_profile"
DOSE_FIELD = "dose_detail"
DOSE_KEY_FIELD = "dose_key"
# models.clinic's REMINDER_FIELD and REMINDER_KEY_FIELD: a reminder names the child's next dose.
REMINDER_FIELD = "reminder_detail"
REMINDER_KEY_FIELD = "reminder_key"


class _Vault(Protocol):
    def seal(self, field: str, value: str) -> bytes: ...

    def open(self, field: str, blob: bytes) -> str: ...

    def digest(self, field: str, value: str) -> str: ...


def _dump(values: dict[str, object]) -> str:
    return json.dumps(values, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _vault() -> _Vault:
    opener: Callable[[], _Vault] | None = context.config.attributes.get("open_vault")
    if opener is None:
        raise RuntimeError("migration 0005 seals stored health records and needs the keyring")
    return opener()


_vaccinees = sa.table(
    "vaccinees",
    sa.column("id", ID),
    sa.column("birth_date_enc", sa.LargeBinary()),
    sa.column("birth_year", sa.Integer()),
    sa.column("sex", sa.String()),
    sa.column("region_code", sa.String()),
    sa.column("clinic_id", ID),
    sa.column("stage", sa.String()),
    sa.column("profile_enc", sa.LargeBinary()),
)
_doses = sa.table(
    "doses",
    sa.column("id", ID),
    sa.column("vaccinee_id", ID),
    sa.column("vaccine_code", sa.String()),
    sa.column("dose_number", sa.Integer()),
    sa.column("given_on", sa.Date()),
    sa.column("clinic_id", ID),
    sa.column("lot_number", sa.String()),
    sa.column("source", sa.String()),
    sa.column("dose_key", sa.String()),
    sa.column("detail_enc", sa.LargeBinary()),
)
_reminders = sa.table(
    "reminders",
    sa.column("id", ID),
    sa.column("job_key", sa.String()),
    sa.column("vaccinee_id", ID),
    sa.column("vaccine_code", sa.String()),
    sa.column("dose_number", sa.Integer()),
    sa.column("due_on", sa.Date()),
    sa.column("detail_enc", sa.LargeBinary()),
)


def _update_many(table: sa.TableClause, rows: list[dict[str, object]]) -> None:
    """``UPDATE table SET … WHERE id = …`` for many rows, a thousand per round trip (executemany)."""
    if not rows:
        return
    columns = [key for key in rows[0] if key != "id"]
    # Why the "new_" names: a bound parameter may not share its name with a column the statement sets.
    statement = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("row_id"))
        .values({column: sa.bindparam(f"new_{column}") for column in columns})
    )
    bind = op.get_bind()
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        bind.execute(statement, [{"row_id": row["id"]} | {f"new_{c}": row[c] for c in columns} for row in chunk])


BATCH = 1000  # rows read, converted and written per round (a registry's millions of doses never sit in memory)


def _batches(query: sa.Select[Any], id_column: sa.ColumnClause[Any]) -> Iterator[Sequence[sa.Row[Any]]]:
    """The query's rows in id order, ``BATCH`` at a time (keyset pagination: each round starts after the last id)."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(query.where(id_column > last).order_by(id_column).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


class _LazyVault:
    """The keyring, read only when a row needs it (an empty database never asks for a key)."""

    def __init__(self) -> None:
        self._vault: _Vault | None = None

    def __call__(self) -> _Vault:
        if self._vault is None:
            self._vault = _vault()
        return self._vault


def _seal_rows() -> None:
    """Seal every stored profile, dose and reminder (in Python: the keyring never reaches the database)."""
    vault = _LazyVault()
    reminders = sa.select(
        _reminders.c.id,
        _reminders.c.vaccinee_id,
        _reminders.c.vaccine_code,
        _reminders.c.dose_number,
        _reminders.c.due_on,
    )
    for batch in _batches(reminders, _reminders.c.id):
        sealed: list[dict[str, object]] = []
        for reminder in batch:
            about = {
                "vaccine_code": reminder.vaccine_code,
                "dose_number": reminder.dose_number,
                "due_on": reminder.due_on.isoformat(),
            }
            job_key = vault().digest(
                REMINDER_KEY_FIELD, f"{reminder.vaccinee_id}:{reminder.vaccine_code}:{reminder.dose_number}"
            )
            sealed.append(
                {"id": reminder.id, "job_key": job_key, "detail_enc": vault().seal(REMINDER_FIELD, _dump(about))}
            )
        _update_many(_reminders, sealed)
    files = sa.select(
        _vaccinees.c.id, _vaccinees.c.sex, _vaccinees.c.region_code, _vaccinees.c.clinic_id, _vaccinees.c.stage
    )
    for batch in _batches(files, _vaccinees.c.id):
        sealed = []
        for row in batch:
            profile = {"sex": row.sex, "region_code": row.region_code, "clinic_id": row.clinic_id, "stage": row.stage}
            sealed.append({"id": row.id, "profile_enc": vault().seal(PROFILE_FIELD, _dump(profile))})
        _update_many(_vaccinees, sealed)
    doses = sa.select(
        _doses.c.id,
        _doses.c.vaccinee_id,
        _doses.c.vaccine_code,
        _doses.c.dose_number,
        _doses.c.given_on,
        _doses.c.clinic_id,
        _doses.c.lot_number,
        _doses.c.source,
    )
    for batch in _batches(doses, _doses.c.id):
        sealed = []
        for dose in batch:
            detail = {
                "vaccine_code": dose.vaccine_code,
                "dose_number": dose.dose_number,
                "given_on": dose.given_on.isoformat(),
                "clinic_id": dose.clinic_id,
                "lot_number": dose.lot_number,
                "source": dose.source,
            }
            key = vault().digest(DOSE_KEY_FIELD, f"{dose.vaccinee_id}:{dose.vaccine_code}:{dose.dose_number}")
            sealed.append({"id": dose.id, "dose_key": key, "detail_enc": vault().seal(DOSE_FIELD, _dump(detail))})
        _update_many(_doses, sealed)


def upgrade() -> None:
    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail_enc", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("vaccinees", schema=None) as batch_op:
        batch_op.add_column(sa.Column("profile_enc", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("doses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dose_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("detail_enc", sa.LargeBinary(), nullable=True))

    _seal_rows()

    with op.batch_alter_table("reminders", schema=None) as batch_op:
        for column in ("vaccine_code", "dose_number", "due_on"):
            batch_op.drop_column(column)
        batch_op.alter_column("detail_enc", existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table("doses", schema=None) as batch_op:
        batch_op.drop_constraint("uq_doses_vaccinee_id_vaccine_code_dose_number", type_="unique")
        batch_op.drop_constraint("fk_doses_clinic_id_clinics", type_="foreignkey")
        for column in ("vaccine_code", "dose_number", "given_on", "clinic_id", "lot_number", "source"):
            batch_op.drop_column(column)
        batch_op.alter_column("dose_key", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("detail_enc", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_doses_dose_key"), ["dose_key"])
    with op.batch_alter_table("vaccinees", schema=None) as batch_op:
        batch_op.drop_index("ix_vaccinees_clinic_id")
        batch_op.drop_index("ix_vaccinees_region_code")
        batch_op.drop_constraint("fk_vaccinees_clinic_id_clinics", type_="foreignkey")
        for column in ("sex", "birth_year", "region_code", "clinic_id", "stage"):
            batch_op.drop_column(column)
        batch_op.alter_column("profile_enc", existing_type=sa.LargeBinary(), nullable=False)


def _open_rows() -> None:
    """Write every sealed profile, dose and reminder back into the plain columns (the downgrade's data step)."""
    vault = _LazyVault()
    reminders = sa.select(_reminders.c.id, _reminders.c.vaccinee_id, _reminders.c.detail_enc)
    for batch in _batches(reminders, _reminders.c.id):
        opened: list[dict[str, object]] = []
        for reminder in batch:
            about = json.loads(vault().open(REMINDER_FIELD, reminder.detail_enc))
            job_key = f"dose:{reminder.vaccinee_id}:{about['vaccine_code']}:{about['dose_number']}"
            about["due_on"] = date.fromisoformat(about["due_on"])
            opened.append({"id": reminder.id, "job_key": job_key, **about})
        _update_many(_reminders, opened)
    files = sa.select(_vaccinees.c.id, _vaccinees.c.profile_enc, _vaccinees.c.birth_date_enc)
    for batch in _batches(files, _vaccinees.c.id):
        opened = []
        for row in batch:
            profile = json.loads(vault().open(PROFILE_FIELD, row.profile_enc))
            birth_year = int(vault().open("birth_date", row.birth_date_enc)[:4])
            opened.append({"id": row.id, "birth_year": birth_year, **profile})
        _update_many(_vaccinees, opened)
    doses = sa.select(_doses.c.id, _doses.c.detail_enc)
    for batch in _batches(doses, _doses.c.id):
        opened = []
        for dose in batch:
            detail = json.loads(vault().open(DOSE_FIELD, dose.detail_enc))
            detail["given_on"] = date.fromisoformat(detail["given_on"])
            opened.append({"id": dose.id, **detail})
        _update_many(_doses, opened)


def downgrade() -> None:
    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vaccine_code", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("dose_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("due_on", sa.Date(), nullable=True))
    with op.batch_alter_table("vaccinees", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sex", sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column("birth_year", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("region_code", sa.String(length=6), nullable=True))
        batch_op.add_column(sa.Column("clinic_id", ID, nullable=True))
        batch_op.add_column(sa.Column("stage", sa.String(length=16), nullable=True))
    with op.batch_alter_table("doses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vaccine_code", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("dose_number", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("given_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("clinic_id", ID, nullable=True))
        batch_op.add_column(sa.Column("lot_number", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("source", sa.String(length=16), nullable=True))

    _open_rows()

    with op.batch_alter_table("reminders", schema=None) as batch_op:
        batch_op.drop_column("detail_enc")
        for column, kind in (
            ("vaccine_code", sa.String(length=32)),
            ("dose_number", sa.Integer()),
            ("due_on", sa.Date()),
        ):
            batch_op.alter_column(column, existing_type=kind, nullable=False)
    with op.batch_alter_table("doses", schema=None) as batch_op:
        batch_op.drop_constraint("uq_doses_dose_key", type_="unique")
        batch_op.drop_column("dose_key")
        batch_op.drop_column("detail_enc")
        for column, kind in (
            ("vaccine_code", sa.String(length=32)),
            ("dose_number", sa.Integer()),
            ("given_on", sa.Date()),
            ("lot_number", sa.String(length=64)),
            ("source", sa.String(length=16)),
        ):
            batch_op.alter_column(column, existing_type=kind, nullable=False)
        batch_op.create_foreign_key("fk_doses_clinic_id_clinics", "clinics", ["clinic_id"], ["id"])
        batch_op.create_unique_constraint(
            "uq_doses_vaccinee_id_vaccine_code_dose_number", ["vaccinee_id", "vaccine_code", "dose_number"]
        )
    with op.batch_alter_table("vaccinees", schema=None) as batch_op:
        batch_op.drop_column("profile_enc")
        for column, kind in (
            ("sex", sa.String(length=1)),
            ("birth_year", sa.Integer()),
            ("region_code", sa.String(length=6)),
            ("stage", sa.String(length=16)),
        ):
            batch_op.alter_column(column, existing_type=kind, nullable=False)
        batch_op.create_foreign_key("fk_vaccinees_clinic_id_clinics", "clinics", ["clinic_id"], ["id"])
        batch_op.create_index("ix_vaccinees_clinic_id", ["clinic_id"], unique=False)
        batch_op.create_index("ix_vaccinees_region_code", ["region_code"], unique=False)
