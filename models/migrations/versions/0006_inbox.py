"""inbox: acknowledged updates not yet processed, so that a crash loses none

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", ID, nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=160), nullable=False),
        sa.Column("update_enc", sa.LargeBinary(), nullable=False),
        sa.Column("owner", sa.String(length=32), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        sa.UniqueConstraint("platform", "app_id", "dedupe_key", name=op.f("uq_inbox_platform_app_id_dedupe_key")),
    )
    op.create_index(op.f("ix_inbox_lease_until"), "inbox", ["lease_until"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_inbox_lease_until"), table_name="inbox")
    op.drop_table("inbox")
