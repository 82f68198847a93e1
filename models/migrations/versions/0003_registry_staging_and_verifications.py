"""registry batches staged until their effective date; face-verification attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 18:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "registry_batches",
        sa.Column("id", ID, nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_batches")),
    )
    op.create_index(op.f("ix_registry_batches_effective_from"), "registry_batches", ["effective_from"], unique=False)
    op.create_table(
        "registry_staged",
        sa.Column("id", ID, nullable=False),
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("registry_ref", sa.String(length=64), nullable=False),
        sa.Column("payload_enc", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["registry_batches.id"],
            name=op.f("fk_registry_staged_batch_id_registry_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_staged")),
    )
    op.create_index(op.f("ix_registry_staged_batch_id"), "registry_staged", ["batch_id"], unique=False)
    op.create_table(
        "verifications",
        sa.Column("id", ID, nullable=False),
        sa.Column("handle_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", ID, nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("id_number_hash", sa.String(length=64), nullable=False),
        sa.Column("id_number_enc", sa.LargeBinary(), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["platform_accounts.id"], name=op.f("fk_verifications_account_id_platform_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
        sa.UniqueConstraint("handle_hash", name=op.f("uq_verifications_handle_hash")),
    )
    op.create_index(op.f("ix_verifications_account_id"), "verifications", ["account_id"], unique=False)
    op.create_index(op.f("ix_verifications_id_number_hash"), "verifications", ["id_number_hash"], unique=False)
    op.create_index(op.f("ix_verifications_provider_ref"), "verifications", ["provider_ref"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_verifications_provider_ref"), table_name="verifications")
    op.drop_index(op.f("ix_verifications_id_number_hash"), table_name="verifications")
    op.drop_index(op.f("ix_verifications_account_id"), table_name="verifications")
    op.drop_table("verifications")
    op.drop_index(op.f("ix_registry_staged_batch_id"), table_name="registry_staged")
    op.drop_table("registry_staged")
    op.drop_index(op.f("ix_registry_batches_effective_from"), table_name="registry_batches")
    op.drop_table("registry_batches")
