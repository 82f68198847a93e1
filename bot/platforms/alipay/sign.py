"""Alipay's RSA2 (SHA256withRSA) signatures: sign content, signing, verification and key loading.

``cryptography`` gives the same PKCS#1 v1.5 signature as the official SDK's python-rsa signer in a
fraction of the time (python-rsa would block the event loop for tens of milliseconds per call).
:func:`sign_content` follows the SDK's ``get_sign_content`` rule; a property test holds them equal.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CHARSETS = {"utf-8": "utf-8", "utf8": "utf-8", "gbk": "gbk", "gb2312": "gbk", "gb18030": "gb18030"}


class AlipayKeyError(Exception):
    """A key file is missing or is not an RSA key in a form Alipay uses."""


def codec(charset: str) -> str:
    """The Python codec for one of Alipay's ``charset`` values; ``LookupError`` for anything else."""
    try:
        return CHARSETS[charset.strip().lower()]
    except KeyError as exc:
        raise LookupError(charset) from exc


def sign_content(params: Mapping[str, Any], drop: tuple[str, ...] = ("sign",)) -> str:
    """Sorted ``k=v`` pairs joined by ``&``, raw (not URL-encoded), without the ``drop`` keys.

    This is the V2 rule (drop only ``sign``) that requests and life-account gateway posts use; pass
    ``drop=("sign", "sign_type")`` for the V1 rule of payment notifications. Non-string values are
    JSON, exactly as the SDK's ``get_sign_content`` writes them.
    """
    parts = []
    for key in sorted(params):
        if key in drop:
            continue
        value = params[key]
        if not isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={value}")
    return "&".join(parts)


def _pem_or_bare(text: str, header: str) -> bytes:
    """Accept a PEM file, or the bare base64 body Alipay's console and key tool hand out."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii")
    body = "".join(text.split())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {header}-----", *lines, f"-----END {header}-----"]) + "\n").encode("ascii")


def load_private_key(data: str) -> rsa.RSAPrivateKey:
    """An RSA private key from PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8 PEM, or a bare base64 body."""
    candidates = (
        [_pem_or_bare(data, "RSA PRIVATE KEY"), _pem_or_bare(data, "PRIVATE KEY")]
        if not data.strip().startswith("-----BEGIN")
        else [data.strip().encode("ascii")]
    )
    for pem in candidates:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, binascii.Error):
            continue
        if isinstance(key, rsa.RSAPrivateKey):
            return key
        raise AlipayKeyError("the private key is not an RSA key")
    raise AlipayKeyError("the private key is neither PKCS#1 nor PKCS#8 PEM")


def load_public_key(data: str) -> rsa.RSAPublicKey:
    """An RSA public key from ``BEGIN PUBLIC KEY`` PEM (or its bare base64 body, as Alipay shows it)."""
    try:
        key = serialization.load_pem_public_key(_pem_or_bare(data, "PUBLIC KEY"))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise AlipayKeyError("the public key is not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AlipayKeyError("the public key is not an RSA key")
    return key


def read_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Load a private key file; :class:`AlipayKeyError` with the file's name when it cannot be used."""
    try:
        return load_private_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AlipayKeyError(f"cannot read the Alipay private key {path.name}") from exc


def read_public_key(path: Path) -> rsa.RSAPublicKey:
    """Load a public key file; :class:`AlipayKeyError` with the file's name when it cannot be used."""
    try:
        return load_public_key(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise AlipayKeyError(f"cannot read the Alipay public key {path.name}") from exc


def public_key_body(key: rsa.RSAPublicKey) -> str:
    """The bare base64 body of a public key, the form Alipay exchanges (``alipay.service.check``)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def sign(key: rsa.RSAPrivateKey, content: str, charset: str = "utf-8") -> str:
    """RSA2: base64 of SHA256withRSA (PKCS#1 v1.5) over ``content`` encoded in ``charset``."""
    signature = key.sign(content.encode(codec(charset)), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify(key: rsa.RSAPublicKey, content: str, signature: str, charset: str = "utf-8") -> bool:
    """True when ``signature`` is a valid RSA2 signature of ``content``; never raises on bad input."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, content.encode(codec(charset)), padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError, LookupError, UnicodeEncodeError):
        return False
    return True
