"""The face-verification provider interface.

A provider never decides anything from the browser: :meth:`FaceProvider.start` returns where to send the
user, and only :meth:`FaceProvider.query`, a server-to-server call made after the user comes back, says
whether the person who faced the camera is the person whose name and ID number we asked about.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol


@dataclasses.dataclass(frozen=True)
class Subject:
    """Who the user says they are (validated, normalised: upper-case check character)."""

    name: str
    id_number: str


@dataclasses.dataclass(frozen=True)
class StartRequest:
    """One verification attempt, as a provider needs it."""

    reference: str  # our unique order number for the attempt: [A-Za-z0-9], at most 32 characters
    subject: Subject
    return_url: str  # where the user's browser comes back to (carries no personal data)
    user_id: str  # the platform user id (the WeChat openid for mini-program face; the Alipay user id)


@dataclasses.dataclass(frozen=True)
class Started:
    """Where to send the user, and the provider's handle for the attempt (BizToken, certify_id, verify_id)."""

    url: str
    provider_ref: str


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The provider's answer to the server-side query.

    ``passed`` only when the provider confirms a live face matching the subject we asked about. When the
    provider reports whose face it verified, ``name`` and ``id_number`` carry it and the caller checks
    them against the subject again. ``reason`` is a short code (never personal data) when not passed.
    """

    passed: bool
    reason: str = ""
    name: str = ""
    id_number: str = ""


class FaceError(Exception):
    """The provider could not be asked (transport, busy, bad configuration); ``retryable`` says if later may work."""

    def __init__(self, code: str, message: str = "", *, retryable: bool) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.retryable = retryable


class FaceProvider(Protocol):
    """A face-verification provider."""

    name: str  # tencent | wechat_mini | alipay | dev

    async def start(self, request: StartRequest) -> Started:
        """Register the attempt with the provider; where to send the user's browser."""

    async def query(self, provider_ref: str, request: StartRequest) -> Outcome:
        """Ask the provider, server to server, how the attempt ended."""
