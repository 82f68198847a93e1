"""The cost of a show code (亮码): signing and checking the reference, drawing it, and whether it reads.

Times, in one process: signing a code (an HMAC-SHA256, the baseline), checking a scanned one, drawing it
as the chat's PNG and the code page's SVG (``bot.core.qr``: the ``qrcode`` package's matrix with a fixed
mask, a zlib PNG), and, as the reference, ``qrcode.make`` on its default path (every mask scored, Pillow
painting): alone (``qrcode_make``, an image object, not yet a file) and saved as PNG bytes
(``qrcode_make_png``). ``png_speedup`` is ``qrcode.make`` alone over vaxbot's finished PNG, the conservative
ratio; ``png_speedup_vs_saved`` compares like with like (PNG bytes both). All measured in the same run.

Readability: random codes of the real format (``make_payload``) are drawn with each of the eight masks and
with the mask ``qrcode``'s penalty rule picks, then scaled down and blurred as a desk camera sees a phone
screen (Pillow resize + GaussianBlur) and read back with a real QR reader (zxing-cpp). The run fails (exit
status 1) if vaxbot's own drawing misses a code under the *usual* conditions, or the timed code does not
read back.

    python bench/qr_bench.py                    # ~5 minutes: 2 s a measurement, 2,000 codes read back
    python bench/qr_bench.py --json             # machine-readable figures on stdout
    python bench/qr_bench.py --duration 5       # seconds per measurement (default 2)
    python bench/qr_bench.py --codes 5000       # codes drawn for the readability figures (default 2000)
    python bench/qr_bench.py --quick            # a smoke run (the tests use it): figures meaningless
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import qrcode
import zxingcpp
from harness import time_calls
from PIL import Image, ImageFilter

from bot.core import qr as drawing
from bot.core.keys import Keyring
from bot.core.pii import Vault
from bot.showcode.codes import make_payload, parse_payload, qr, qr_png, qr_svg

# A desk camera looking at a phone: the 41-module symbol (33 and the quiet zone) lands on this many camera
# pixels, softened by this much blur (Gaussian radius in pixels). USUAL is what a desk sees every day
# (2.4 to 3.2 pixels a module); every drawing must read all of them. HARSH sits at the reader's edge (1.4 to
# 2.9 pixels a module, blur near half a module), where masks start to differ: it is what chooses the mask.
USUAL = ((100, 0.6), (110, 1.0), (118, 1.0), (124, 1.2), (130, 0.8))
HARSH = ((58, 0.5), (62, 0.6), (82, 0.7), (104, 1.2), (112, 1.3))
VARIANTS = (*(f"mask{mask}" for mask in range(8)), "qrcode_penalty", "vaxbot")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_payloads(vault: Vault, count: int, seed: int = 12) -> list[str]:
    """``count`` codes of the real format: random handles, expiries spread over the next weeks."""
    rng = random.Random(seed)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    return [
        make_payload(
            vault,
            base64.b32encode(rng.randbytes(15)).decode("ascii").rstrip("="),
            now + timedelta(seconds=rng.randrange(60, 3_000_000)),
        )
        for _ in range(count)
    ]


def as_camera_sees(png: bytes, pixels: int, blur: float) -> Image.Image:
    """The PNG scaled down to ``pixels`` a side and blurred, as greyscale."""
    image = Image.open(io.BytesIO(png)).convert("L").resize((pixels, pixels), Image.Resampling.BILINEAR)
    return image.filter(ImageFilter.GaussianBlur(blur)) if blur else image


def reads(png: bytes, text: str, pixels: int, blur: float) -> bool:
    """Whether zxing-cpp reads ``text`` back from the degraded PNG."""
    found = zxingcpp.read_barcode(as_camera_sees(png, pixels, blur))
    return found is not None and found.text == text


def readability(vault: Vault, count: int) -> dict[str, Any]:
    """Per drawing variant and condition, how many of ``count`` random codes read back."""
    read: Counter[tuple[str, str]] = Counter()
    conditions = [("usual", pixels, blur) for pixels, blur in USUAL] + [("harsh", p, b) for p, b in HARSH]
    started = time.perf_counter()
    for number, text in enumerate(random_payloads(vault, count), 1):
        drawings = {f"mask{mask}": drawing.png(drawing.symbol(text, masks=(mask,))) for mask in range(8)}
        drawings["qrcode_penalty"] = drawing.png(drawing.symbol(text, masks=range(8)))
        drawings["vaxbot"] = qr_png(text)
        for variant, png in drawings.items():
            for group, pixels, blur in conditions:
                if reads(png, text, pixels, blur):
                    read[(variant, f"{group} {pixels}px/{blur:g}")] += 1
        if number % 200 == 0:
            log(f"read back {number} of {count} codes ({time.perf_counter() - started:.0f} s)")
    names = [f"{group} {pixels}px/{blur:g}" for group, pixels, blur in conditions]
    table = {variant: {name: read[(variant, name)] for name in names} for variant in VARIANTS}
    return {
        "codes": count,
        "masks_tried": list(drawing.CANDIDATE_MASKS),
        "conditions": names,
        "read": table,
        "usual_read_rate": {
            variant: round(sum(row[name] for name in names if name.startswith("usual")) / (count * len(USUAL)), 4)
            for variant, row in table.items()
        },
        "harsh_read_rate": {
            variant: round(sum(row[name] for name in names if name.startswith("harsh")) / (count * len(HARSH)), 4)
            for variant, row in table.items()
        },
    }


def qrcode_make_png(payload: str) -> bytes:
    """The reference: ``qrcode.make`` on its default path, saved as PNG bytes."""
    buffer = io.BytesIO()
    qrcode.make(payload).save(buffer)
    return buffer.getvalue()


def run(duration: float, codes: int) -> dict[str, Any]:
    """Time each step of a show code against ``qrcode.make``; read back random codes."""
    vault = Vault(Keyring(data_keys={1: b"d" * 32}, active_kid=1, hash_key=b"h" * 32, dev=True))
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    handle = "ABCDEFGHIJKLMNOPQRSTUVWX"
    payload = make_payload(vault, handle, now + timedelta(minutes=30))
    png = qr_png(payload)
    read = zxingcpp.read_barcode(Image.open(io.BytesIO(png)).convert("L"))
    calls = {
        "sign": lambda: make_payload(vault, handle, now + timedelta(minutes=30)),
        "check": lambda: parse_payload(vault, payload, now),
        "png": lambda: qr_png(payload),
        "svg": lambda: qr_svg(payload),
        "qrcode_make": lambda: qrcode.make(payload),
        "qrcode_make_png": lambda: qrcode_make_png(payload),
    }
    figures: dict[str, dict[str, float]] = {}
    for name, call in calls.items():
        log(f"measuring {name} for {duration:g} s")
        figures[name] = time_calls(call, duration)
    baseline = figures["sign"]["us_per_call"]
    symbol = qr(payload)
    log(f"reading back {codes} random codes, 10 drawings each, {len(USUAL) + len(HARSH)} conditions")
    readable = readability(vault, codes)
    reads_back = read is not None and read.text == payload and readable["usual_read_rate"]["vaxbot"] == 1.0
    return {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "payload_chars": len(payload),
        "qr": {
            "version": symbol.version,
            "error": symbol.error,
            "mode": symbol.mode,
            "mask": symbol.mask,
            "png_bytes": len(png),
        },
        "figures": figures,
        "ratio_to_sign": {name: round(row["us_per_call"] / baseline, 1) for name, row in figures.items()},
        "png_speedup": round(figures["qrcode_make"]["us_per_call"] / figures["png"]["us_per_call"], 2),
        "png_speedup_vs_saved": round(figures["qrcode_make_png"]["us_per_call"] / figures["png"]["us_per_call"], 2),
        "readability": readable,
        "reads_back": reads_back,
        "answers_ok": reads_back,  # the name the bench tests and `python -m bench` check
    }


def print_table(report: dict[str, Any]) -> None:
    """The figures for a terminal."""
    code = report["qr"]
    print(
        f"a {report['payload_chars']}-character code: QR version {code['version']}, level {code['error']}, "
        f"{code['mode']} mode, mask {code['mask']}, PNG {code['png_bytes']} bytes"
    )
    print(f"{'':16}{'µs/call':>12}{'calls':>10}{'× sign':>10}")
    for name, row in report["figures"].items():
        print(f"{name:16}{row['us_per_call']:>12.1f}{row['calls']:>10}{report['ratio_to_sign'][name]:>10}")
    print(f"PNG: qrcode.make / vaxbot = {report['png_speedup']}×, saved as PNG too: {report['png_speedup_vs_saved']}×")
    readable = report["readability"]
    print(f"\nread back, of {readable['codes']} random codes (pixels a side / blur radius):")
    names = readable["conditions"]
    print(f"{'':16}" + "".join(f"{name.split()[1]:>11}" for name in names))
    print(f"{'':16}" + "".join(f"{name.split()[0]:>11}" for name in names))
    for variant, row in readable["read"].items():
        print(f"{variant:16}" + "".join(f"{row[name]:>11}" for name in names))
    print(f"reads back with a QR reader: {'yes' if report['reads_back'] else 'NO'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--codes", type=int, default=2000, help="random codes read back (default 2000)")
    parser.add_argument("--quick", action="store_true", help="a few calls and 30 codes (a smoke run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(0.05 if args.quick else args.duration, 30 if args.quick else args.codes)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
    if not report["reads_back"]:
        log("FAILED: a code drawn by vaxbot did not read back")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
