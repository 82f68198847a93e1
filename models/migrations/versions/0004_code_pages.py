"""code pages (a fresh show-code QR on screen); queue counters, one open visit per file; reminder index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 10:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_VISIT = sa.text("status IN ('queued', 'registered', 'vaccinated', 'observing')")


def upgrade() -> None:
    op.create_table(
        "code_pages",
        sa.Column("id", ID, nullable=False),
        sa.Column("handle_hash", sa.String(length=64), nullable=False),
        sa.Column("certificate_id", ID, nullable=False),
        sa.Column("identity_id", ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_code_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["certificate_id"], ["certificates.id"], name=op.f("fk_code_pages_certificate_id_certificates")
        ),
        sa.ForeignKeyConstraint(["identity_id"], ["identities.id"], name=op.f("fk_code_pages_identity_id_identities")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_pages")),
        sa.UniqueConstraint("handle_hash", name=op.f("uq_code_pages_handle_hash")),
    )
    op.create_index(op.f("ix_code_pages_certificate_id"), "code_pages", ["certificate_id"], unique=False)
    op.create_table(
        "queue_counters",
        sa.Column("clinic_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_queue_counters_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("clinic_id", "day", name=op.f("pk_queue_counters")),
    )
    op.create_index(
        "uq_visits_open",
        "visits",
        ["vaccinee_id", "clinic_id", "visit_date"],
        unique=True,
        sqlite_where=OPEN_VISIT,
        postgresql_where=OPEN_VISIT,
    )
    op.create_index("ix_reminders_status_send_at", "reminders", ["status", "send_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reminders_status_send_at", table_name="reminders")
    op.drop_index("uq_visits_open", table_name="visits")
    op.drop_table("queue_counters")
    op.drop_index(op.f("ix_code_pages_certificate_id"), table_name="code_pages")
    op.drop_table("code_pages")
