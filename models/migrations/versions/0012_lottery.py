"""lottery: lotteries for lottery-mode slots (committed seed, registration window) and their entries

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lotteries",
        sa.Column("id", ID, nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("slot_id", ID, nullable=False),
        sa.Column("clinic_id", ID, nullable=False),
        sa.Column("vaccine_code", sa.String(length=32), nullable=False),
        sa.Column("places", sa.Integer(), nullable=False),
        sa.Column("registration_opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registration_closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seed_sha256", sa.String(length=64), nullable=False),
        sa.Column("seed_enc", sa.LargeBinary(), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("confirm_hours", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_lotteries_clinic_id_clinics")),
        sa.ForeignKeyConstraint(["slot_id"], ["slots.id"], name=op.f("fk_lotteries_slot_id_slots")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lotteries")),
        sa.UniqueConstraint("public_id", name=op.f("uq_lotteries_public_id")),
        sa.UniqueConstraint("slot_id", name=op.f("uq_lotteries_slot_id")),
    )
    op.create_index(op.f("ix_lotteries_clinic_id"), "lotteries", ["clinic_id"], unique=False)
    op.create_index(op.f("ix_lotteries_registration_closes_at"), "lotteries", ["registration_closes_at"], unique=False)
    op.create_table(
        "lottery_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("lottery_id", ID, nullable=False),
        sa.Column("vaccinee_id", ID, nullable=False),
        sa.Column("entered_by_identity_id", ID, nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("appointment_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome_told_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("offer_told_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["appointment_id"], ["appointments.id"], name=op.f("fk_lottery_entries_appointment_id_appointments")
        ),
        sa.ForeignKeyConstraint(
            ["entered_by_identity_id"],
            ["identities.id"],
            name=op.f("fk_lottery_entries_entered_by_identity_id_identities"),
        ),
        sa.ForeignKeyConstraint(["lottery_id"], ["lotteries.id"], name=op.f("fk_lottery_entries_lottery_id_lotteries")),
        sa.ForeignKeyConstraint(
            ["vaccinee_id"], ["vaccinees.id"], name=op.f("fk_lottery_entries_vaccinee_id_vaccinees")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lottery_entries")),
        sa.UniqueConstraint("lottery_id", "entry_hash", name=op.f("uq_lottery_entries_lottery_id_entry_hash")),
        sa.UniqueConstraint("lottery_id", "vaccinee_id", name=op.f("uq_lottery_entries_lottery_id_vaccinee_id")),
    )
    op.create_index(op.f("ix_lottery_entries_vaccinee_id"), "lottery_entries", ["vaccinee_id"], unique=False)
    op.create_index("ix_lottery_entries_status", "lottery_entries", ["lottery_id", "status", "rank"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_lottery_entries_status", table_name="lottery_entries")
    op.drop_index(op.f("ix_lottery_entries_vaccinee_id"), table_name="lottery_entries")
    op.drop_table("lottery_entries")
    op.drop_index(op.f("ix_lotteries_registration_closes_at"), table_name="lotteries")
    op.drop_index(op.f("ix_lotteries_clinic_id"), table_name="lotteries")
    op.drop_table("lotteries")
