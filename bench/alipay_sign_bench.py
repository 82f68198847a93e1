"""The cost of one Alipay RSA2 signature: vaxbot's ``cryptography`` signer against the official SDK's.

Every call vaxbot makes to Alipay's gateway is signed (SHA256withRSA, PKCS#1 v1.5, 2048-bit key) on the
event loop, so the signer's cost is latency added to every webhook that answers through the outbox and
time during which no other request is served. The SDK's ``sign_with_rsa2`` uses pure-Python python-rsa.

Both sign the same sign content (a customer-service message's parameters, Chinese text included) with the
same fresh key; the signatures must be byte-identical, or the run fails (exit status 1). Verification of
a response (``cryptography`` against the SDK's ``verify_with_rsa``) is measured the same way.

    python bench/alipay_sign_bench.py             # ~8 s
    python bench/alipay_sign_bench.py --json      # machine-readable figures on stdout
    python bench/alipay_sign_bench.py --duration 5   # seconds per measurement (default 2)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from harness import time_calls

from bot.core.keys import generate_key_pair
from bot.platforms.alipay import sign as alipay_sign

PARAMS = {
    "app_id": "2099000000000001",
    "method": "alipay.open.public.message.custom.send",
    "format": "JSON",
    "charset": "utf-8",
    "sign_type": "RSA2",
    "timestamp": "2026-11-23 18:00:00",
    "version": "1.0",
    "biz_content": json.dumps(
        {
            "to_user_id": "2088000000000001",
            "msg_type": "text",
            "chat": "1",
            "text": {"content": "您的孩子有一针百白破疫苗将于 2026-12-01 到期，请到南通市崇川区接种门诊接种。"},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ),
}
RESPONSE = '{"code":"10000","msg":"Success"}'


def log(message: str) -> None:
    """Progress on stderr (stdout stays clean for --json)."""
    print(message, file=sys.stderr, flush=True)


def run(duration: float) -> dict[str, Any]:
    """Generate a key pair, check both signers agree, then time them."""
    with tempfile.TemporaryDirectory() as scratch:
        private_path, public_path = generate_key_pair(Path(scratch), "bench")
        private_pem = private_path.read_text(encoding="ascii")
        public_pem = public_path.read_text(encoding="ascii")
    key = alipay_sign.load_private_key(private_pem)
    public_key = alipay_sign.load_public_key(public_pem)
    # The SDK wants the PKCS#1 body without its markers.
    sdk_private = "".join(line for line in private_pem.splitlines() if not line.startswith("-----"))
    sdk_public = "".join(line for line in public_pem.splitlines() if not line.startswith("-----"))

    content = get_sign_content(PARAMS)
    ours = alipay_sign.sign(key, content)
    theirs = sign_with_rsa2(sdk_private, content, "utf-8")
    response_signature = alipay_sign.sign(key, RESPONSE)
    identical = ours == theirs and alipay_sign.sign_content(PARAMS) == content
    verified = alipay_sign.verify(public_key, RESPONSE, response_signature) and bool(
        verify_with_rsa(sdk_public, RESPONSE.encode("utf-8"), response_signature)
    )

    figures: dict[str, dict[str, float]] = {}
    for name, call in (
        ("sign_vaxbot", lambda: alipay_sign.sign(key, content)),
        ("sign_sdk", lambda: sign_with_rsa2(sdk_private, content, "utf-8")),
        ("verify_vaxbot", lambda: alipay_sign.verify(public_key, RESPONSE, response_signature)),
        ("verify_sdk", lambda: verify_with_rsa(sdk_public, RESPONSE.encode("utf-8"), response_signature)),
    ):
        log(f"measuring {name} for {duration:.0f} s")
        figures[name] = time_calls(call, duration)
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "key_bits": key.key_size,
        "sign_content_chars": len(content),
        "signatures_identical": identical,
        "verification_ok": verified,
        "figures": figures,
        "sign_ratio_sdk_over_vaxbot": round(
            figures["sign_sdk"]["us_per_call"] / figures["sign_vaxbot"]["us_per_call"], 1
        ),
        "verify_ratio_sdk_over_vaxbot": round(
            figures["verify_sdk"]["us_per_call"] / figures["verify_vaxbot"]["us_per_call"], 1
        ),
    }


def print_table(report: dict[str, Any]) -> None:
    """The figures for a terminal."""
    figures = report["figures"]
    print(f"RSA2, {report['key_bits']}-bit key, {report['sign_content_chars']}-character sign content")
    print(f"{'':16}{'µs/call':>12}{'calls':>10}")
    for name, row in figures.items():
        print(f"{name:16}{row['us_per_call']:>12.1f}{row['calls']:>10}")
    print(f"signing: the SDK takes {report['sign_ratio_sdk_over_vaxbot']}× as long as vaxbot")
    print(f"verifying: the SDK takes {report['verify_ratio_sdk_over_vaxbot']}× as long as vaxbot")
    print(f"signatures byte-identical: {'yes' if report['signatures_identical'] else 'NO'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = run(args.duration)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_table(report)
    if not report["signatures_identical"] or not report["verification_ok"]:
        log("FAILED: the signers disagree or a signature does not verify")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
