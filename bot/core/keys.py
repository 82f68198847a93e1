"""Key material in ``keys/``: loaded at start-up, generated for development only."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.core.config import DEV_ALIPAY_APP_KEY, DEV_ALIPAY_PLATFORM_KEY, Settings

KEYRING_FILE = "vault.json"


class KeyringError(Exception):
    """Key material is missing or unusable."""


@dataclasses.dataclass(frozen=True)
class Keyring:
    """Field-encryption keys (by key id) and the keyed-hash key for look-ups."""

    # Key bytes stay out of repr: a keyring printed in a log or a traceback must not leak them.
    data_keys: dict[int, bytes] = dataclasses.field(repr=False)
    active_kid: int
    hash_key: bytes = dataclasses.field(repr=False)
    dev: bool


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def generate_dev_keys(keys_dir: Path) -> Path:
    """Write a fresh development keyring (marked ``dev``) and the Alipay pairs; return the keyring's path."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    generate_dev_alipay_keys(keys_dir)
    path = keys_dir / KEYRING_FILE
    payload = {
        "dev": True,
        "active_kid": 1,
        "data_keys": {"1": _b64(secrets.token_bytes(32))},
        "hash_key": _b64(secrets.token_bytes(32)),
    }
    tmp = path.with_suffix(".tmp")
    # Why 0o600: the keyring is the only thing standing between the database file and the data.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
    tmp.replace(path)
    return path


def generate_dev_alipay_keys(keys_dir: Path, *, replace: bool = True) -> None:
    """Our app's RSA pair and the pair the development fake of Alipay signs with."""
    for stem in (DEV_ALIPAY_APP_KEY, DEV_ALIPAY_PLATFORM_KEY):
        if replace or not (keys_dir / f"{stem}_private.pem").exists():
            generate_key_pair(keys_dir, stem)


def private_file_problem(path: Path) -> str | None:
    """Why ``path`` (key material) is too open: readable or writable by its group or others; None when 0600-like."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None  # a missing file is explained by whoever reads it
    if mode & 0o077:
        return f"{path} is open to other users (mode {mode:04o}): run `chmod 600 {path}`"
    return None


def refuse_open_key_files(paths: list[Path]) -> None:
    """Raise :class:`KeyringError` naming every key file its group or other users could read (production)."""
    problems = [problem for problem in map(private_file_problem, paths) if problem is not None]
    if problems:
        raise KeyringError("refusing key material other users can read: " + "; ".join(problems))


def load_keyring(keys_dir: Path, *, private: bool = False) -> Keyring:
    """Read ``keys/vault.json``; raise :class:`KeyringError` with a clear reason when unusable.

    ``private`` (production): also refuse a keyring file its group or other users may read.
    """
    path = keys_dir / KEYRING_FILE
    if not path.is_file():
        raise KeyringError(
            f"no keyring ({path.name}) in the keys directory: see keys/README.md"
            " (for development, VAXBOT_ENV=development and `vaxbot keys generate-dev`)"
        )
    if private:
        refuse_open_key_files([path])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        data_keys = {int(kid): base64.b64decode(value) for kid, value in raw["data_keys"].items()}
        active = int(raw["active_kid"])
        hash_key = base64.b64decode(raw["hash_key"])
        dev = bool(raw.get("dev", False))
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyringError("the keyring file is malformed") from exc
    if active not in data_keys:
        raise KeyringError("the active key id has no key")
    if any(len(key) != 32 for key in data_keys.values()) or len(hash_key) < 32:
        raise KeyringError("keys must be 32 bytes")
    if not 0 < active < 256:
        raise KeyringError("key ids must be 1..255")
    return Keyring(data_keys=data_keys, active_kid=active, hash_key=hash_key, dev=dev)


def ensure_keyring(settings: Settings) -> Keyring:
    """Load the keyring; in development (``settings.dev_tools``) generate development keys first when missing."""
    keys_dir = settings.keys_dir
    if settings.dev_tools and not (keys_dir / KEYRING_FILE).exists():
        generate_dev_keys(keys_dir)
    elif settings.dev_tools:
        generate_dev_alipay_keys(keys_dir, replace=False)  # a keys directory from before Alipay
    try:
        return load_keyring(keys_dir, private=settings.production)
    except KeyringError as exc:
        raise KeyringError(f"{exc}{settings.env_unset_hint}") from exc


def generate_key_pair(directory: Path, stem: str) -> tuple[Path, Path]:
    """Write a 2048-bit RSA pair as ``<stem>_private.pem`` (PKCS#1, mode 0600) and ``<stem>_public.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path = directory / f"{stem}_private.pem"
    public_path = directory / f"{stem}_public.pem"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path
