"""Tencent Cloud FaceID (慧眼人脸核身) for H5 pages inside WeChat: ``DetectAuth``, then ``GetDetectInfoEnhanced``.

Requests are TencentCloud API 3.0 calls (a JSON POST with ``X-TC-*`` headers) signed with TC3-HMAC-SHA256,
written here with ``hmac``/``hashlib`` so that nothing blocks the event loop and no SDK is needed. The
browser comes back to ``RedirectUrl`` with the BizToken, but only the server-side query decides anything:
``Text.ErrCode == 0`` with the name and ID number Tencent verified (the caller compares them again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from yarl import URL

from bot.core.config import Settings
from bot.identity.face.base import FaceError, Outcome, Started, StartRequest

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "faceid"
CONTENT_TYPE = "application/json; charset=utf-8"
# GetDetectInfoEnhanced's InfoType: "0" is everything (ID card photos, best frames, the video), "1" the
# text result alone. We need only the text, so we never pull biometric images we would have to protect.
INFO_TYPE_TEXT = "1"
EXPIRED = "InvalidParameterValue.BizTokenExpired"
# Codes worth trying again later (busy or throttled); everything else is configuration or a bad request.
RETRYABLE_CODES = ("InternalError", "RequestLimitExceeded", "FailedOperation.RequestLimitExceeded")


# --- TC3-HMAC-SHA256 ------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    """Lower-case hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def credential_date(timestamp: int) -> str:
    """The UTC date of ``timestamp`` (``2019-02-25``): the credential scope's date is never local time."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def canonical_request(method: str, uri: str, query: str, headers: Mapping[str, str], payload: bytes) -> tuple[str, str]:
    """(CanonicalRequest, SignedHeaders): header names and values lower-cased and trimmed, sorted by name."""
    items = sorted((name.strip().lower(), value.strip().lower()) for name, value in headers.items())
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in items)
    signed_headers = ";".join(name for name, _ in items)
    canonical = "\n".join([method, uri, query, canonical_headers, signed_headers, sha256_hex(payload)])
    return canonical, signed_headers


def string_to_sign(timestamp: int, service: str, canonical: str) -> str:
    """Algorithm, timestamp, credential scope and the hash of the canonical request, one per line."""
    scope = f"{credential_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM}\n{timestamp}\n{scope}\n{sha256_hex(canonical.encode('utf-8'))}"


def tc3_signature(secret_key: str, timestamp: int, service: str, to_sign: str) -> str:
    """The hex signature: the key is derived from the secret through the date, the service and ``tc3_request``."""
    key = _hmac(("TC3" + secret_key).encode("utf-8"), credential_date(timestamp))
    key = _hmac(key, service)
    key = _hmac(key, "tc3_request")
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def tc3_authorization(
    secret_id: str,
    secret_key: str,
    *,
    service: str,
    timestamp: int,
    headers: Mapping[str, str],
    payload: bytes,
    method: str = "POST",
    uri: str = "/",
    query: str = "",
) -> str:
    """The ``Authorization`` header for a request whose signed ``headers`` and body are given."""
    canonical, signed_headers = canonical_request(method, uri, query, headers, payload)
    signature = tc3_signature(secret_key, timestamp, service, string_to_sign(timestamp, service, canonical))
    scope = f"{credential_date(timestamp)}/{service}/tc3_request"
    return f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"


# --- the provider -----------------------------------------------------------------------------------


class TencentAPIError(Exception):
    """Tencent answered ``{"Response": {"Error": {"Code", "Message"}}}``."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


def classify(exc: TencentAPIError) -> FaceError:
    """Busy or throttled → retry later; signature, credentials, parameters, service state → do not."""
    retryable = exc.code.startswith(RETRYABLE_CODES)
    return FaceError(f"tencent_{exc.code}", exc.message, retryable=retryable)


def _host(url: URL) -> str:
    """The ``Host`` header we sign (and send): the port only when it is not the scheme's default."""
    host = url.raw_host or ""
    return host if url.is_default_port() else f"{host}:{url.port}"


class TencentFaceID:
    """FaceID's H5 flow: ``DetectAuth`` for the page URL and BizToken, ``GetDetectInfoEnhanced`` for the result."""

    name = "tencent"

    def __init__(
        self, http: aiohttp.ClientSession, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._http = http
        self._secret_id = settings.tencent_secret_id
        self._secret_key = settings.tencent_secret_key
        self._rule_id = settings.tencent_faceid_rule_id
        self._version = settings.tencent_faceid_version
        self._region = settings.tencent_region
        self._url = URL(settings.tencent_faceid_endpoint)
        self._host = _host(self._url)
        self._uri = self._url.raw_path or "/"
        self._timeout = aiohttp.ClientTimeout(total=settings.api_timeout_seconds)
        self._clock = clock

    async def call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One signed API 3.0 call; the ``Response`` object, or :class:`TencentAPIError` / :class:`FaceError`."""
        payload = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = int(self._clock())
        signed = {"Content-Type": CONTENT_TYPE, "Host": self._host, "X-TC-Action": action}
        headers = {
            **signed,
            "Authorization": tc3_authorization(
                self._secret_id,
                self._secret_key,
                service=SERVICE,
                timestamp=timestamp,
                headers=signed,
                payload=payload,
                uri=self._uri,
            ),
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Version": self._version,
        }
        if self._region:
            headers["X-TC-Region"] = self._region
        try:
            async with self._http.post(self._url, data=payload, headers=headers, timeout=self._timeout) as response:
                if response.status != 200:
                    raise FaceError("tencent_transport", f"http {response.status}", retryable=True)
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FaceError("tencent_transport", type(exc).__name__, retryable=True) from exc
        answer = body.get("Response") if isinstance(body, dict) else None
        if not isinstance(answer, dict):
            raise FaceError("tencent_bad_response", "no Response object", retryable=True)
        error = answer.get("Error")
        if isinstance(error, dict):
            raise TencentAPIError(str(error.get("Code", "")), str(error.get("Message", "")))
        return answer

    async def start(self, request: StartRequest) -> Started:
        """``DetectAuth`` with the subject's name and ID number; the H5 page URL and the BizToken."""
        params = {
            "RuleId": self._rule_id,
            "IdCard": request.subject.id_number,
            "Name": request.subject.name,
            "RedirectUrl": request.return_url,
            "Extra": request.reference,
        }
        try:
            answer = await self.call("DetectAuth", params)
        except TencentAPIError as exc:
            raise classify(exc) from exc
        url, token = answer.get("Url"), answer.get("BizToken")
        if not isinstance(url, str) or not url or not isinstance(token, str) or not token:
            raise FaceError("tencent_bad_response", "DetectAuth answered without Url or BizToken", retryable=True)
        return Started(url=url, provider_ref=token)

    async def query(self, provider_ref: str, request: StartRequest) -> Outcome:
        """``GetDetectInfoEnhanced`` (text only): passed only for ``ErrCode == 0`` with a reported identity."""
        params = {"BizToken": provider_ref, "RuleId": self._rule_id, "InfoType": INFO_TYPE_TEXT}
        try:
            answer = await self.call("GetDetectInfoEnhanced", params)
        except TencentAPIError as exc:
            if exc.code == EXPIRED:
                return Outcome(False, reason="expired")
            raise classify(exc) from exc
        text = answer.get("Text")
        if not isinstance(text, dict) or text.get("ErrCode") is None:
            return Outcome(False, reason="not_completed")  # the user has not finished (or never started)
        try:
            errcode = int(text["ErrCode"])
        except (TypeError, ValueError):
            return Outcome(False, reason="tencent_bad_errcode")
        if errcode != 0:
            return Outcome(False, reason=f"tencent_{errcode}")
        extra = text.get("Extra")
        if extra is not None and extra != request.reference:
            # The BizToken belongs to another of our attempts: never let one attempt's result prove another.
            return Outcome(False, reason="tencent_other_attempt")
        name = str(text.get("Name") or "").strip()
        id_number = str(text.get("IdCard") or "").strip().upper()
        if not name or not id_number:
            return Outcome(False, reason="tencent_no_identity")
        return Outcome(True, name=name, id_number=id_number)
