"""The lottery draw (摇号), as a pure function anyone can re-implement: docs/lottery.md says it exactly.

Inputs are public after the draw: the revealed seed (32 bytes, hex) and the sorted list of entry hashes
(32 bytes each, hex). The seed's SHA-256 was published when registration opened, so the seed cannot have
been chosen after the entries were known. The ranking:

    list_digest = SHA-256(e_1 ‖ e_2 ‖ … ‖ e_n)              (the raw bytes of the sorted entry hashes)
    key(e)      = SHA-256(seed ‖ list_digest ‖ e)
    ranking     = the entries sorted by key ascending       (rank 1 first; ties by entry hash)

Binding the list digest into every key means that any change to the list (one entry added, dropped or
one bit changed) reorders the whole draw, not only the entry that changed. Standard library only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = "vaxbot-lottery/1"
HASH_HEX = 64


class DrawError(ValueError):
    """Published data that cannot be drawn or does not verify; the message says what is wrong."""


def new_seed() -> str:
    """A fresh random seed, 32 bytes as hex."""
    return secrets.token_hex(32)


def commitment(seed: str) -> str:
    """The seed's commitment: SHA-256 of its 32 bytes, hex."""
    return hashlib.sha256(_raw(seed, "seed")).hexdigest()


def _raw(value: str, what: str) -> bytes:
    if len(value) != HASH_HEX or value != value.lower():
        raise DrawError(f"{what} must be 64 lowercase hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise DrawError(f"{what} must be 64 lowercase hex digits") from None


def check_entries(entries: Sequence[str]) -> list[bytes]:
    """The entries as raw bytes, refusing a list that is not strictly ascending 64-digit lowercase hex."""
    raw = [_raw(entry, "an entry hash") for entry in entries]
    if any(a >= b for a, b in itertools.pairwise(raw)):
        raise DrawError("the entry hashes must be sorted ascending with no repeats")
    return raw


def list_digest(entries: Sequence[str]) -> str:
    """SHA-256 of the sorted entry hashes' raw bytes, concatenated (hex)."""
    return hashlib.sha256(b"".join(check_entries(entries))).hexdigest()


def rank(seed: str, entries: Sequence[str]) -> list[str]:
    """The full draw order of ``entries`` (sorted ascending, as published) under the revealed ``seed``."""
    raw = check_entries(entries)
    prefix = hashlib.sha256(_raw(seed, "seed"))
    prefix.update(hashlib.sha256(b"".join(raw)).digest())
    keyed = []
    for entry in raw:
        digest = prefix.copy()
        digest.update(entry)
        keyed.append((digest.digest(), entry))
    keyed.sort()
    return [entry.hex() for _, entry in keyed]


def published(
    *,
    lottery: str,
    vaccine: str,
    clinic: str,
    places: int,
    registration_opens_at: str,
    registration_closes_at: str,
    seed_sha256: str,
    entries: Sequence[str],
    seed: str | None = None,
    ranking: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The published record of a lottery (the seed and ranking once drawn): no one's personal data."""
    return {
        "format": FORMAT,
        "lottery": lottery,
        "vaccine": vaccine,
        "clinic": clinic,
        "places": places,
        "registration_opens_at": registration_opens_at,
        "registration_closes_at": registration_closes_at,
        "seed_sha256": seed_sha256,
        "entry_count": len(entries),
        "entries": list(entries),
        "seed": seed,
        "ranking": list(ranking) if ranking is not None else None,
    }


def dumps(record: Mapping[str, Any]) -> str:
    """The published record as JSON text (stable key order, one line per entry list item kept compact)."""
    return json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def verify(record: Mapping[str, Any]) -> list[str]:
    """Re-draw a published record from its own data alone; the problems found (empty: it verifies)."""
    problems: list[str] = []
    if record.get("format") != FORMAT:
        return [f"not a {FORMAT} record"]
    seed, ranking = record.get("seed"), record.get("ranking")
    entries = record.get("entries")
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        return ["the entries must be a list of entry hashes"]
    if not isinstance(seed, str) or not isinstance(ranking, list):
        return ["not drawn yet: no seed or no ranking published"]
    try:
        check_entries(entries)
        if commitment(seed) != record.get("seed_sha256"):
            problems.append("the seed does not match the commitment published when registration opened")
        if record.get("entry_count") != len(entries):
            problems.append("the entry count does not match the list")
        if rank(seed, entries) != ranking:
            problems.append("the ranking is not the draw of these entries under this seed")
    except DrawError as exc:
        problems.append(str(exc))
    return problems
