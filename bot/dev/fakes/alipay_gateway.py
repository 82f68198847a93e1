"""A faithful fake of Alipay's open-platform gateway (``/gateway.do``) that vaxbot calls.

It checks every request as Alipay does: the app id, ``sign_type`` RSA2, the charset, the version, a
``yyyy-MM-dd HH:mm:ss`` China-time timestamp within 15 minutes, a known method, and the signature by the
V2 rule (every parameter but ``sign``; files excepted) against the app's public key, computed with the
official SDK's own ``get_sign_content`` so that our implementation of the rule is tested, not reused.
It validates each method's business parameters, enforces the life account's customer-service windows
from the interactions it is told about, answers with Alipay's codes and sub-codes, signs every answer
with the platform key over the exact ``<method>_response`` text it emits, records what it accepted, and
can be told to fail, stall, tamper with or leave unsigned its answers.

Identity verification (``alipay.user.certify.open.*``): ``initialize`` checks its fields and a unique
``outer_order_no``; the ``certify`` page (a verified GET) lets the test user choose 通过 / 不通过 / 换一个人
(or the test calls :meth:`FakeAlipayGateway.complete_certify`) and sends the browser to ``return_url``;
``query`` answers ``passed`` T or F, and forgets a certify_id not certified within 23 hours.

Web authorisation: the ``/oauth2/publicAppAuthorize.htm`` page (the Alipay app's browser, which knows who
is logged in) sends the browser back to ``redirect_uri`` with a single-use ``auth_code``, and
``alipay.system.oauth.token`` (signed, checked like every call) turns it into the ``user_id``; its success
answer carries no ``code``, as Alipay's does not.

Method and app-id problems are answered with an unsigned ``error_response``; everything else with a
signed ``<method>_response``. Refused in production (see ``bot.cli``); nothing here leaves loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from aiohttp import BodyPartReader, web
from alipay.aop.api.util.SignatureUtils import get_sign_content
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from bot.dev.fakes.alipay_rules import (
    MAX_IMAGE_BYTES,
    Refusal,
    check_certify_initialize,
    check_custom_message,
    check_image_upload,
    check_menu,
    check_mini_message,
    check_template_message,
    invalid,
    parse_biz,
)
from bot.dev.fakes.login import SIM_USER_PARAM, login_page
from bot.platforms.alipay import sign as alipay_sign

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
TIMESTAMP_TOLERANCE = timedelta(minutes=15)
WINDOW = timedelta(minutes=5)

CUSTOM_SEND = "alipay.open.public.message.custom.send"
SINGLE_SEND = "alipay.open.public.message.single.send"
MINI_SEND = "alipay.open.app.mini.templatemessage.send"
IMAGE_UPLOAD = "alipay.offline.material.image.upload"
MENU_CREATE = "alipay.open.public.menu.create"
CERTIFY_PAGE = "alipay.user.certify.open.certify"
CERTIFY_INITIALIZE = "alipay.user.certify.open.initialize"
CERTIFY_QUERY = "alipay.user.certify.open.query"
OAUTH_TOKEN = "alipay.system.oauth.token"  # noqa: S105 (a method name)
METHODS = frozenset(
    {CUSTOM_SEND, SINGLE_SEND, MINI_SEND, IMAGE_UPLOAD, MENU_CREATE, CERTIFY_INITIALIZE, CERTIFY_QUERY, OAUTH_TOKEN}
)
PAGE_METHODS = frozenset({CERTIFY_PAGE})
MESSAGE_METHODS = frozenset({CUSTOM_SEND, SINGLE_SEND, MINI_SEND})

INTERACTION_KINDS = frozenset({"follow", "click", "chat", "enter_ppchat"})
EVENT_TYPES = frozenset({"follow", "click", "enter_ppchat"})
# Identity verification: a certify_id can be certified for about 23 hours; once certified, its result can
# be queried for months. An unknown or lapsed one answers OPEN_CERTIFY_BILL_NOT_EXIST. The sub-code for a
# repeated outer_order_no is the fake's own (Alipay requires it unique but does not document the answer).
CERTIFY_TTL = timedelta(hours=23)
CERTIFY_RESULTS = frozenset({"pass", "fail", "other"})
# Web authorisation: an auth_code works once; Alipay documents at most 24 hours, the fake keeps it shorter
# (tests shorten it further). The simulated app browser's logged-in user is this cookie.
OAUTH_CODE_TTL = timedelta(minutes=10)
OAUTH_SCOPES = frozenset({"auth_base", "auth_user"})
SIM_USER_COOKIE = "vx_sim_alipay_user"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass
class Received:
    """One call the fake accepted."""

    method: str
    biz: dict[str, Any]  # biz_content, parsed (for uploads: the text parameters)
    params: dict[str, str]  # every text parameter as it arrived
    at: datetime
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)

    @property
    def to_user_id(self) -> str:
        """The recipient of a message call ("" for other calls)."""
        return str(self.biz.get("to_user_id", ""))


@dataclasses.dataclass
class Interaction:
    """The last thing a user did that opens a customer-service window."""

    kind: str  # follow | click | chat | enter_ppchat
    at: datetime


@dataclasses.dataclass
class Certification:
    """One ``initialize``: whom to verify, where the browser goes back, and how the user finished."""

    certify_id: str
    outer_order_no: str
    cert_name: str
    cert_no: str
    return_url: str
    created: datetime
    result: str | None = None  # pass | fail | other
    app_id: str = ""  # the app that initialised it: only that app may query it


@dataclasses.dataclass
class AuthCode:
    """One auth_code the authorisation page issued."""

    code: str
    app_id: str
    user_id: str
    scope: str
    created: datetime
    used: bool = False


@dataclasses.dataclass
class _Failure:
    code: str
    sub_code: str
    times: int


class FakeAlipayGateway:
    """Alipay's ``gateway.do`` on loopback, strict about signatures, parameters and windows."""

    def __init__(
        self,
        app_id: str,
        app_public_key: rsa.RSAPublicKey,
        platform_private_key: rsa.RSAPrivateKey,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.app_id = app_id
        self._app_public_key = app_public_key
        self._platform_key = platform_private_key
        self.clock = clock
        self.received: list[Received] = []
        self.pages: list[Received] = []
        self.images: dict[str, bytes] = {}
        self.menu: dict[str, Any] | None = None
        self.interactions: dict[str, Interaction] = {}
        self.unfollowed: set[str] = set()
        self.enter_used_on: dict[str, date] = {}
        self.indent: int | None = None  # pretty-print answers (whitespace the signature must survive)
        self.response_fields: dict[str, dict[str, Any]] = {}
        self.certifications: dict[str, Certification] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        # The developer's other apps signing with the same key pair (a mini program): they may log users in.
        self.other_app_ids: set[str] = set()
        self.auth_code_ttl = OAUTH_CODE_TTL
        self._failures: dict[str, list[_Failure]] = {}
        self._stalls: dict[str, float] = {}
        self._tamper: dict[str, int] = {}
        self._unsigned: dict[str, int] = {}

    # --- test controls ---

    def fail(self, method: str, code: str, sub_code: str = "", times: int = 1) -> None:
        """The next ``times`` (verified) calls to ``method`` answer ``code`` / ``sub_code``."""
        self._failures.setdefault(method, []).append(_Failure(code, sub_code, times))

    def stall(self, method: str, seconds: float) -> None:
        """Calls to ``method`` take ``seconds`` before answering."""
        self._stalls[method] = seconds

    def tamper(self, method: str, times: int = 1) -> None:
        """The next ``times`` answers to ``method`` are altered after signing."""
        self._tamper[method] = times

    def leave_unsigned(self, method: str, times: int = 1) -> None:
        """The next ``times`` answers to ``method`` carry no ``sign``."""
        self._unsigned[method] = times

    def note_interaction(self, user_id: str, kind: str, at: datetime | None = None) -> None:
        """The user followed, tapped the menu, wrote (``chat``), opened the chat page (``enter_ppchat``)
        or stopped following (``unfollow``)."""
        if kind == "unfollow":
            self.unfollow(user_id)
            return
        if kind not in INTERACTION_KINDS:
            raise ValueError(f"unknown interaction kind {kind!r}")
        self.interactions[user_id] = Interaction(kind, at or self.clock())
        if kind == "follow":
            self.unfollowed.discard(user_id)

    def unfollow(self, user_id: str) -> None:
        """The user stopped following the life account: messages to them answer ``MSG_SD_NOFOLLOW``."""
        self.unfollowed.add(user_id)
        self.interactions.pop(user_id, None)

    def calls(self, method: str) -> list[Received]:
        """Accepted calls of one method, in order."""
        return [item for item in self.received if item.method == method]

    def sent_to(self, user_id: str) -> list[Received]:
        """Customer-service messages delivered to one user."""
        return [item for item in self.calls(CUSTOM_SEND) if item.to_user_id == user_id]

    def texts_to(self, user_id: str) -> list[str]:
        """The text of every customer-service text message to one user."""
        return [str(item.biz["text"]["content"]) for item in self.sent_to(user_id) if item.biz["msg_type"] == "text"]

    def complete_certify(self, certify_id: str, result: str) -> Certification:
        """The user finishes the face on Alipay's page: ``pass``, ``fail`` or ``other`` (someone else's face)."""
        certification = self.certifications[certify_id]
        if result not in CERTIFY_RESULTS:
            raise ValueError(f"unknown result {result!r}")
        if certification.result is not None:
            raise ValueError("this certify_id is already certified")
        if self.clock() - certification.created > CERTIFY_TTL:
            raise ValueError("this certify_id has expired")
        certification.result = result
        return certification

    # --- the gateway ---

    def app(self) -> web.Application:
        """The aiohttp application to serve (``/gateway.do``, ``/inbox``, ``/images/…``)."""
        app = web.Application(client_max_size=MAX_IMAGE_BYTES + 1024 * 1024)
        app.router.add_post("/gateway.do", self._post)
        app.router.add_get("/gateway.do", self._page)
        app.router.add_get("/inbox", self._inbox)
        app.router.add_post("/interaction", self._interaction)
        app.router.add_get("/images/{name}", self._image)
        app.router.add_post("/certify/{certify_id}", self._certify_done)
        app.router.add_get("/oauth2/publicAppAuthorize.htm", self._authorize)
        return app

    # --- web authorisation ---

    def issue_auth_code(self, user_id: str, app_id: str | None = None, scope: str = "auth_base") -> str:
        """What the authorisation page does for the logged-in user: an auth_code for ``user_id``."""
        code = secrets.token_hex(16)
        self.auth_codes[code] = AuthCode(code, app_id or self.app_id, user_id, scope, self.clock())
        return code

    async def _authorize(self, request: web.Request) -> web.Response:
        """Alipay's authorisation page in its app's browser: back to ``redirect_uri`` with an auth_code.

        Who is logged in is the ``SIM_USER_COOKIE`` cookie (the sandbox sets it for the person it plays; a
        test sets it for its browser); without it, the page asks to open the link in Alipay.
        """
        query = request.query
        if query.get("app_id") != self.app_id:
            return login_page(400, "app_id 参数错误")
        scope = query.get("scope", "")
        if scope not in OAUTH_SCOPES:
            return login_page(400, "scope 参数错误")
        redirect = URL(query.get("redirect_uri", ""))
        if not redirect.is_absolute() or redirect.scheme not in ("http", "https"):
            return login_page(400, "redirect_uri 参数错误")
        chosen = query.get(SIM_USER_PARAM, "")
        user_id = chosen or request.cookies.get(SIM_USER_COOKIE, "")
        if not user_id:
            # Outside Alipay's app nobody is logged in: say so, and (development only) let the person
            # holding this browser say which Alipay user they play, as `vaxbot chat` users need to.
            return login_page(
                403, "请在支付宝客户端打开链接。", query, "以哪个支付宝用户打开（开发模拟，填 user_id）："
            )
        code = self.issue_auth_code(user_id, scope=scope)
        back = redirect.update_query(
            app_id=self.app_id, source="alipay_wallet", scope=scope, auth_code=code, state=query.get("state", "")
        )
        response = web.HTTPFound(str(back))
        if chosen:
            response.set_cookie(SIM_USER_COOKIE, chosen, path=request.path, httponly=True, samesite="Lax")
        raise response

    def _oauth_token(self, params: dict[str, str], now: datetime) -> dict[str, Any]:
        if params.get("grant_type") != "authorization_code":
            raise Refusal("40002", "isv.grant-type-invalid", "grant_type参数不正确")
        issued = self.auth_codes.get(params.get("code", ""))
        caller = params.get("app_id", self.app_id)  # a code works only for the app it was issued to
        if issued is None or issued.used or issued.app_id != caller or now - issued.created > self.auth_code_ttl:
            raise Refusal("40002", "isv.code-invalid", "授权码(auth_code)错误、状态不对或过期")
        issued.used = True
        return {
            "user_id": issued.user_id,
            "access_token": secrets.token_hex(20),
            "expires_in": 1296000,
            "refresh_token": secrets.token_hex(20),
            "re_expires_in": 2592000,
            "auth_start": now.astimezone(CHINA).strftime(TIMESTAMP_FORMAT),
        }

    async def _interaction(self, request: web.Request) -> web.Response:
        """Development only: what a user just did, which Alipay knows because it carried it to us.

        The sandbox and ``vaxbot chat`` play Alipay's app in another process; this is how the gateway
        half of the fake learns what its app half saw, so the customer-service windows hold.
        """
        try:
            self.note_interaction(request.query["user"], request.query["kind"])
        except (KeyError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _inbox(self, request: web.Request) -> web.Response:
        """Development only: the messages one user received, from position ``after``."""
        user = request.query.get("user", "")
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            after = 0
        items = [
            {"position": position, "method": item.method, "biz": item.biz, "at": item.at.isoformat()}
            for position, item in enumerate(self.received)
            if position >= after and item.method in MESSAGE_METHODS and item.to_user_id == user
        ]
        return web.json_response({"items": items, "next": len(self.received)})

    async def _image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        content = self.images.get(name.rsplit(".", 1)[0])
        if content is None:
            raise web.HTTPNotFound()
        return web.Response(body=content, content_type="image/jpeg" if content.startswith(b"\xff\xd8") else "image/png")

    async def _post(self, request: web.Request) -> web.Response:
        method = request.query.get("method", "")
        try:
            params, files = await self._read(request)
            method = params.get("method", "")
            self._verify(params, METHODS)
            if stall := self._stalls.get(method):
                await asyncio.sleep(stall)
            self._maybe_fail(method)
            if method == OAUTH_TOKEN:
                # Its success answer has no code and msg: the signed object is the answer.
                token = self._oauth_token(params, self.clock())
                self.received.append(Received(method, {}, params, self.clock()))
                return self._answer(method, token)
            content = self._call(method, params, files, request)
        except Refusal as refusal:
            return self._answer(method, refusal.content(), unsigned=refusal.unsigned)
        content = {"code": "10000", "msg": "Success", **content, **self.response_fields.get(method, {})}
        return self._answer(method, content)

    async def _page(self, request: web.Request) -> web.Response:
        """A page API opened in the user's browser: verified, then a placeholder page."""
        params = dict(request.query)
        try:
            self._verify(params, PAGE_METHODS)
            biz = parse_biz(params)
        except Refusal as refusal:
            page = f"<html><body><h1>{escape(refusal.code)}</h1><p>{escape(refusal.sub_code)}</p></body></html>"
            return web.Response(status=400, text=page, content_type="text/html", charset="utf-8")
        self.pages.append(Received(params["method"], biz, params, self.clock()))
        certify_id = escape(str(biz.get("certify_id", "")))
        certification = self.certifications.get(str(biz.get("certify_id", "")))
        choices = ""
        if certification is not None and certification.result is None:
            # Relative to gateway.do, wherever the fake is mounted.
            buttons = "".join(
                f'<button type="submit" name="result" value="{value}">{label}</button> '
                for value, label in (("pass", "通过"), ("fail", "不通过"), ("other", "换一个人"))
            )
            choices = f'<form method="post" action="certify/{certify_id}">{buttons}</form>'
        page = f"<html><body><h1>支付宝身份验证（开发模拟）</h1><p>certify_id: {certify_id}</p>{choices}</body></html>"
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def _certify_done(self, request: web.Request) -> web.Response:
        """The user's choice on the page; Alipay sends the browser to return_url whatever the result."""
        form = await request.post()
        try:
            certification = self.complete_certify(request.match_info["certify_id"], str(form.get("result", "")))
        except KeyError:
            return web.Response(status=404, text="OPEN_CERTIFY_BILL_NOT_EXIST", charset="utf-8")
        except ValueError as exc:
            return web.Response(status=409, text=str(exc), charset="utf-8")
        raise web.HTTPSeeOther(certification.return_url)

    async def _read(self, request: web.Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
        """Query-string and body parameters (form or multipart), and uploaded files."""
        params = dict(request.query)
        files: dict[str, tuple[str, bytes]] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or not part.name:
                    raise invalid("multipart")
                if part.filename:
                    files[part.name] = (part.filename, bytes(await part.read()))
                else:
                    params[part.name] = await part.text()
            return params, files
        raw = await request.read()
        charset = params.get("charset") or request.charset or "utf-8"
        try:
            pairs = parse_qsl(
                raw.decode("latin-1"), keep_blank_values=True, encoding=alipay_sign.codec(charset), errors="strict"
            )
        except (LookupError, UnicodeDecodeError) as exc:
            raise Refusal("40002", "isv.invalid-charset", "字符集错误") from exc
        params.update(pairs)
        return params, files

    def _verify(self, params: dict[str, str], methods: frozenset[str]) -> None:
        """Alipay's common checks, in its order; the signature last (it needs everything else)."""
        method = params.get("method", "")
        if not method:
            raise Refusal("40001", "isv.missing-method", "缺少方法名参数", unsigned=True)
        if method not in methods:
            raise Refusal("40002", "isv.invalid-method", "不存在的方法名", unsigned=True)
        app_id = params.get("app_id", "")
        if not app_id:
            raise Refusal("40001", "isv.missing-app-id", "缺少AppID参数", unsigned=True)
        if app_id != self.app_id and app_id not in self.other_app_ids:
            raise Refusal("40002", "isv.invalid-app-id", "无效的AppID参数", unsigned=True)
        if "format" in params and params["format"].upper() != "JSON":
            raise Refusal("40002", "isv.invalid-format", "无效的数据格式参数")
        charset = params.get("charset", "")
        try:
            alipay_sign.codec(charset)
        except LookupError as exc:
            raise Refusal("40002", "isv.invalid-charset", "字符集错误") from exc
        sign_type = params.get("sign_type", "")
        if not sign_type:
            raise Refusal("40001", "isv.missing-signature-type", "缺少签名类型参数")
        if sign_type != "RSA2":
            raise Refusal("40002", "isv.invalid-signature-type", "无效的签名类型参数")
        if not params.get("version"):
            raise Refusal("40001", "isv.missing-version", "缺少版本参数")
        if params["version"] != "1.0":
            raise Refusal("40002", "isv.invalid-parameter", "无效的版本参数")
        stamp = params.get("timestamp", "")
        if not stamp:
            raise Refusal("40001", "isv.missing-timestamp", "缺少时间戳参数")
        try:
            sent = datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=CHINA)
        except ValueError as exc:
            raise Refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数") from exc
        if abs(self.clock() - sent) > TIMESTAMP_TOLERANCE:
            raise Refusal("40002", "isv.invalid-timestamp", "非法的时间戳参数")
        signature = params.get("sign", "")
        if not signature:
            raise Refusal("40001", "isv.missing-signature", "缺少签名参数")
        content = get_sign_content({key: value for key, value in params.items() if key != "sign"})
        if not alipay_sign.verify(self._app_public_key, content, signature, charset):
            raise Refusal(
                "40002",
                "isv.invalid-signature",
                f"验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{content}",
            )

    def _maybe_fail(self, method: str) -> None:
        queue = self._failures.get(method)
        if queue:
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            raise Refusal(failure.code, failure.sub_code, f"simulated {failure.code}")

    def _call(
        self, method: str, params: dict[str, str], files: dict[str, tuple[str, bytes]], request: web.Request
    ) -> dict[str, Any]:
        now = self.clock()
        if method == IMAGE_UPLOAD:
            return self._upload(params, files, request, now)
        biz = parse_biz(params)
        if method in (CERTIFY_INITIALIZE, CERTIFY_QUERY):
            certify = self._certify_initialize if method == CERTIFY_INITIALIZE else self._certify_query
            answer = certify(biz, now, params.get("app_id", self.app_id))
            self.received.append(Received(method, biz, params, now))
            return answer
        if method == CUSTOM_SEND:
            self._custom_send(biz, now)
        elif method == SINGLE_SEND:
            self._not_unfollowed(check_template_message(biz))
        elif method == MINI_SEND:
            check_mini_message(biz)
        elif method == MENU_CREATE:
            check_menu(biz)
        self.received.append(Received(method, biz, params, now))
        if method == MENU_CREATE:
            self.menu = biz
            return {"menu_key": "default"}
        return {}

    # --- methods ---

    def _custom_send(self, biz: dict[str, Any], now: datetime) -> None:
        user = check_custom_message(biz)
        self._not_unfollowed(user)
        self._check_window(user, biz.get("event_type"), now)

    def _not_unfollowed(self, user: str) -> None:
        if user in self.unfollowed:
            raise Refusal("40004", "PUB.MSG_SD_NOFOLLOW", "用户未关注生活号")

    def _check_window(self, user: str, event_type: Any, now: datetime) -> None:
        """A message must answer the user's last interaction, in its time."""
        last = self.interactions.get(user)
        if event_type:
            if event_type not in EVENT_TYPES or last is None or last.kind != event_type:
                raise Refusal("40004", "PUB.MSG_SD_EVENT_TYPE_NOT_EXISTS", "事件类型不存在")
            if event_type == "enter_ppchat":
                today = now.astimezone(CHINA).date()
                if self.enter_used_on.get(user) == today:
                    raise Refusal("40004", "PUB.MSG_SD_OVER_TIME", "今日进入生活号的消息已发送")
                self.enter_used_on[user] = today
                return
        elif last is None or last.kind != "chat":
            raise Refusal("40004", "PUB.MSG_SD_OVER_TIME", "超过可发送消息的时间")
        if now - last.at > WINDOW:
            raise Refusal("40004", "PUB.MSG_SD_OVER_TIME", "超过可发送消息的时间")

    def _certify_initialize(self, biz: dict[str, Any], now: datetime, app_id: str) -> dict[str, Any]:
        order_no, cert_name, cert_no, return_url = check_certify_initialize(biz)
        if any(item.outer_order_no == order_no and item.app_id == app_id for item in self.certifications.values()):
            raise Refusal("40004", "OUTER_ORDER_NO_REPEATED", "商户请求唯一标识重复")
        certify_id = secrets.token_hex(16)
        self.certifications[certify_id] = Certification(
            certify_id, order_no, cert_name, cert_no, return_url, now, app_id=app_id
        )
        return {"certify_id": certify_id}

    def _certify_query(self, biz: dict[str, Any], now: datetime, app_id: str) -> dict[str, Any]:
        certification = self.certifications.get(str(biz.get("certify_id", "")))
        if certification is not None and certification.app_id != app_id:
            certification = None  # another app's certify_id is unknown to this one
        if certification is None or (certification.result is None and now - certification.created > CERTIFY_TTL):
            raise Refusal("40004", "OPEN_CERTIFY_BILL_NOT_EXIST", "无效的certify_id")
        # CERT_INFO names the person: someone else's face does not pass, and "F" also means "not yet".
        return {"passed": "T" if certification.result == "pass" else "F"}

    def _upload(
        self, params: dict[str, str], files: dict[str, tuple[str, bytes]], request: web.Request, now: datetime
    ) -> dict[str, Any]:
        image_type, content = check_image_upload(params, files)
        image_id = secrets.token_urlsafe(16)
        self.images[image_id] = content
        text_params = dict(params)
        self.received.append(
            Received(IMAGE_UPLOAD, dict(text_params), text_params, now, files={"image_content": content})
        )
        # On this fake's own host, wherever it is mounted.
        base = str(request.url.with_query(None)).removesuffix("/gateway.do")
        return {"image_id": image_id, "image_url": f"{base}/images/{image_id}.{image_type}"}

    # --- answers ---

    def _answer(self, method: str, content: dict[str, Any], *, unsigned: bool = False) -> web.Response:
        """``{"<method>_response": {...}, "sign": "..."}`` signed over the exact text of the object."""
        unsigned = unsigned or not method
        key = "error_response" if unsigned else method.replace(".", "_") + "_response"
        separators = (", ", ": ") if self.indent is not None else (",", ":")
        inner = json.dumps(content, ensure_ascii=False, indent=self.indent, separators=separators)
        sep = " " if self.indent is not None else ""
        body = "{" + sep + json.dumps(key) + ":" + sep + inner
        if not unsigned and not self._take(self._unsigned, method):
            signature = alipay_sign.sign(self._platform_key, inner)
            if self._take(self._tamper, method):
                body = "{" + sep + json.dumps(key) + ":" + sep + inner.replace(content["msg"], content["msg"] + "!", 1)
            body += "," + sep + '"sign":' + sep + json.dumps(signature)
        body += sep + "}"
        return web.Response(text=body, content_type="application/json", charset="utf-8")

    @staticmethod
    def _take(counter: dict[str, int], method: str) -> bool:
        left = counter.get(method, 0)
        if left <= 0:
            return False
        counter[method] = left - 1
        return True
