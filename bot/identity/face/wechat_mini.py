"""WeChat's own face verification (微信人脸核身 2.0), run by a mini program with ``wx.requestFacialVerify``.

``getverifyid`` registers the subject and gives a ``verify_id`` that the mini-program page hands to
``wx.requestFacialVerify``; after the face, only ``queryverifyinfo`` decides: pass when ``errcode == 0``
and ``verify_ret == 10000``. WeChat checks the ``out_seq_no``, ``openid`` and ``cert_hash`` we send
against the ones the session was opened with, and answers an errcode instead of a ``verify_ret`` when
they differ, so nobody can swap the identity between the two calls.

The access token and the openid must both be the mini program's: ``api`` is a :class:`WeChatAPI` built
for the mini program's app id and secret, and ``request.user_id`` is the user's openid in that mini program.
"""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import urlencode

from bot.identity.face.base import FaceError, Outcome, Started, StartRequest
from bot.platforms.wechat.client import TOKEN_ERRORS, WeChatAPI, WeChatAPIError

CERT_TYPE = "IDENTITY_CARD"
PASSED = 10000
DEFAULT_PAGE = "pages/face/verify"
# The face API lives at /cityservice/face/identify/…, not under /cgi-bin/ where WeChatAPI.call posts:
# this relative path reaches it (the URL's dot segments are resolved, RFC 3986 §5.2.4).
FACE_PATH = "../cityservice/face/identify/"
# getverifyid's out_seq_no: 5–32 characters of digits, letters, "_" and "-", unique per app id.
_OUT_SEQ_NO = re.compile(r"^[A-Za-z0-9_-]{5,32}$")
# Worth trying again later: WeChat busy or unreachable, no access token, the call quota.
TRANSIENT = frozenset({-1, -2, -3, 45009}) | TOKEN_ERRORS
# Our configuration or request is wrong (unauthorised API, bad app id, IP not whitelisted, bad body…).
CONFIGURATION = frozenset({40013, 40125, 40164, 41001, 47001, 48001, 61007})


def cert_hash(cert_type: str, name: str, number: str) -> str:
    """WeChat's ``cert_hash``: SHA-256 (hex) of ``cert_type=…&cert_name=…&cert_no=…``, each value base64'd."""

    def b64(value: str) -> str:
        return base64.b64encode(value.encode("utf-8")).decode("ascii")

    text = f"cert_type={b64(cert_type)}&cert_name={b64(name)}&cert_no={b64(number)}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _error(exc: WeChatAPIError) -> FaceError:
    return FaceError(f"wechat_{exc.errcode}", exc.errmsg, retryable=exc.errcode in TRANSIENT)


class WeChatMiniFace:
    """``getverifyid`` → the mini-program page carrying ``verify_id``; ``queryverifyinfo`` for the result."""

    name = "wechat_mini"

    def __init__(self, api: WeChatAPI, *, page: str = DEFAULT_PAGE, name: str = "wechat_mini") -> None:
        self._api = api
        self._page = page
        self.name = name  # "wxmini" when run for the mini program's own users with its own credentials

    async def start(self, request: StartRequest) -> Started:
        """Open a session for the subject; the page path (with ``verify_id``) the mini program opens."""
        if not _OUT_SEQ_NO.match(request.reference):
            raise FaceError("wechat_bad_reference", "out_seq_no must be 5-32 of [A-Za-z0-9_-]", retryable=False)
        body = {
            "out_seq_no": request.reference,
            "cert_info": {
                "cert_type": CERT_TYPE,
                "cert_name": request.subject.name,
                "cert_no": request.subject.id_number,
            },
            "openid": request.user_id,
        }
        try:
            answer = await self._api.call(FACE_PATH + "getverifyid", json=body)
        except WeChatAPIError as exc:
            raise _error(exc) from exc
        verify_id = answer.get("verify_id")
        if not isinstance(verify_id, str) or not verify_id:
            raise FaceError("wechat_bad_response", "getverifyid answered without verify_id", retryable=True)
        return Started(url=f"{self._page}?{urlencode({'verify_id': verify_id})}", provider_ref=verify_id)

    async def query(self, provider_ref: str, request: StartRequest) -> Outcome:
        """``queryverifyinfo`` with the same seq no, openid and identity hash: passed only for ``10000``."""
        body = {
            "verify_id": provider_ref,
            "out_seq_no": request.reference,
            "cert_hash": cert_hash(CERT_TYPE, request.subject.name, request.subject.id_number),
            "openid": request.user_id,
        }
        try:
            answer = await self._api.call(FACE_PATH + "queryverifyinfo", json=body)
        except WeChatAPIError as exc:
            if exc.errcode in TRANSIENT or exc.errcode in CONFIGURATION:
                raise _error(exc) from exc
            # WeChat refused this session (an expired or unknown verify_id, or a seq no, openid or identity
            # hash other than the session's): the attempt cannot pass, however often it is asked.
            return Outcome(False, reason=f"wechat_{exc.errcode}")
        try:
            verify_ret = int(answer.get("verify_ret") or 0)
        except (TypeError, ValueError):
            return Outcome(False, reason="wechat_bad_verify_ret")
        if verify_ret == 0:
            return Outcome(False, reason="not_completed")
        if verify_ret != PASSED:
            return Outcome(False, reason=f"wechat_verify_ret_{verify_ret}")
        return Outcome(True)
