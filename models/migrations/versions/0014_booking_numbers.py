"""booking numbers: a random, unique number per appointment instead of one derived from the row id

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-01 21:00:00.000000
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As models.booking_numbers at the time of writing (a migration keeps its own copy).
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 10


def new_booking_number() -> str:
    """A random booking number."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def upgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.add_column(sa.Column("number", sa.String(length=16), nullable=True))
    connection = op.get_bind()
    ids = connection.execute(sa.text("SELECT id FROM appointments")).scalars().all()
    numbers: set[str] = set()
    for appointment_id in ids:
        number = new_booking_number()
        while number in numbers:
            number = new_booking_number()
        numbers.add(number)
        connection.execute(
            sa.text("UPDATE appointments SET number = :number WHERE id = :id"), {"number": number, "id": appointment_id}
        )
    with op.batch_alter_table("appointments") as batch:
        batch.alter_column("number", existing_type=sa.String(length=16), nullable=False)
        batch.create_unique_constraint("uq_appointments_number", ["number"])


def downgrade() -> None:
    with op.batch_alter_table("appointments") as batch:
        batch.drop_constraint("uq_appointments_number", type_="unique")
        batch.drop_column("number")
