"""Password hashing with argon2id (argon2-cffi), off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 10  # a clinic password; the CLI refuses shorter ones

# argon2-cffi's defaults (RFC 9106's low-memory profile): about 50 ms and 64 MiB a hash on a small server.
_HASHER = PasswordHasher()
# Compared against when the login is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password of anyone: an unknown login is checked against it")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; the parameters are in the string)."""
    return _HASHER.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; ``None`` (no such login) costs the same and is False."""
    try:
        return _HASHER.verify(stored_hash if stored_hash is not None else _DUMMY_HASH, password) and (
            stored_hash is not None
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(stored_hash)


async def hash_password_async(password: str) -> str:
    """:func:`hash_password` in a worker thread (a hash takes tens of milliseconds of CPU)."""
    return await asyncio.to_thread(hash_password, password)


async def password_matches_async(stored_hash: str | None, password: str) -> bool:
    """:func:`password_matches` in a worker thread."""
    return await asyncio.to_thread(password_matches, stored_hash, password)
