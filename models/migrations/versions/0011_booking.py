"""booking: when slots open, programme or self-paid with a price, closures; day-before reminders sent

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 19:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("slots") as batch:
        batch.add_column(sa.Column("opens_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("funding", sa.String(length=16), nullable=False, server_default="programme"))
        batch.add_column(sa.Column("price_fen", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_slots_clinic_vaccine_starts", "slots", ["clinic_id", "vaccine_code", "starts_at"], unique=False)
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.drop_column("reminded_at")
    op.drop_index("ix_slots_clinic_vaccine_starts", table_name="slots")
    with op.batch_alter_table("slots") as batch:
        batch.drop_column("closed_at")
        batch.drop_column("price_fen")
        batch.drop_column("funding")
        batch.drop_column("opens_at")
