"""What every platform adapter shares: the rejection it raises and a hardened XML reader."""

from __future__ import annotations

import re
from typing import Any
from xml.parsers import expat

import xmltodict

_HOSTILE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
# Platform messages nest three or four elements deep. Far deeper documents are refused before they are
# turned into nested dicts, whose repr (or any recursive walk) would blow Python's recursion limit.
MAX_XML_DEPTH = 400


class Rejected(Exception):
    """The request is not a valid platform delivery; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _TooDeep(Exception):
    pass


def xml_depth_within(raw: str, limit: int = MAX_XML_DEPTH) -> bool:
    """True when no element of ``raw`` is nested deeper than ``limit``; stops reading at the first that is.

    Expat streams the document and calls back per tag, so the check itself never recurses. A malformed
    document raises :class:`expat.ExpatError`.
    """
    depth = 0

    def start(_name: str, _attributes: object) -> None:
        nonlocal depth
        depth += 1
        if depth > limit:
            raise _TooDeep

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(raw, True)
    except _TooDeep:
        return False
    return True


def safe_xml(raw: str, root: str) -> dict[str, Any]:
    """Parse ``raw`` and return its ``root`` element; DOCTYPE/ENTITY declarations and deep nesting are refused."""
    if _HOSTILE.search(raw):
        raise Rejected(400, "xml declarations are not accepted")
    try:
        if not xml_depth_within(raw):
            raise Rejected(400, "xml nested too deeply")
        parsed = xmltodict.parse(raw, disable_entities=True)
    except Rejected:
        raise
    except Exception as exc:  # expat errors, entity refusal, bad encodings
        raise Rejected(400, "malformed xml") from exc
    element = parsed.get(root) if isinstance(parsed, dict) else None
    if not isinstance(element, dict):
        raise Rejected(400, "malformed xml")
    return element
