"""A faithful fake of Tencent Cloud FaceID (慧眼) for development and tests: the API and the H5 page.

* The API (``POST /``) checks every request as TencentCloud API 3.0 does: ``X-TC-Action`` (a known action),
  ``X-TC-Version``, ``X-TC-Region`` when sent, ``X-TC-Timestamp`` within five minutes, and the
  TC3-HMAC-SHA256 ``Authorization`` (SecretId, credential scope, signed headers, signature) recomputed here
  from the request exactly as it arrived, with an implementation of its own so that ours is tested, not
  reused. It answers ``DetectAuth`` and ``GetDetectInfoEnhanced`` in Tencent's shape (``{"Response": {...,
  "RequestId"}}``, errors as ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``, always HTTP 200),
  records what it accepted, and can be told to fail with any code or to stall.
* The page (``GET /h5/<BizToken>``) is where the returned ``Url`` sends the user's browser: the test "user"
  opens it with ``?result=pass|fail|other`` (or the test calls :meth:`FakeTencentFaceID.complete`), and it
  redirects to ``RedirectUrl`` with ``token=<BizToken>`` added, as FaceID does.

A BizToken can be completed for 7200 s after ``DetectAuth``; its result can be read for three days.
Refused in production (see ``bot.cli``); nothing here leaves loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from yarl import URL

ACTIONS = frozenset({"DetectAuth", "GetDetectInfoEnhanced"})
TIMESTAMP_TOLERANCE = 300  # seconds either way, as Tencent allows
TOKEN_TTL = 7200  # seconds to complete the flow after DetectAuth
RESULT_TTL = 3 * 24 * 3600  # seconds the result can be read
RESULTS = frozenset({"pass", "fail", "other"})
# The fake's code for a face that did not match (Tencent has many; any non-zero ErrCode is a failure).
FAIL_ERRCODE = 1004
_AUTHORIZATION = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d{2}-\d{2})/(?P<service>[^/]+)/tc3_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
_ID_NUMBER = re.compile(r"^\d{17}[\dX]$")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass
class Received:
    """One call the fake accepted (its signature verified)."""

    action: str
    params: dict[str, Any]
    at: float


@dataclasses.dataclass
class Session:
    """One ``DetectAuth``: who is to be verified, where the browser goes back, and how the user finished."""

    biz_token: str
    rule_id: str
    id_card: str
    name: str
    redirect_url: str
    extra: str
    created: float
    result: str | None = None  # pass | fail | other, once the user finished


@dataclasses.dataclass
class _Failure:
    code: str
    times: int


def _check_char(first17: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def other_person(id_card: str) -> str:
    """A valid ID number of someone else (same region and birth date, another serial number)."""
    serial = (int(id_card[14:17]) + 7) % 1000
    first17 = f"{id_card[:14]}{serial:03d}"
    return first17 + _check_char(first17)


class FakeTencentFaceID:
    """Tencent FaceID's API 3.0 endpoint and its H5 page on loopback, strict about signatures."""

    def __init__(
        self,
        secret_id: str,
        secret_key: str,
        *,
        rule_id: str = "1",
        region: str = "ap-guangzhou",
        version: str = "2018-03-01",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.rule_id = rule_id
        self.region = region
        self.version = version
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.received: list[Received] = []
        self._failures: dict[str, list[_Failure]] = {}
        self._stalls: dict[str, float] = {}

    # --- test controls ---

    def fail(self, action: str, code: str, times: int = 1) -> None:
        """The next ``times`` (verified) calls to ``action`` answer the error ``code``."""
        self._failures.setdefault(action, []).append(_Failure(code, times))

    def stall(self, action: str, seconds: float) -> None:
        """Calls to ``action`` take ``seconds`` before answering."""
        self._stalls[action] = seconds

    def complete(self, biz_token: str, result: str) -> Session:
        """The user finishes the H5 flow: ``pass``, ``fail`` or ``other`` (someone else's ID card was used)."""
        session = self.sessions[biz_token]
        if result not in RESULTS:
            raise ValueError(f"unknown result {result!r}")
        if session.result is not None:
            raise ValueError("this BizToken is already completed")
        if self.clock() - session.created > TOKEN_TTL:
            raise ValueError("this BizToken has expired")
        session.result = result
        return session

    def calls(self, action: str) -> list[Received]:
        """Accepted calls of one action, in order."""
        return [item for item in self.received if item.action == action]

    # --- the service ---

    def app(self) -> web.Application:
        """The aiohttp application to serve: ``POST /`` (the API) and ``GET /h5/{token}`` (the page)."""
        app = web.Application()
        app.router.add_post("/", self._api)
        app.router.add_get("/h5/{token}", self._page)
        return app

    async def _api(self, request: web.Request) -> web.Response:
        request_id = str(uuid.uuid4())
        body = await request.read()
        action = request.headers.get("X-TC-Action", "")
        try:
            self._verify(request, body)
            if stall := self._stalls.get(action):
                await asyncio.sleep(stall)
            self._maybe_fail(action)
            try:
                params = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise _Refusal("InvalidParameter", "请求体不是合法的JSON") from exc
            if not isinstance(params, dict):
                raise _Refusal("InvalidParameter", "请求体必须是JSON对象")
            answer = self._detect_auth(params, request) if action == "DetectAuth" else self._get_info(params)
        except _Refusal as refusal:
            error = {"Error": {"Code": refusal.code, "Message": refusal.message}, "RequestId": request_id}
            return web.json_response({"Response": error})
        self.received.append(Received(action, params, self.clock()))
        return web.json_response({"Response": {**answer, "RequestId": request_id}})

    def _verify(self, request: web.Request, body: bytes) -> None:
        """API 3.0's common checks, the signature last."""
        headers = request.headers
        if not request.content_type == "application/json":
            raise _Refusal("InvalidParameter", "Content-Type 必须是 application/json")
        action = headers.get("X-TC-Action", "")
        if not action:
            raise _Refusal("MissingParameter", "缺少 X-TC-Action")
        if action not in ACTIONS:
            raise _Refusal("InvalidAction", f"接口不存在: {action}")
        if headers.get("X-TC-Version") != self.version:
            raise _Refusal("NoSuchVersion", "接口版本不存在")
        if "X-TC-Region" in headers and headers["X-TC-Region"] != self.region:
            raise _Refusal("UnsupportedRegion", "接口不支持所传地域")
        try:
            timestamp = int(headers.get("X-TC-Timestamp", ""))
        except ValueError as exc:
            raise _Refusal("MissingParameter", "缺少或非法的 X-TC-Timestamp") from exc
        if abs(self.clock() - timestamp) > TIMESTAMP_TOLERANCE:
            raise _Refusal("AuthFailure.SignatureExpire", "签名过期")
        match = _AUTHORIZATION.match(headers.get("Authorization", ""))
        if match is None:
            raise _Refusal("AuthFailure.InvalidAuthorization", "Authorization 格式错误")
        if match["id"] != self.secret_id:
            raise _Refusal("AuthFailure.SecretIdNotFound", "密钥不存在")
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        if match["service"] != "faceid" or match["date"] != date:
            raise _Refusal("AuthFailure.SignatureFailure", "凭证范围与请求不符")
        signed = match["signed"].split(";")
        if "content-type" not in signed or "host" not in signed or signed != sorted(signed):
            raise _Refusal("AuthFailure.SignatureFailure", "SignedHeaders 必须包含 content-type 和 host")
        if any(name not in headers for name in signed):
            raise _Refusal("AuthFailure.SignatureFailure", "签名的头部缺失")
        lines = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed)
        canonical = "\n".join(
            [
                request.method,
                request.raw_path.split("?", 1)[0],
                request.query_string,
                lines,
                ";".join(signed),
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{date}/faceid/tc3_request"
        to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = ("TC3" + self.secret_key).encode()
        for part in (date, "faceid", "tc3_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            raise _Refusal("AuthFailure.SignatureFailure", "签名错误")

    def _maybe_fail(self, action: str) -> None:
        queue = self._failures.get(action)
        if queue:
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            raise _Refusal(failure.code, f"simulated {failure.code}")

    # --- actions ---

    def _detect_auth(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        rule_id = params.get("RuleId")
        if not isinstance(rule_id, str) or not rule_id:
            raise _Refusal("MissingParameter", "缺少 RuleId")
        if rule_id != self.rule_id:
            raise _Refusal("InvalidParameterValue.RuleIdNotExist", "RuleId不存在")
        id_card, name = params.get("IdCard"), params.get("Name")
        # This rule compares the face with the ID the caller names: both are required.
        if not isinstance(id_card, str) or not _ID_NUMBER.match(id_card):
            raise _Refusal("FailedOperation.IdFormatError", "输入的身份证号有误")
        if not isinstance(name, str) or not name.strip() or len(name) > 32:
            raise _Refusal("FailedOperation.NameFormatError", "输入的姓名有误")
        redirect = params.get("RedirectUrl", "")
        if not isinstance(redirect, str) or len(redirect) > 1024 or not redirect.startswith(("http://", "https://")):
            raise _Refusal("InvalidParameterValue", "RedirectUrl 不合法")
        extra = params.get("Extra", "")
        if not isinstance(extra, str) or len(extra) > 1024:
            raise _Refusal("InvalidParameterValue", "Extra 不合法")
        token = str(uuid.uuid4()).upper()
        self.sessions[token] = Session(token, rule_id, id_card, name, redirect, extra, self.clock())
        base = str(request.url.with_query(None)).rstrip("/")
        return {"Url": f"{base}/h5/{token}", "BizToken": token}

    def _get_info(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("BizToken")
        if not isinstance(token, str) or not token:
            raise _Refusal("MissingParameter", "缺少 BizToken")
        session = self.sessions.get(token)
        if session is None:
            raise _Refusal("InvalidParameterValue.BizTokenIllegal", "BizToken不合法")
        if params.get("RuleId") != session.rule_id:
            raise _Refusal("InvalidParameter.RuleId", "RuleId与BizToken不符")
        info_type = params.get("InfoType", "0")
        if not isinstance(info_type, str) or not re.fullmatch(r"[0-6]+", info_type):
            raise _Refusal("InvalidParameterValue", "InfoType 不合法")
        age = self.clock() - session.created
        if (session.result is None and age > TOKEN_TTL) or age > RESULT_TTL:
            raise _Refusal("InvalidParameterValue.BizTokenExpired", "BizToken过期。")
        answer: dict[str, Any] = {}
        if "0" in info_type or "1" in info_type:
            answer["Text"] = self._text(session)
        if "0" in info_type or "2" in info_type:
            answer["IdCardData"] = None
        if "0" in info_type or "3" in info_type:
            answer["BestFrame"] = None
        if "0" in info_type or "4" in info_type:
            answer["VideoData"] = None
        return answer

    @staticmethod
    def _text(session: Session) -> dict[str, Any]:
        text: dict[str, Any] = {
            "ErrCode": None,
            "ErrMsg": None,
            "IdCard": None,
            "Name": None,
            "LiveStatus": None,
            "Comparestatus": None,
            "Sim": None,
            "Extra": session.extra,
        }
        if session.result == "pass":
            text.update(ErrCode=0, ErrMsg="成功", IdCard=session.id_card, Name=session.name, LiveStatus=0)
            text.update(Comparestatus=0, Sim="95.12")
        elif session.result == "fail":
            text.update(ErrCode=FAIL_ERRCODE, ErrMsg="比对失败", LiveStatus=0, Comparestatus=FAIL_ERRCODE, Sim="12.30")
        elif session.result == "other":
            # Someone else's card and face (a rule that reads the ID card instead of taking ours).
            text.update(ErrCode=0, ErrMsg="成功", IdCard=other_person(session.id_card), Name="李四", LiveStatus=0)
            text.update(Comparestatus=0, Sim="93.40")
        return text

    # --- the page ---

    async def _page(self, request: web.Request) -> web.Response:
        """The H5 page: ``?result=`` finishes the flow and redirects to RedirectUrl with the token."""
        session = self.sessions.get(request.match_info["token"])
        if session is None:
            return _html(404, "<h1>BizToken不合法</h1>")
        result = request.query.get("result")
        if result is None:
            if session.result is not None:
                return _html(200, "<h1>核身已完成</h1>")
            links = "".join(f'<p><a href="?result={value}">{label}</a></p>' for value, label in _LABELS)
            return _html(200, f"<h1>腾讯云慧眼人脸核身（开发模拟）</h1>{links}")
        try:
            self.complete(session.biz_token, result)
        except ValueError as exc:
            return _html(409, f"<h1>{escape(str(exc))}</h1>")
        target = URL(session.redirect_url, encoded=True).update_query(token=session.biz_token)
        raise web.HTTPFound(str(target))


_LABELS = (("pass", "通过"), ("fail", "不通过"), ("other", "换一个人"))


def _html(status: int, body: str) -> web.Response:
    page = f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
    return web.Response(status=status, text=page, content_type="text/html", charset="utf-8")
