"""QR drawing (bot.core.qr): qrcode's own matrix, a PNG and an SVG that show it exactly, and codes that read.

The readability proof draws random codes of the real format, scales them down and blurs them as a desk
camera sees a phone screen, and reads them back with a real QR reader (zxing-cpp);
``bench/qr_bench.py`` runs the same over thousands of codes, for every mask.
"""

from __future__ import annotations

import base64
import io
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
import qrcode
import zxingcpp
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFilter
from qrcode import util as qr_util

from bot.core import qr as drawing
from bot.core.keys import Keyring
from bot.core.pii import Vault
from bot.core.update import Image, message_from_payload, message_to_payload
from bot.outbox.queue import SCRUBBED, scrubbed
from bot.showcode.codes import make_payload, qr_png, qr_svg
from models import OutboxKind

VAULT = Vault(Keyring(data_keys={1: b"d" * 32}, active_kid=1, hash_key=b"h" * 32, dev=True))
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def payloads(count: int, seed: int) -> list[str]:
    """``count`` codes of the real format (``make_payload``): random handles and expiries."""
    rng = random.Random(seed)
    return [
        make_payload(
            VAULT,
            base64.b32encode(rng.randbytes(15)).decode("ascii").rstrip("="),
            NOW + timedelta(seconds=rng.randrange(60, 3_000_000)),
        )
        for _ in range(count)
    ]


def camera_reads(png: bytes, pixels: int, blur: float) -> str | None:
    """What a reader finds in the PNG scaled to ``pixels`` a side and blurred by ``blur`` pixels."""
    image = PILImage.open(io.BytesIO(png)).convert("L").resize((pixels, pixels), PILImage.Resampling.BILINEAR)
    found = zxingcpp.read_barcode(image.filter(ImageFilter.GaussianBlur(blur)))
    return None if found is None else str(found.text)


def test_the_matrix_is_the_one_qrcode_builds_with_that_mask() -> None:
    for text in payloads(5, seed=1):
        symbol = drawing.symbol(text)
        reference = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_Q, mask_pattern=symbol.mask)
        reference.add_data(qr_util.QRData(text.encode("ascii"), mode=qr_util.MODE_ALPHA_NUM))
        reference.make()
        assert (symbol.version, symbol.error, symbol.mode, symbol.size) == (4, "Q", "alphanumeric", 33)
        assert symbol.mask in drawing.CANDIDATE_MASKS and reference.version == 4
        assert [list(row) for row in symbol.modules] == reference.modules


@pytest.mark.parametrize("scale", [8, 3, 16])
def test_the_png_shows_every_module_with_a_white_quiet_zone(scale: int) -> None:
    text = payloads(1, seed=2)[0]
    symbol = drawing.symbol(text)
    image = PILImage.open(io.BytesIO(drawing.png(symbol, scale))).convert("L")
    side = (symbol.size + 8) * scale
    assert image.size == (side, side)
    for y in range(symbol.size + 8):
        for x in range(symbol.size + 8):
            inside = 4 <= x < symbol.size + 4 and 4 <= y < symbol.size + 4
            dark = inside and symbol.modules[y - 4][x - 4]
            corners = {
                image.getpixel((x * scale + dx, y * scale + dy)) for dx in (0, scale - 1) for dy in (0, scale - 1)
            }
            assert corners == {0 if dark else 255}, (x, y)
    assert zxingcpp.read_barcode(image).text == text


def test_the_svg_draws_the_same_modules_and_reads_back() -> None:
    text = payloads(1, seed=3)[0]
    symbol = drawing.symbol(text)
    svg = qr_svg(text)
    assert svg.startswith("<svg") and 'viewBox="0 0 41 41"' in svg and text not in svg
    dark: set[tuple[int, int]] = set()
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", svg):
        dark |= {(int(x) + step - 4, int(y) - 4) for step in range(int(width))}
    assert dark == {(x, y) for y, row in enumerate(symbol.modules) for x, on in enumerate(row) if on}
    # Painted as a browser would paint the path, 6 pixels a unit, it reads back.
    image = PILImage.new("L", (41 * 6, 41 * 6), 255)
    pen = ImageDraw.Draw(image)
    for x, y in dark:
        pen.rectangle(((x + 4) * 6, (y + 4) * 6, (x + 5) * 6 - 1, (y + 5) * 6 - 1), fill=0)
    assert zxingcpp.read_barcode(image).text == text


def test_random_codes_read_back_as_a_desk_camera_sees_a_phone_screen() -> None:
    rng = random.Random(12)
    missed = []
    for text in payloads(300, seed=12):
        # 96–140 camera pixels for the 41-module symbol (2.3–3.4 a module), blurred 0.4–1.0 pixel.
        pixels, blur = rng.randint(96, 140), round(rng.uniform(0.4, 1.0), 2)
        if camera_reads(qr_png(text), pixels, blur) != text:
            missed.append((pixels, blur))
    assert missed == []


def test_at_the_readers_edge_the_fixed_mask_reads_as_well_as_qrcodes_penalty_choice() -> None:
    # Where masks start to differ (1.5–2.7 camera pixels a module, blur near half a module), the fixed mask
    # must not be worse than the mask qrcode's penalty scoring picks (bench/qr_bench.py: every mask, more codes).
    ours = penalty = 0
    for text in payloads(60, seed=5):
        fixed, scored = qr_png(text), drawing.png(drawing.symbol(text, masks=range(8)))
        for pixels, blur in ((62, 0.6), (82, 0.7), (112, 1.3)):
            ours += camera_reads(fixed, pixels, blur) == text
            penalty += camera_reads(scored, pixels, blur) == text
    assert ours >= penalty > 0


def test_only_alphanumeric_text_is_drawn_and_the_refusal_does_not_repeat_it() -> None:
    with pytest.raises(drawing.NotAlphanumeric) as caught:
        drawing.qr_png("vx1:secret-handle")
    assert "secret" not in str(caught.value)


def test_an_image_to_draw_is_a_credential_that_the_outbox_keeps_as_text_then_scrubs() -> None:
    text = payloads(1, seed=4)[0]
    with pytest.raises(ValueError, match="credential"):
        Image(qr_text=text)
    kind, payload = message_to_payload(Image(qr_text=text, credential=True))
    assert (kind, payload) == (OutboxKind.IMAGE, {"qr_text": text, "credential": True})  # no drawing queued
    assert message_from_payload(kind, payload) == Image(qr_text=text, credential=True)
    assert scrubbed(payload) == SCRUBBED
