"""QR symbols drawn fast: the matrix from the ``qrcode`` package, a 1-bit PNG written with zlib, an SVG path.

``qrcode.make`` builds the symbol eight times to score every mask pattern, then paints it module by module
with Pillow. Here the symbol is built for the few candidate masks in :data:`CANDIDATE_MASKS` only (scored by
``qrcode``'s own penalty rule when there is more than one), and the chosen matrix is written straight to PNG
rows: at a scale of eight pixels a module is one byte of a 1-bit image, so a row is a ``bytes`` lookup.

Drawing is CPU work (about a millisecond): callers on the event loop use :func:`png_in_thread`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import re
import struct
import zlib
from collections.abc import Sequence
from typing import cast

from qrcode import constants as qr_constants
from qrcode import util as qr_util
from qrcode.main import QRCode

ERROR_LEVELS = {"L": qr_constants.ERROR_CORRECT_L, "M": qr_constants.ERROR_CORRECT_M, "Q": qr_constants.ERROR_CORRECT_Q}
# The masks tried for each symbol; with one there is nothing to score. Scaled down and blurred as a desk camera
# sees a phone, every mask reads every code under usual conditions; at the reader's edge mask 4 reads as well as
# any and better than the one qrcode's penalty rule picks (bench/qr_bench.py measures all of them each run).
CANDIDATE_MASKS: tuple[int, ...] = (4,)
QUIET_ZONE = 4  # modules of white around the symbol, as scanners expect
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MODULE_BYTE = bytes([0xFF, 0x00]) + bytes(254)  # bytes(row) has 1 for a dark module: 1 → black, 0 → white
_DARK_RUN = re.compile(b"\x01+")


class NotAlphanumeric(ValueError):
    """The text holds a character outside the QR alphanumeric set (the text itself is not in the message)."""


@dataclasses.dataclass(frozen=True)
class Symbol:
    """A QR symbol: its version, error level, mode, mask and dark modules (rows of booleans, no quiet zone)."""

    version: int
    error: str
    mode: str
    mask: int
    modules: tuple[tuple[bool, ...], ...]

    @property
    def size(self) -> int:
        """Modules per side, without the quiet zone."""
        return len(self.modules)


def symbol(text: str, error: str = "Q", masks: Sequence[int] = CANDIDATE_MASKS) -> Symbol:
    """The smallest alphanumeric-mode symbol of ``text`` at ``error``, with the best of ``masks``."""
    data = text.encode("ascii", "replace")
    if not qr_util.RE_ALPHA_NUM.match(data):
        raise NotAlphanumeric("not in the QR alphanumeric set")
    code = QRCode(version=_version(len(data), error), error_correction=ERROR_LEVELS[error], border=0)
    code.add_data(qr_util.QRData(data, mode=qr_util.MODE_ALPHA_NUM, check_data=False))
    best: list[list[bool | None]] = []
    best_mask, best_score = masks[0], -1
    for mask in masks:
        code.makeImpl(False, mask)  # the codewords are computed once and cached between masks
        score = qr_util.lost_point(code.modules) if len(masks) > 1 else 0
        if best_score < 0 or score < best_score:
            best, best_mask, best_score = code.modules, mask, score
    # makeImpl has set every module to True or False by now (a None would fail the PNG writer's bytes()).
    rows = cast(tuple[tuple[bool, ...], ...], tuple(map(tuple, best)))
    return Symbol(version=code.version, error=error, mode="alphanumeric", mask=best_mask, modules=rows)


@functools.lru_cache(maxsize=128)
def _version(length: int, error: str) -> int:
    """The smallest version for ``length`` alphanumeric characters (it depends on nothing else): qrcode's fit."""
    code = QRCode(error_correction=ERROR_LEVELS[error], border=0)
    code.add_data(qr_util.QRData(b"0" * length, mode=qr_util.MODE_ALPHA_NUM, check_data=False))
    return int(code.best_fit())


def png(code: Symbol, scale: int = 8, border: int = QUIET_ZONE) -> bytes:
    """The symbol as a black-and-white PNG, ``scale`` pixels a module, with a quiet zone of ``border`` modules."""
    width = code.size + 2 * border
    side = width * scale
    quiet = [False] * border
    lines = [_png_line([*quiet, *row, *quiet], scale) * scale for row in code.modules]
    margin = _png_line([False] * width, scale) * (border * scale)
    raw = margin + b"".join(lines) + margin
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit per pixel, greyscale
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND", b"")


def _png_line(modules: Sequence[bool], scale: int) -> bytes:
    """One row of pixels after its filter byte (0: none); a dark module is black (bit 0)."""
    if scale % 8 == 0:  # a module is whole bytes, 0x00 or 0xFF: a table lookup, no bit twiddling
        repeat = scale // 8
        wide = modules if repeat == 1 else [dark for dark in modules for _ in range(repeat)]
        return b"\x00" + bytes(wide).translate(_MODULE_BYTE)
    bits = "".join([("0" if dark else "1") * scale for dark in modules])
    bits += "1" * (-len(bits) % 8)
    return b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def svg(code: Symbol, border: int = QUIET_ZONE) -> str:
    """The symbol as an inline SVG (one unit a module, white background): scales to any screen sharply."""
    side = code.size + 2 * border
    runs = [
        f"M{run.start() + border} {y + border}h{len(run[0])}v1h-{len(run[0])}z"
        for y, row in enumerate(code.modules)
        for run in _DARK_RUN.finditer(bytes(row))  # bytes(row): 1 for a dark module
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" shape-rendering="crispEdges">'
        f'<rect width="{side}" height="{side}" fill="#fff"/><path fill="#000" d="{"".join(runs)}"/></svg>'
    )


def qr_png(text: str, scale: int = 8) -> bytes:
    """``text`` as a QR PNG for a chat image (level Q, alphanumeric, a quiet zone of four modules)."""
    return png(symbol(text), scale)


def qr_svg(text: str) -> str:
    """``text`` as a QR SVG for a page (level Q, alphanumeric, a quiet zone of four modules)."""
    return svg(symbol(text))


async def png_in_thread(text: str) -> bytes:
    """:func:`qr_png` in a worker thread, so the event loop goes on serving while the code is drawn."""
    return await asyncio.to_thread(qr_png, text)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
