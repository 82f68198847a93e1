"""A faithful fake of WeChat for development and tests: both directions of the protocol.

* :class:`WeChatClientSim` plays WeChat's servers calling *us*: it builds signed (and, in safe or
  compatible mode, encrypted) webhook requests exactly as WeChat does, and opens encrypted replies.
* :class:`FakeWeChatAPI` plays WeChat's server API that *we* call: it issues access tokens, verifies
  them on every call, validates request bodies, records what it receives, and can be told to fail with
  any errcode or to stall. It also serves the mini program's face verification
  (``/cityservice/face/identify/getverifyid`` and ``queryverifyinfo``), finished by
  :meth:`FakeWeChatAPI.complete_face`, and the Official Account's web authorisation: the
  ``/connect/oauth2/authorize`` page (WeChat's in-app browser, which knows who is logged in) and
  ``/sns/oauth2/access_token``, which turns its single-use, short-lived code into the openid.

Refused in production (see ``bot.cli``); nothing here touches the network beyond loopback.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import xmltodict
from aiohttp import web
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from yarl import URL

from bot.dev.fakes.login import SIM_USER_PARAM, login_page
from bot.platforms.wechat.inbound import sha1_signature

# --- WeChat → us ----------------------------------------------------------------------------


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def message_xml(to_user: str, from_user: str, msg_type: str, fields: Mapping[str, str | int], create_time: int) -> str:
    """A WeChat push message as XML (every one starts ToUserName, FromUserName, CreateTime, MsgType)."""
    parts = [
        f"<ToUserName>{_cdata(to_user)}</ToUserName>",
        f"<FromUserName>{_cdata(from_user)}</FromUserName>",
        f"<CreateTime>{create_time}</CreateTime>",
        f"<MsgType>{_cdata(msg_type)}</MsgType>",
    ]
    for name, value in fields.items():
        if isinstance(value, int):
            parts.append(f"<{name}>{value}</{name}>")
        elif value.startswith("<"):  # already-built nested XML (ScanCodeInfo)
            parts.append(f"<{name}>{value}</{name}>")
        else:
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


@dataclasses.dataclass
class SignedRequest:
    """What WeChat would POST: query parameters and body."""

    query: dict[str, str]
    body: bytes


class WeChatClientSim:
    """Builds webhook requests as WeChat's servers do, for one account (token, EncodingAESKey, app id)."""

    def __init__(self, token: str, app_id: str, aes_key: str = "", original_id: str = "gh_vaxbotdemo01") -> None:
        self.token = token
        self.app_id = app_id
        self.aes_key = aes_key
        self.original_id = original_id
        self._msg_ids = int(time.time()) * 1000
        self._crypto = WeChatCrypto(token, aes_key, app_id) if aes_key else None

    def next_msg_id(self) -> int:
        """A fresh 64-bit-looking message id."""
        self._msg_ids += 1
        return self._msg_ids

    def text(self, user: str, content: str, msg_id: int | None = None, create_time: int | None = None) -> str:
        """A text message."""
        return message_xml(
            self.original_id,
            user,
            "text",
            {"Content": content, "MsgId": msg_id if msg_id is not None else self.next_msg_id()},
            create_time or int(time.time()),
        )

    def event(self, user: str, event: str, create_time: int | None = None, **fields: str | int) -> str:
        """An event (subscribe, unsubscribe, CLICK, SCAN, scancode_push, TEMPLATESENDJOBFINISH, …)."""
        return message_xml(self.original_id, user, "event", {"Event": event, **fields}, create_time or int(time.time()))

    def url_check(self, echostr: str, timestamp: int | None = None) -> dict[str, str]:
        """The GET handshake's query."""
        ts = str(timestamp or int(time.time()))
        nonce = str(secrets.randbelow(10**9))
        return {"signature": sha1_signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": echostr}

    def sign(
        self, xml: str, mode: str = "safe", timestamp: int | None = None, nonce: str | None = None
    ) -> SignedRequest:
        """Wrap ``xml`` as WeChat would in ``plain``, ``compatible`` or ``safe`` mode."""
        ts = str(timestamp or int(time.time()))
        nonce = nonce or str(secrets.randbelow(10**9))
        query = {"signature": sha1_signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if mode == "plain":
            return SignedRequest(query, xml.encode("utf-8"))
        assert self.aes_key, "safe and compatible modes need an EncodingAESKey"
        key = base64.b64decode(self.aes_key + "=")
        encrypt = PrpCrypto(key).encrypt(xml, self.app_id).decode("ascii")
        query.update(encrypt_type="aes", msg_signature=sha1_signature(self.token, ts, nonce, encrypt))
        if mode == "safe":
            body = f"<xml><ToUserName>{_cdata(self.original_id)}</ToUserName><Encrypt>{_cdata(encrypt)}</Encrypt></xml>"
        else:  # compatible: the plain fields stay, with the ciphertext beside them
            body = xml.replace("</xml>", f"<Encrypt>{_cdata(encrypt)}</Encrypt></xml>")
        return SignedRequest(query, body.encode("utf-8"))

    def open_reply(self, body: str) -> dict[str, Any] | None:
        """Parse our passive reply as WeChat would (verifying and decrypting an encrypted one)."""
        if body.strip() in ("", "success"):
            return None
        outer = xmltodict.parse(body)["xml"]
        if "Encrypt" in outer:
            assert self._crypto is not None
            expected = sha1_signature(self.token, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
            if expected != outer["MsgSignature"]:
                raise AssertionError("reply MsgSignature does not verify")
            inner = self._crypto.decrypt_message(body, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"])
            return dict(xmltodict.parse(inner)["xml"])
        return dict(outer)


# --- us → WeChat ----------------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    """One API call the fake accepted."""

    path: str
    body: dict[str, Any]
    token: str


@dataclasses.dataclass
class _Failure:
    errcode: int
    times: int


class FakeWeChatAPI:
    """WeChat's ``/cgi-bin`` API on loopback, strict about tokens and bodies."""

    def __init__(self, appid: str, secret: str, *, token_ttl: int = 7200, grace: int = 300) -> None:
        self.appid = appid
        self.secret = secret
        self.token_ttl = token_ttl
        self.grace = grace
        self.tokens: dict[str, float] = {}  # token → expiry (epoch seconds)
        self.current_token: str | None = None
        self.token_fetches = 0
        self.received: list[Received] = []
        self.media: dict[str, bytes] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._stalls: dict[str, float] = {}
        self.subscribers: list[asyncio.Queue[Received]] = []
        self.face_sessions: dict[str, FaceSession] = {}  # verify_id → session (微信人脸核身)
        self.oauth_codes: dict[str, OAuthCode] = {}  # code → whom it was issued for (网页授权)
        self.oauth_code_ttl = OAUTH_CODE_TTL
        self.unionids: dict[str, str] = {}  # openid → unionid, for an account bound to an Open Platform account

    # --- test controls ---
    def fail(self, path: str, errcode: int, times: int = 1) -> None:
        """The next ``times`` calls to ``path`` answer ``errcode``."""
        self._failures.setdefault(path, []).append(_Failure(errcode, times))

    def stall(self, path: str, seconds: float) -> None:
        """Calls to ``path`` take ``seconds`` before answering."""
        self._stalls[path] = seconds

    def expire_all_tokens(self) -> None:
        """Every issued token stops working at once (as if WeChat rotated it elsewhere)."""
        self.tokens.clear()
        self.current_token = None

    def sent_to(self, openid: str) -> list[Received]:
        """Customer-service messages delivered to one user."""
        return [
            item for item in self.received if item.path == "message/custom/send" and item.body.get("touser") == openid
        ]

    def texts_to(self, openid: str) -> list[str]:
        """The text of every customer-service text message to one user."""
        return [item.body["text"]["content"] for item in self.sent_to(openid) if item.body.get("msgtype") == "text"]

    def complete_face(self, verify_id: str, result: str) -> FaceSession:
        """The user runs ``wx.requestFacialVerify``: ``pass``, ``fail``, ``other`` (another face) or ``cancel``."""
        session = self.face_sessions[verify_id]
        if result not in FACE_VERIFY_RET:
            raise ValueError(f"unknown result {result!r}")
        if session.verify_ret is not None:
            raise ValueError("this verify_id is already used")
        if time.time() - session.created > FACE_VERIFY_TTL:
            raise ValueError("this verify_id has expired")
        session.verify_ret = FACE_VERIFY_RET[result]
        return session

    # --- the API ---
    def app(self) -> web.Application:
        """The aiohttp application to serve (mount at ``/cgi-bin``)."""
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/cgi-bin/token", self._token_legacy)
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        app.router.add_post("/cgi-bin/{path:.+}", self._call)
        app.router.add_post("/cityservice/face/identify/{name}", self._face)
        app.router.add_get("/connect/oauth2/authorize", self._authorize)
        app.router.add_get("/sns/oauth2/access_token", self._oauth_token)
        app.router.add_get("/inbox", self._inbox)
        return app

    # --- web authorisation (网页授权) ---

    def issue_oauth_code(self, openid: str, appid: str | None = None, scope: str = "snsapi_base") -> str:
        """What the authorize page does for the logged-in user: a code for ``openid`` (tests may call it)."""
        code = secrets.token_urlsafe(24)
        self.oauth_codes[code] = OAuthCode(code, appid or self.appid, openid, scope, time.time())
        return code

    async def _authorize(self, request: web.Request) -> web.Response:
        """WeChat's authorisation page, as its in-app browser shows it for the logged-in user.

        Who is logged in is the ``SIM_USER_COOKIE`` cookie: that is the phone's WeChat account (the
        sandbox sets it for the person it plays; a test sets it for its browser). Without it, the page
        says what WeChat says outside its app: open the link in WeChat.
        """
        query = request.query
        if query.get("appid") != self.appid:
            return login_page(400, "appid 参数错误")
        if query.get("response_type") != "code":
            return login_page(400, "response_type 参数错误")
        scope = query.get("scope", "")
        if scope not in OAUTH_SCOPES:
            return login_page(400, "scope 参数错误")
        redirect = URL(query.get("redirect_uri", ""))
        if not redirect.is_absolute() or redirect.scheme not in ("http", "https"):
            return login_page(400, "redirect_uri 参数错误")
        chosen = query.get(SIM_USER_PARAM, "")
        openid = chosen or request.cookies.get(SIM_USER_COOKIE, "")
        if not openid:
            # Outside WeChat's app nobody is logged in: say so, and (development only) let the person
            # holding this browser say which WeChat user they play, as `vaxbot chat` users need to.
            return login_page(403, "请在微信客户端打开链接。", query, "以哪个微信用户打开（开发模拟，填 openid）：")
        code = self.issue_oauth_code(openid, scope=scope)
        back = redirect.update_query(code=code, state=query.get("state", ""))
        response = web.HTTPFound(str(back))
        if chosen:
            response.set_cookie(SIM_USER_COOKIE, chosen, path=request.path, httponly=True, samesite="Lax")
        raise response

    async def _oauth_token(self, request: web.Request) -> web.Response:
        """``sns/oauth2/access_token``: the app's id and secret, and a code issued to it, at most once."""
        if (failed := await self._maybe_fail("sns/oauth2/access_token")) is not None:
            return failed
        query = request.query
        if query.get("appid") != self.appid:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if query.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        if query.get("grant_type") != "authorization_code":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        code = query.get("code", "")
        if not code:
            return web.json_response({"errcode": 41008, "errmsg": "missing code"})
        issued = self.oauth_codes.get(code)
        if issued is None or issued.appid != self.appid or time.time() - issued.created >= self.oauth_code_ttl:
            return web.json_response({"errcode": 40029, "errmsg": "invalid code"})
        if issued.used:
            return web.json_response({"errcode": 40163, "errmsg": "code been used"})
        issued.used = True
        answer = {
            "access_token": secrets.token_urlsafe(32),
            "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(32),
            "openid": issued.openid,
            "scope": issued.scope,
        }
        if issued.openid in self.unionids:
            answer["unionid"] = self.unionids[issued.openid]
        return web.json_response(answer)

    async def _inbox(self, request: web.Request) -> web.Response:
        """Development only: what was sent to one user, from position ``after`` (for ``vaxbot chat``)."""
        touser = request.query.get("touser", "")
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            after = 0
        items = [
            {"position": position, "path": item.path, "body": item.body}
            for position, item in enumerate(self.received)
            if position >= after and item.body.get("touser") == touser
        ]
        return web.json_response({"items": items, "next": len(self.received)})

    def _issue(self) -> str:
        now = time.time()
        if self.current_token:
            # The old token keeps working for a grace period after a new one is issued.
            self.tokens[self.current_token] = min(self.tokens.get(self.current_token, 0), now + self.grace)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = now + self.token_ttl
        self.current_token = token
        self.token_fetches += 1
        return token

    async def _maybe_fail(self, path: str) -> web.Response | None:
        stall = self._stalls.get(path)
        if stall:
            await asyncio.sleep(stall)
        queue = self._failures.get(path)
        if queue:
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            return web.json_response({"errcode": failure.errcode, "errmsg": f"simulated {failure.errcode}"})
        return None

    async def _token_legacy(self, request: web.Request) -> web.Response:
        if (failed := await self._maybe_fail("token")) is not None:
            return failed
        query = request.query
        if query.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if query.get("appid") != self.appid or query.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        return web.json_response({"access_token": self._issue(), "expires_in": self.token_ttl})

    async def _stable_token(self, request: web.Request) -> web.Response:
        if (failed := await self._maybe_fail("stable_token")) is not None:
            return failed
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        if body.get("grant_type") != "client_credential":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        if body.get("appid") != self.appid or body.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        now = time.time()
        valid = self.current_token and self.tokens.get(self.current_token, 0) > now
        if body.get("force_refresh") or not valid:
            token = self._issue()
        else:
            assert self.current_token is not None
            token = self.current_token
        return web.json_response({"access_token": token, "expires_in": int(self.tokens[token] - now)})

    async def _call(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        token = request.query.get("access_token", "")
        if not token:
            return web.json_response({"errcode": 41001, "errmsg": "access_token missing"})
        expiry = self.tokens.get(token)
        if expiry is None:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if expiry <= time.time():
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        if (failed := await self._maybe_fail(path)) is not None:
            return failed
        if path == "media/upload":
            return await self._upload(request, token)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        problem = self._validate(path, body)
        if problem is not None:
            return web.json_response({"errcode": problem[0], "errmsg": problem[1]})
        item = Received(path, body, token)
        self.received.append(item)
        for queue in self.subscribers:
            queue.put_nowait(item)
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
        if path == "message/template/send":
            answer["msgid"] = secrets.randbelow(10**15)
        return web.json_response(answer)

    def _validate(self, path: str, body: Any) -> tuple[int, str] | None:
        """The checks this API makes on a body (an errcode and message), None when it is accepted."""
        return _validate(path, body)

    async def _upload(self, request: web.Request, token: str) -> web.Response:
        if request.query.get("type") != "image":
            return web.json_response({"errcode": 40004, "errmsg": "invalid media type"})
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "name", None) != "media":
            return web.json_response({"errcode": 41005, "errmsg": "media data missing"})
        content = await part.read()  # type: ignore[union-attr]
        if len(content) > 2 * 1024 * 1024:
            return web.json_response({"errcode": 40009, "errmsg": "invalid image size"})
        if not content.startswith(b"\x89PNG") and not content.startswith(b"\xff\xd8"):
            return web.json_response({"errcode": 40005, "errmsg": "invalid file type"})
        media_id = secrets.token_urlsafe(24)
        self.media[media_id] = content
        self.received.append(Received("media/upload", {"media_id": media_id, "size": len(content)}, token))
        return web.json_response({"type": "image", "media_id": media_id, "created_at": int(time.time())})

    # --- face verification (微信人脸核身 2.0) ---

    async def _face(self, request: web.Request) -> web.Response:
        """``getverifyid`` and ``queryverifyinfo`` under ``/cityservice/face/identify/``, token checked first."""
        path = "cityservice/face/identify/" + request.match_info["name"]
        token = request.query.get("access_token", "")
        if not token:
            return web.json_response({"errcode": 41001, "errmsg": "access_token missing"})
        expiry = self.tokens.get(token)
        if expiry is None:
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        if expiry <= time.time():
            return web.json_response({"errcode": 42001, "errmsg": "access_token expired"})
        if (failed := await self._maybe_fail(path)) is not None:
            return failed
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        if not isinstance(body, dict):
            return web.json_response({"errcode": 47001, "errmsg": "data format error"})
        if path.endswith("/getverifyid"):
            answer = self._getverifyid(body)
        elif path.endswith("/queryverifyinfo"):
            answer = self._queryverifyinfo(body)
        else:
            answer = {"errcode": 48001, "errmsg": f"api unauthorized: {escape(path)}"}
        if answer["errcode"] == 0:
            self.received.append(Received(path, body, token))
        return web.json_response(answer)

    def _getverifyid(self, body: dict[str, Any]) -> dict[str, Any]:
        seq_no, cert, openid = body.get("out_seq_no"), body.get("cert_info"), body.get("openid")
        if not isinstance(seq_no, str) or not _OUT_SEQ_NO.match(seq_no):
            return {"errcode": FACE_INVALID_ARGS, "errmsg": "invalid args: out_seq_no"}
        if (
            not isinstance(cert, dict)
            or cert.get("cert_type") != "IDENTITY_CARD"
            or not isinstance(cert.get("cert_name"), str)
            or not cert["cert_name"].strip()
            or not isinstance(cert.get("cert_no"), str)
            or not _ID_NUMBER.match(cert["cert_no"])
        ):
            return {"errcode": FACE_INVALID_ARGS, "errmsg": "invalid args: cert_info"}
        if not isinstance(openid, str) or not openid:
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if any(session.out_seq_no == seq_no for session in self.face_sessions.values()):
            return {"errcode": FACE_DUPLICATE_SEQ_NO, "errmsg": "out_seq_no already used"}
        verify_id = secrets.token_urlsafe(32)
        self.face_sessions[verify_id] = FaceSession(
            verify_id, seq_no, openid, cert["cert_type"], cert["cert_name"], cert["cert_no"], time.time()
        )
        return {"errcode": 0, "errmsg": "ok", "verify_id": verify_id, "expires_in": FACE_VERIFY_TTL}

    def _queryverifyinfo(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self.face_sessions.get(str(body.get("verify_id", "")))
        if session is None:
            return {"errcode": FACE_INVALID_VERIFY_ID, "errmsg": "invalid verify_id"}
        # WeChat checks what we send against the session and answers an errcode, not a verify_ret.
        if (
            body.get("out_seq_no") != session.out_seq_no
            or body.get("openid") != session.openid
            or body.get("cert_hash") != session.cert_hash
        ):
            return {"errcode": FACE_SESSION_MISMATCH, "errmsg": "out_seq_no, openid or cert_hash mismatch"}
        if session.verify_ret is None:
            if time.time() - session.created > FACE_VERIFY_TTL:
                return {"errcode": FACE_EXPIRED, "errmsg": "verify_id expired"}
            return {"errcode": 0, "errmsg": "ok"}  # the face has not been done yet
        return {"errcode": 0, "errmsg": "ok", "verify_ret": session.verify_ret}


# Face verification: verify_ret values from queryverifyinfo's enum (10000 识别成功, 10002 人脸特征检测失败,
# 10004 比对人脸信息不符, 90004 用户在识别过程中取消). WeChat documents that a mismatched out_seq_no, openid
# or cert_hash answers an errcode instead of a verify_ret, but not which one: the 84xxx codes here are the
# fake's (84001 is the old face API's "invalid identify id"), and 40097 is WeChat's generic "invalid args".
FACE_VERIFY_TTL = 3600  # getverifyid's expires_in
FACE_VERIFY_RET = {"pass": 10000, "fail": 10002, "other": 10004, "cancel": 90004}
FACE_INVALID_ARGS = 40097
FACE_INVALID_VERIFY_ID = 84001
FACE_EXPIRED = 84002
FACE_SESSION_MISMATCH = 84014
FACE_DUPLICATE_SEQ_NO = 84015
_OUT_SEQ_NO = re.compile(r"^[A-Za-z0-9_-]{5,32}$")
_ID_NUMBER = re.compile(r"^\d{17}[\dX]$")


# Web authorisation: a code works once, within five minutes (WeChat's documented lifetime); the
# logged-in user of the simulated in-app browser is this cookie.
OAUTH_CODE_TTL = 300
OAUTH_SCOPES = frozenset({"snsapi_base", "snsapi_userinfo"})
SIM_USER_COOKIE = "vx_sim_wechat_user"


@dataclasses.dataclass
class OAuthCode:
    """One code the authorize page issued."""

    code: str
    appid: str
    openid: str
    scope: str
    created: float
    used: bool = False


@dataclasses.dataclass
class FaceSession:
    """One ``getverifyid`` session and, once the user ran the face, its ``verify_ret``."""

    verify_id: str
    out_seq_no: str
    openid: str
    cert_type: str
    cert_name: str
    cert_no: str
    created: float
    verify_ret: int | None = None

    @property
    def cert_hash(self) -> str:
        """WeChat's digest of the session's identity (each value base64'd, then SHA-256 of the joined string)."""
        parts = {"cert_type": self.cert_type, "cert_name": self.cert_name, "cert_no": self.cert_no}
        text = "&".join(f"{key}={base64.b64encode(value.encode()).decode()}" for key, value in parts.items())
        return hashlib.sha256(text.encode()).hexdigest()


def _validate(path: str, body: Any) -> tuple[int, str] | None:
    """The checks WeChat makes on the bodies vaxbot sends (enough to catch our mistakes)."""
    if not isinstance(body, dict):
        return (47001, "data format error")
    if path == "message/custom/send":
        msgtype = body.get("msgtype")
        if not body.get("touser"):
            return (40003, "invalid openid")
        if msgtype == "text" and isinstance(body.get("text"), dict) and body["text"].get("content"):
            return None
        if msgtype == "image" and isinstance(body.get("image"), dict) and body["image"].get("media_id"):
            return None
        if msgtype == "news" and len(body.get("news", {}).get("articles", [])) == 1:
            return None
        return (44002, "empty post data or bad msgtype")
    if path in ("message/template/send", "message/subscribe/bizsend"):
        if not body.get("touser"):
            return (40003, "invalid openid")
        if not body.get("template_id"):
            return (40037, "invalid template_id")
        data = body.get("data")
        if not isinstance(data, dict) or not all(isinstance(v, dict) and "value" in v for v in data.values()):
            return (47003, "argument invalid! data.value")
        if path.endswith("bizsend"):
            for key, value in data.items():
                if key.startswith("thing") and len(str(value["value"])) > 20:
                    return (47003, f"argument invalid! data.{key}.value")
        return None
    if path == "menu/create":
        buttons = body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return (40016, "invalid button size")
        for button in buttons:
            subs = button.get("sub_button", [])
            if len(subs) > 5:
                return (40017, "invalid sub button size")
            if len(button.get("name", "").encode("utf-8")) > 16:
                return (40018, "invalid button name size")
            for sub in subs:
                if sub.get("type") == "click" and not sub.get("key"):
                    return (40019, "invalid button key size")
                if len(sub.get("name", "").encode("utf-8")) > 60:
                    return (40018, "invalid button name size")
        return None
    return (48001, f"api unauthorized: {escape(path)}")


def dump(received: list[Received]) -> str:
    """A readable listing (for test failure messages)."""
    return "\n".join(f"{item.path} {json.dumps(item.body, ensure_ascii=False)}" for item in received)
