"""clinic desk: the verified step (一验证), sealed desk records on visits, clinic API keys and their nonces,
filing requests (自动建档) and the codes and visits of people without a file yet

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:00:00.000000

The open-visit index is rebuilt to count ``verified`` as open (a verified visit is still at the desk).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OPEN_BEFORE = sa.text("status IN ('queued', 'registered', 'vaccinated', 'observing')")
OPEN_AFTER = sa.text("status IN ('queued', 'registered', 'verified', 'vaccinated', 'observing')")


def _open_visits(condition: sa.TextClause) -> None:
    op.create_index(
        "uq_visits_open",
        "visits",
        ["vaccinee_id", "clinic_id", "visit_date"],
        unique=True,
        sqlite_where=condition,
        postgresql_where=condition,
    )


def upgrade() -> None:
    op.create_table(
        "filing_requests",
        sa.Column("id", ID, nullable=False),
        sa.Column("requested_by_identity_id", ID, nullable=False),
        sa.Column("relation", sa.String(length=8), nullable=False),
        sa.Column("details_enc", sa.LargeBinary(), nullable=False),
        sa.Column("id_number_hash", sa.String(length=64), nullable=True),
        sa.Column("birth_cert_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("vaccinee_id", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["requested_by_identity_id"],
            ["identities.id"],
            name=op.f("fk_filing_requests_requested_by_identity_id_identities"),
        ),
        sa.ForeignKeyConstraint(
            ["vaccinee_id"], ["vaccinees.id"], name=op.f("fk_filing_requests_vaccinee_id_vaccinees")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_filing_requests")),
    )
    op.create_index(op.f("ix_filing_requests_birth_cert_hash"), "filing_requests", ["birth_cert_hash"])
    op.create_index(op.f("ix_filing_requests_id_number_hash"), "filing_requests", ["id_number_hash"])
    op.create_index(
        op.f("ix_filing_requests_requested_by_identity_id"), "filing_requests", ["requested_by_identity_id"]
    )
    with op.batch_alter_table("code_tokens") as batch:
        batch.alter_column("certificate_id", existing_type=ID, nullable=True)
        batch.add_column(sa.Column("filing_request_id", ID, nullable=True))
        batch.create_foreign_key(
            op.f("fk_code_tokens_filing_request_id_filing_requests"), "filing_requests", ["filing_request_id"], ["id"]
        )
    # Dropped around the batch: SQLite's table copy would not keep the partial index's condition.
    op.drop_index("uq_visits_open", table_name="visits")
    with op.batch_alter_table("visits") as batch:
        batch.alter_column("vaccinee_id", existing_type=ID, nullable=True)
        batch.add_column(sa.Column("filing_request_id", ID, nullable=True))
        batch.create_foreign_key(
            op.f("fk_visits_filing_request_id_filing_requests"), "filing_requests", ["filing_request_id"], ["id"]
        )
        batch.add_column(sa.Column("shown_by_identity_id", ID, nullable=True))
        batch.add_column(sa.Column("called_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("desk", sa.String(length=32), nullable=False, server_default=""))
        batch.add_column(sa.Column("desk_enc", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("confirmation_round", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("confirmation_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("verified_by", sa.String(length=64), nullable=False, server_default=""))
        batch.create_foreign_key(
            op.f("fk_visits_shown_by_identity_id_identities"), "identities", ["shown_by_identity_id"], ["id"]
        )
    with op.batch_alter_table("visits") as batch:
        # The defaults served the rows already there; the models give every new row its value.
        batch.alter_column("desk", server_default=None)
        batch.alter_column("confirmation_round", server_default=None)
        batch.alter_column("verified_by", server_default=None)
    _open_visits(OPEN_AFTER)
    op.create_table(
        "clinic_api_keys",
        sa.Column("id", ID, nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("clinic_id", ID, nullable=False),
        sa.Column("secret_enc", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"], name=op.f("fk_clinic_api_keys_clinic_id_clinics")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinic_api_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_clinic_api_keys_key_id")),
    )
    op.create_index(op.f("ix_clinic_api_keys_clinic_id"), "clinic_api_keys", ["clinic_id"], unique=False)
    op.create_table(
        "clinic_api_nonces",
        sa.Column("id", ID, nullable=False),
        sa.Column("api_key_id", ID, nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["clinic_api_keys.id"],
            name=op.f("fk_clinic_api_nonces_api_key_id_clinic_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clinic_api_nonces")),
        sa.UniqueConstraint("api_key_id", "nonce", name=op.f("uq_clinic_api_nonces_api_key_id_nonce")),
    )
    op.create_index(op.f("ix_clinic_api_nonces_seen_at"), "clinic_api_nonces", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_clinic_api_nonces_seen_at"), table_name="clinic_api_nonces")
    op.drop_table("clinic_api_nonces")
    op.drop_index(op.f("ix_clinic_api_keys_clinic_id"), table_name="clinic_api_keys")
    op.drop_table("clinic_api_keys")
    op.drop_index("uq_visits_open", table_name="visits")
    # A verified visit goes back to registered: the older schema has no step between. Visits and codes of
    # people never filed have no place in it.
    op.execute("UPDATE visits SET status = 'registered' WHERE status = 'verified'")
    op.execute("DELETE FROM visits WHERE vaccinee_id IS NULL")
    op.execute("DELETE FROM code_tokens WHERE certificate_id IS NULL")
    with op.batch_alter_table("visits") as batch:
        batch.drop_constraint(op.f("fk_visits_shown_by_identity_id_identities"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_visits_filing_request_id_filing_requests"), type_="foreignkey")
        batch.alter_column("vaccinee_id", existing_type=ID, nullable=False)
        for column in (
            "filing_request_id",
            "verified_by",
            "verified_at",
            "confirmation_requested_at",
            "confirmation_round",
            "desk_enc",
            "desk",
            "called_at",
            "shown_by_identity_id",
        ):
            batch.drop_column(column)
    _open_visits(OPEN_BEFORE)
    with op.batch_alter_table("code_tokens") as batch:
        batch.drop_constraint(op.f("fk_code_tokens_filing_request_id_filing_requests"), type_="foreignkey")
        batch.drop_column("filing_request_id")
        batch.alter_column("certificate_id", existing_type=ID, nullable=False)
    op.drop_index(op.f("ix_filing_requests_requested_by_identity_id"), table_name="filing_requests")
    op.drop_index(op.f("ix_filing_requests_id_number_hash"), table_name="filing_requests")
    op.drop_index(op.f("ix_filing_requests_birth_cert_hash"), table_name="filing_requests")
    op.drop_table("filing_requests")
