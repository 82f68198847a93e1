"""Validators for resident ID numbers (GB 11643-1999) and mainland mobile numbers."""

from __future__ import annotations

import dataclasses
import re
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_ID_SHAPE = re.compile(r"^\d{17}[\dX]$")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")


class InvalidIdNumber(ValueError):
    """An ID number failed validation; ``reason`` is a message-catalogue key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class IdNumber:
    """A validated 18-character resident ID number."""

    value: str
    region: str
    birth_date: date
    male: bool


def id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_id_number(raw: str, today: date | None = None) -> IdNumber:
    """Normalise (strip, upper-case ``x``) and validate an ID number, or raise :class:`InvalidIdNumber`."""
    value = raw.strip().replace(" ", "").upper()
    if len(value) != 18:
        raise InvalidIdNumber("id_length")
    if not _ID_SHAPE.match(value):
        raise InvalidIdNumber("id_chars")
    try:
        birth = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError as exc:
        raise InvalidIdNumber("id_birth_date") from exc
    if birth.year < 1800 or birth > (today or date.today()):
        raise InvalidIdNumber("id_birth_date")
    if id_check_char(value[:17]) != value[17]:
        raise InvalidIdNumber("id_check_char")
    return IdNumber(value=value, region=value[:6], birth_date=birth, male=int(value[16]) % 2 == 1)


def normalize_mobile(raw: str) -> str | None:
    """An 11-digit mainland mobile number (``+86`` and separators allowed), or None when invalid."""
    value = re.sub(r"[\s-]", "", raw.strip())
    if value.startswith("+86"):
        value = value[3:]
    elif value.startswith("0086"):
        value = value[4:]
    return value if _MOBILE.match(value) else None


_NAME = re.compile(r"^[\u3400-\u9fffA-Za-z][\u3400-\u9fffA-Za-z· ]{0,18}[\u3400-\u9fffA-Za-z]$")


def normalize_name(raw: str) -> str | None:
    """A name as on an ID card (2–20 characters, Chinese or letters, ``·`` between parts), or None."""
    value = re.sub(r"\s+", " ", raw.strip()).replace("•", "·").replace("・", "·")
    return value if _NAME.match(value) else None
