"""mini programs: subscription consents, login sessions, union ids

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscription_consents",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("template_id", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("push_seen", sa.Boolean(), nullable=False),
        sa.Column("page_seen", sa.Boolean(), nullable=False),
        sa.Column("given_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spent_for", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["platform_accounts.id"], name=op.f("fk_subscription_consents_account_id_platform_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_consents")),
    )
    op.create_index(
        "ix_subscription_consents_unspent",
        "subscription_consents",
        ["account_id", "template_id", "spent_at"],
        unique=False,
    )
    op.create_table(
        "mp_sessions",
        sa.Column("id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("session_key_enc", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["platform_accounts.id"], name=op.f("fk_mp_sessions_account_id_platform_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mp_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_mp_sessions_token_hash")),
    )
    op.create_index(op.f("ix_mp_sessions_account_id"), "mp_sessions", ["account_id"], unique=False)
    op.create_table(
        "account_unions",
        sa.Column("id", ID, nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("union_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["platform_accounts.id"], name=op.f("fk_account_unions_account_id_platform_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_unions")),
        sa.UniqueConstraint("account_id", name=op.f("uq_account_unions_account_id")),
    )
    op.create_index(op.f("ix_account_unions_union_hash"), "account_unions", ["union_hash"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_account_unions_union_hash"), table_name="account_unions")
    op.drop_table("account_unions")
    op.drop_index(op.f("ix_mp_sessions_account_id"), table_name="mp_sessions")
    op.drop_table("mp_sessions")
    op.drop_index("ix_subscription_consents_unspent", table_name="subscription_consents")
    op.drop_table("subscription_consents")
