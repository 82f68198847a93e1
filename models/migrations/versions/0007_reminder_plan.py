"""reminder plans: when each claimed child's file must next be planned (incremental reminder planning)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 18:00:00.000000

No rows are written here: the planner adopts every claimed child that has no plan yet on its first pass
(the same work the hourly full pass did), so an existing database needs no keyring for this step.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "reminder_plans",
        sa.Column("vaccinee_id", ID, autoincrement=False, nullable=False),
        sa.Column("plan_from", sa.Date(), nullable=True),
        sa.Column("next_enc", sa.LargeBinary(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vaccinee_id"],
            ["vaccinees.id"],
            name=op.f("fk_reminder_plans_vaccinee_id_vaccinees"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("vaccinee_id", name=op.f("pk_reminder_plans")),
    )
    op.create_index(op.f("ix_reminder_plans_plan_from"), "reminder_plans", ["plan_from"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reminder_plans_plan_from"), table_name="reminder_plans")
    op.drop_table("reminder_plans")
