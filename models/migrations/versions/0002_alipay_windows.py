"""alipay customer-service windows: platform_accounts.enter_sent_on

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:23:04.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("platform_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enter_sent_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("platform_accounts", schema=None) as batch_op:
        batch_op.drop_column("enter_sent_on")
