"""notices: a clinic's notices, the bookings each cancelled or moved, and one delivery per account told

The unused placeholder ``notices`` table of the initial schema is replaced.

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.drop_index("ix_notices_clinic_id")
    op.drop_table("notices")
    op.create_table(
        "notices",
        sa.Column("id", ID, nullable=False),
        sa.Column("clinic_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.String(length=256), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("windows", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("move_to_day", sa.Date(), nullable=True),
        sa.Column("move_to_start", sa.Time(), nullable=True),
        sa.Column("staff_id", ID, nullable=True),
        sa.Column("composed_by", sa.String(length=64), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("slots_closed", sa.Integer(), nullable=False),
        sa.Column("bookings_cancelled", sa.Integer(), nullable=False),
        sa.Column("bookings_moved", sa.Integer(), nullable=False),
        sa.Column("move_failed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_notices_clinic_id_clinics")),
        sa.ForeignKeyConstraint(["staff_id"], ["clinic_staff.id"], name=op.f("fk_notices_staff_id_clinic_staff")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
        sa.UniqueConstraint("request_key", name=op.f("uq_notices_request_key")),
    )
    op.create_index("ix_notices_clinic_id", "notices", ["clinic_id"], unique=False)
    op.create_table(
        "notice_bookings",
        sa.Column("id", ID, nullable=False),
        sa.Column("notice_id", ID, nullable=False),
        sa.Column("appointment_id", ID, nullable=False),
        sa.Column("vaccinee_id", ID, nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("moved_to_appointment_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["notices.id"], name=op.f("fk_notice_bookings_notice_id_notices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["appointment_id"], ["appointments.id"], name=op.f("fk_notice_bookings_appointment_id_appointments")
        ),
        sa.ForeignKeyConstraint(
            ["moved_to_appointment_id"],
            ["appointments.id"],
            name=op.f("fk_notice_bookings_moved_to_appointment_id_appointments"),
        ),
        sa.ForeignKeyConstraint(
            ["vaccinee_id"], ["vaccinees.id"], name=op.f("fk_notice_bookings_vaccinee_id_vaccinees")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_bookings")),
        sa.UniqueConstraint("notice_id", "appointment_id", name=op.f("uq_notice_bookings_notice_id_appointment_id")),
    )
    op.create_index("ix_notice_bookings_appointment_id", "notice_bookings", ["appointment_id"], unique=False)
    op.create_index("ix_notice_bookings_vaccinee_id", "notice_bookings", ["vaccinee_id"], unique=False)
    op.create_table(
        "notice_deliveries",
        sa.Column("id", ID, nullable=False),
        sa.Column("notice_id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("outbox_id", ID, nullable=True),
        sa.Column("problem", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notice_id"], ["notices.id"], name=op.f("fk_notice_deliveries_notice_id_notices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["platform_accounts.id"], name=op.f("fk_notice_deliveries_account_id_platform_accounts")
        ),
        sa.ForeignKeyConstraint(["outbox_id"], ["outbox.id"], name=op.f("fk_notice_deliveries_outbox_id_outbox")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notice_deliveries")),
        sa.UniqueConstraint("notice_id", "account_id", name=op.f("uq_notice_deliveries_notice_id_account_id")),
    )
    op.create_index("ix_notice_deliveries_notice_id", "notice_deliveries", ["notice_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notice_deliveries_notice_id", table_name="notice_deliveries")
    op.drop_table("notice_deliveries")
    op.drop_index("ix_notice_bookings_vaccinee_id", table_name="notice_bookings")
    op.drop_index("ix_notice_bookings_appointment_id", table_name="notice_bookings")
    op.drop_table("notice_bookings")
    op.drop_index("ix_notices_clinic_id", table_name="notices")
    op.drop_table("notices")
    op.create_table(
        "notices",
        sa.Column("id", ID, nullable=False),
        sa.Column("clinic_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_notices_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notices")),
    )
    op.create_index("ix_notices_clinic_id", "notices", ["clinic_id"], unique=False)
