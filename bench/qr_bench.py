"""The cost of a show code (亮码): signing and checking the reference, and drawing it as PNG and SVG.

The show-code handler signs a code and draws its PNG inside the webhook's transaction, on the event loop;
the code page draws an SVG on every refresh; a clinic desk checks a scanned code. The figures say what
each costs against the baseline of signing one reference (an HMAC-SHA256), measured in the same process.

Every drawn code is read back with a real QR reader (zxing-cpp, a development dependency) and must give
back the text it was drawn from, or the run fails (exit status 1).

    python bench/qr_bench.py             # ~10 s
    python bench/qr_bench.py --json      # machine-readable figures on stdout
    python bench/qr_bench.py --duration 5   # seconds per measurement (default 2)
    python bench/qr_bench.py --quick        # a smoke run (the tests use it)
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import zxingcpp
from harness import time_calls
from PIL import Image

from bot.core.keys import Keyring
from bot.core.pii import Vault
from bot.showcode.codes import make_payload, parse_payload, qr, qr_png, qr_svg


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(duration: float) -> dict[str, Any]:
    """Time each step of a show code; check that the drawn code reads back."""
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
    }
    figures: dict[str, dict[str, float]] = {}
    for name, call in calls.items():
        log(f"measuring {name} for {duration:g} s")
        figures[name] = time_calls(call, duration)
    baseline = figures["sign"]["us_per_call"]
    symbol = qr(payload)
    return {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "payload_chars": len(payload),
        "qr": {"version": symbol.version, "error": symbol.error, "mode": symbol.mode, "png_bytes": len(png)},
        "figures": figures,
        "ratio_to_sign": {name: round(row["us_per_call"] / baseline, 1) for name, row in figures.items()},
        "reads_back": read is not None and read.text == payload,
        "answers_ok": read is not None and read.text == payload,  # the name the bench tests check
    }


def print_table(report: dict[str, Any]) -> None:
    """The figures for a terminal."""
    code = report["qr"]
    print(
        f"a {report['payload_chars']}-character code: QR version {code['version']}, level {code['error']}, "
        f"{code['mode']} mode, PNG {code['png_bytes']} bytes"
    )
    print(f"{'':8}{'µs/call':>12}{'calls':>10}{'× sign':>10}")
    for name, row in report["figures"].items():
        print(f"{name:8}{row['us_per_call']:>12.1f}{row['calls']:>10}{report['ratio_to_sign'][name]:>10}")
    print(f"reads back with a QR reader: {'yes' if report['reads_back'] else 'NO'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    parser.add_argument("--quick", action="store_true", help="a few calls each (a smoke run, figures meaningless)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(0.05 if args.quick else args.duration)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
    if not report["reads_back"]:
        log("FAILED: the drawn code does not read back")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
