"""Personal data at rest: AES-GCM field encryption, keyed-hash look-ups, masking for display."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.core.keys import Keyring

_VERSION = 1


class VaultError(Exception):
    """A ciphertext could not be opened (wrong key, wrong field, or tampered)."""


class Vault:
    """Seals and opens personal fields; computes the keyed hashes used to look them up."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._ciphers = {kid: AESGCM(key) for kid, key in keyring.data_keys.items()}

    def seal(self, field: str, value: str) -> bytes:
        """Encrypt ``value``; the field name is bound as associated data so columns cannot be swapped."""
        kid = self._keyring.active_kid
        nonce = os.urandom(12)
        ciphertext = self._ciphers[kid].encrypt(nonce, value.encode("utf-8"), field.encode("ascii"))
        return bytes([_VERSION, kid]) + nonce + ciphertext

    def open(self, field: str, blob: bytes) -> str:
        """Decrypt a value sealed for ``field``."""
        if len(blob) < 2 + 12 + 16 or blob[0] != _VERSION:
            raise VaultError("not a vaxbot ciphertext")
        cipher = self._ciphers.get(blob[1])
        if cipher is None:
            raise VaultError("unknown key id")
        try:
            return cipher.decrypt(blob[2:14], blob[14:], field.encode("ascii")).decode("utf-8")
        except InvalidTag as exc:
            raise VaultError("ciphertext does not open under this key and field") from exc

    def digest(self, field: str, value: str) -> str:
        """Keyed hash (HMAC-SHA256, hex) of a normalised value, for equality look-ups."""
        message = field.encode("ascii") + b"\x00" + value.encode("utf-8")
        return hmac.new(self._keyring.hash_key, message, hashlib.sha256).hexdigest()

    def seal_text(self, field: str, value: str) -> str:
        """:meth:`seal` as base64 text, for a value that must wait in JSON (conversation state)."""
        return base64.b64encode(self.seal(field, value)).decode("ascii")

    def open_text(self, field: str, value: str) -> str:
        """The value :meth:`seal_text` sealed."""
        return self.open(field, base64.b64decode(value))

    def pseudonym(self, value: str) -> str:
        """A short stable reference for logs (never the value itself)."""
        return self.digest("log", value)[:12]


def mask_id_number(id_number: str) -> str:
    """``320602201901011234`` → ``3206**********1234``."""
    if len(id_number) <= 8:
        return "*" * len(id_number)
    return id_number[:4] + "*" * (len(id_number) - 8) + id_number[-4:]


def mask_name(name: str) -> str:
    """``张三`` → ``张*``; ``欧阳明月`` → ``欧**月``."""
    if len(name) <= 1:
        return "*"
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def mask_phone(phone: str) -> str:
    """``13812345678`` → ``138****5678``."""
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
