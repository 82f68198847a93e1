"""What every platform adapter shares: the rejection it raises and a hardened XML reader."""

from __future__ import annotations

import re
from typing import Any

import xmltodict

_HOSTILE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class Rejected(Exception):
    """The request is not a valid platform delivery; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def safe_xml(raw: str, root: str) -> dict[str, Any]:
    """Parse ``raw`` and return its ``root`` element; DOCTYPE/ENTITY declarations are refused outright."""
    if _HOSTILE.search(raw):
        raise Rejected(400, "xml declarations are not accepted")
    try:
        parsed = xmltodict.parse(raw, disable_entities=True)
    except Exception as exc:  # expat errors, entity refusal, bad encodings
        raise Rejected(400, "malformed xml") from exc
    element = parsed.get(root) if isinstance(parsed, dict) else None
    if not isinstance(element, dict):
        raise Rejected(400, "malformed xml")
    return element
