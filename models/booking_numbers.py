"""Booking numbers: random, unique, easy to read out at a clinic's window, and saying nothing about volumes."""

from __future__ import annotations

import secrets

# No 0/O, 1/I/L: a number read aloud or copied from a screen is not mistaken for another.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 10  # 31**10 ≈ 8e14 numbers: a collision is rare, and the unique index turns it into a retry


def new_booking_number() -> str:
    """A fresh random booking number (``appointments.number``)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalise_booking_number(text: str) -> str:
    """What someone typed or read out (spaces, dashes, lower case) as a stored booking number."""
    return "".join(text.split()).replace("-", "").upper()
