"""A fake of WeChat for a mini program: both directions, strict as the real one about what it checks.

* :class:`MiniProgramClientSim` plays WeChat pushing to ``/wechat/mini``: the mini program's token and
  EncodingAESKey, XML or JSON bodies, plain or safe mode.
* :class:`FakeMiniProgramAPI` plays WeChat's API for the mini program: its own app id and secret and access
  tokens (a token of the Official Account is refused), ``jscode2session`` (a login code works once, for five
  minutes, and only for the app it was issued to), customer-service messages (``text``, ``image``, ``link``,
  ``miniprogrampage``; no ``news``) within the window the user's contact opened and its allowance (5 after a
  message, 2 after opening the chat; 45047 beyond), and ``message/subscribe/send``,
  which checks each field's type and length and spends one consent the user gave, refusing (43101) without one.
  The face verification (``getverifyid``/``queryverifyinfo``) is the Official Account fake's, for this app.

Development and tests only; nothing here touches the network beyond loopback.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web
from wechatpy.crypto import PrpCrypto

from bot.dev.fakes.wechat import FakeWeChatAPI, SignedRequest, WeChatClientSim, message_xml
from bot.platforms.wechat.inbound import sha1_signature

LOGIN_CODE_TTL = 300  # wx.login's code: five minutes
MESSAGE_WINDOW = 48 * 3600  # after the user's message
ENTER_WINDOW = 60  # after the user opened the customer-service chat
MESSAGE_MESSAGES, ENTER_MESSAGES = 5, 2  # customer-service messages allowed within each window
CUSTOMER_SERVICE_TYPES = frozenset({"text", "image", "link", "miniprogrampage"})
# The fake's own reading of WeChat's table of subscription value types (limit, allowed characters).
_HAN = "\u4e00-\u9fff"
_TYPES: dict[str, tuple[int, str]] = {
    "thing": (20, r".+"),
    "number": (32, r"\d+(\.\d+)?"),
    "letter": (32, r"[A-Za-z]+"),
    "symbol": (5, r"[^\w\s]+"),
    "character_string": (32, r"[\x21-\x7e]+"),
    "time": (64, r".*\d{1,2}:\d{2}.*"),
    "date": (64, r".*\d.*"),
    "amount": (12, r".+"),
    "phone_number": (17, r"[\d+\-() ]+"),
    "car_number": (8, r".+"),
    "name": (20, r".+"),
    "phrase": (5, f"[{_HAN}]+"),
}


@dataclasses.dataclass
class LoginCode:
    """A code ``wx.login`` gave one user of one app."""

    appid: str
    openid: str
    unionid: str
    created: float
    used: bool = False


class FakeMiniProgramAPI(FakeWeChatAPI):
    """WeChat's API as one mini program sees it."""

    def __init__(self, appid: str, secret: str, **kwargs: Any) -> None:
        super().__init__(appid, secret, **kwargs)
        self.login_codes: dict[str, LoginCode] = {}
        self.consents: dict[tuple[str, str], int] = {}  # (openid, template id) → messages still allowed
        self.contacts: dict[str, tuple[float, str]] = {}  # openid → (when, "message" | "enter")
        self.sent_in_window: dict[str, int] = {}  # openid → customer-service messages since that contact
        self.enforce_windows = True
        self.session_keys: list[str] = []  # every session_key handed out (tests check none leaks)

    # --- test controls ---
    def issue_login_code(self, openid: str, unionid: str = "", appid: str | None = None) -> str:
        """What ``wx.login`` gives the page of ``appid`` (this mini program by default) for ``openid``."""
        code = secrets.token_urlsafe(24)
        self.login_codes[code] = LoginCode(appid or self.appid, openid, unionid, time.time())
        return code

    def consent(self, openid: str, template_id: str, times: int = 1) -> None:
        """The user tapped 「允许」 for ``template_id`` (``times`` times): that many messages may follow."""
        self.consents[(openid, template_id)] = self.consents.get((openid, template_id), 0) + times

    def note_contact(self, openid: str, kind: str = "message") -> None:
        """The user wrote to the chat (``message``) or only opened it (``enter``): a window opens."""
        self.contacts[openid] = (time.time(), kind)
        self.sent_in_window[openid] = 0  # the allowance is renewed, not added to

    def subscriptions_to(self, openid: str) -> list[dict[str, Any]]:
        """Every subscription message delivered to one user (the bodies)."""
        return [
            item.body
            for item in self.received
            if item.path == "message/subscribe/send" and item.body.get("touser") == openid
        ]

    # --- the API ---
    def app(self) -> web.Application:
        """The API plus ``/sns/jscode2session``."""
        app = super().app()
        app.router.add_get("/sns/jscode2session", self._code2session)
        return app

    async def _code2session(self, request: web.Request) -> web.Response:
        if (failed := await self._maybe_fail("sns/jscode2session")) is not None:
            return failed
        query = request.query
        if query.get("appid") != self.appid:
            return web.json_response({"errcode": 40013, "errmsg": "invalid appid"})
        if query.get("secret") != self.secret:
            return web.json_response({"errcode": 40125, "errmsg": "invalid appsecret"})
        if query.get("grant_type") != "authorization_code":
            return web.json_response({"errcode": 40002, "errmsg": "invalid grant_type"})
        issued = self.login_codes.get(query.get("js_code", ""))
        if issued is None or issued.appid != self.appid or time.time() - issued.created >= LOGIN_CODE_TTL:
            return web.json_response({"errcode": 40029, "errmsg": "invalid code"})
        if issued.used:
            return web.json_response({"errcode": 40163, "errmsg": "code been used"})
        issued.used = True
        session_key = base64.b64encode(secrets.token_bytes(16)).decode()
        self.session_keys.append(session_key)
        answer = {"openid": issued.openid, "session_key": session_key}
        if issued.unionid:
            answer["unionid"] = issued.unionid
        return web.json_response(answer)

    def _validate(self, path: str, body: Any) -> tuple[int, str] | None:
        if not isinstance(body, dict):
            return (47001, "data format error")
        if path == "message/custom/send":
            return self._custom(body)
        if path == "message/subscribe/send":
            return self._subscribe(body)
        if path in ("message/template/send", "message/subscribe/bizsend", "menu/create"):
            return (48001, "api unauthorized (not available to mini programs)")
        return super()._validate(path, body)

    def _custom(self, body: dict[str, Any]) -> tuple[int, str] | None:
        openid, msgtype = body.get("touser"), body.get("msgtype")
        if not openid:
            return (40003, "invalid openid")
        if msgtype not in CUSTOMER_SERVICE_TYPES or not isinstance(body.get(msgtype), dict):
            return (44002, "empty post data or bad msgtype")
        if msgtype == "text" and not body["text"].get("content"):
            return (44002, "empty content")
        if msgtype == "image" and not body["image"].get("media_id"):
            return (40007, "invalid media_id")
        if msgtype == "link" and not all(body["link"].get(name) for name in ("title", "url")):
            return (47001, "link needs title and url")
        if self.enforce_windows:
            when, kind = self.contacts.get(str(openid), (0.0, ""))
            window, allowed = (ENTER_WINDOW, ENTER_MESSAGES) if kind == "enter" else (MESSAGE_WINDOW, MESSAGE_MESSAGES)
            if time.time() - when > window:
                return (45015, "response out of time limit")
            if self.sent_in_window.get(str(openid), 0) >= allowed:
                return (45047, "out of response count limit")
            self.sent_in_window[str(openid)] = self.sent_in_window.get(str(openid), 0) + 1
        return None

    def _subscribe(self, body: dict[str, Any]) -> tuple[int, str] | None:
        openid, template = body.get("touser"), body.get("template_id")
        if not openid:
            return (40003, "invalid openid")
        if not template:
            return (40037, "invalid template_id")
        data = body.get("data")
        if not isinstance(data, dict) or not data:
            return (47003, "argument invalid! data")
        for name, value in data.items():
            problem = _field_problem(str(name), value)
            if problem:
                return (47003, f"argument invalid! data.{name}.value: {problem}")
        left = self.consents.get((str(openid), str(template)), 0)
        if left <= 0:
            return (43101, "user refuse to accept the msg")
        self.consents[(str(openid), str(template))] = left - 1
        return None


def _field_problem(name: str, value: Any) -> str:
    match = re.fullmatch(r"([a-z_]+?)(\d+)", name)
    if match is None or match[1] not in _TYPES or not isinstance(value, dict):
        return "unknown field"
    text = str(value.get("value", ""))
    limit, pattern = _TYPES[match[1]]
    if match[1] == "name" and re.search(f"[{_HAN}]", text):
        limit = 10
    if not text or len(text) > limit:
        return f"length 1..{limit}"
    if re.fullmatch(pattern, text) is None:
        return "wrong characters"
    return ""


class MiniProgramClientSim(WeChatClientSim):
    """Builds pushes as WeChat does for one mini program (token, EncodingAESKey, app id), XML or JSON."""

    def __init__(self, token: str, app_id: str, aes_key: str = "", original_id: str = "gh_vaxbotmini01") -> None:
        super().__init__(token, app_id, aes_key, original_id)

    def push(self, user: str, msg_type: str, fields: dict[str, Any], *, fmt: str = "xml", create_time: int = 0) -> str:
        """A push body (before signing): ``fields`` after ToUserName, FromUserName, CreateTime, MsgType."""
        created = create_time or int(time.time())
        if fmt == "json":
            return json.dumps(
                {
                    "ToUserName": self.original_id,
                    "FromUserName": user,
                    "CreateTime": created,
                    "MsgType": msg_type,
                    **fields,
                },
                ensure_ascii=False,
            )
        flat = {name: value for name, value in fields.items() if isinstance(value, str | int)}
        xml = message_xml(self.original_id, user, msg_type, flat, created)
        nested = "".join(_xml_list(name, value) for name, value in fields.items() if not isinstance(value, str | int))
        return xml.replace("</xml>", nested + "</xml>")

    def text_push(self, user: str, content: str, *, fmt: str = "xml") -> str:
        """A text the user typed into the customer-service chat."""
        return self.push(user, "text", {"Content": content, "MsgId": self.next_msg_id()}, fmt=fmt)

    def enter(self, user: str, session_from: str = "", *, fmt: str = "xml", create_time: int = 0) -> str:
        """The user opened the customer-service chat from the mini program."""
        fields = {"Event": "user_enter_tempsession", "SessionFrom": session_from}
        return self.push(user, "event", fields, fmt=fmt, create_time=create_time)

    def popup(self, user: str, choices: dict[str, str], *, fmt: str = "xml", create_time: int = 0) -> str:
        """``subscribe_msg_popup_event``: the user's choice (accept/reject) per template in the popup."""
        entries = [
            {"TemplateId": template, "SubscribeStatusString": status, "PopupScene": "0"}
            for template, status in choices.items()
        ]
        if fmt == "json":
            listed: Any = entries[0] if len(entries) == 1 else entries
            fields: dict[str, Any] = {"Event": "subscribe_msg_popup_event", "List": listed}
        else:
            fields = {"Event": "subscribe_msg_popup_event", "SubscribeMsgPopupEvent": entries}
        return self.push(user, "event", fields, fmt=fmt, create_time=create_time)

    def sign_push(self, body: str, mode: str = "safe", timestamp: int | None = None) -> SignedRequest:
        """Sign (and in safe mode encrypt) a push; a JSON body gets a JSON envelope, as WeChat sends it."""
        if not body.lstrip().startswith("{"):
            return self.sign(body, mode=mode, timestamp=timestamp)
        ts = str(timestamp or int(time.time()))
        nonce = str(secrets.randbelow(10**9))
        query = {"signature": sha1_signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if mode == "plain":
            return SignedRequest(query, body.encode("utf-8"))
        key = base64.b64decode(self.aes_key + "=")
        encrypt = PrpCrypto(key).encrypt(body, self.app_id).decode("ascii")
        query.update(encrypt_type="aes", msg_signature=sha1_signature(self.token, ts, nonce, encrypt))
        envelope = json.dumps({"ToUserName": self.original_id, "Encrypt": encrypt})
        return SignedRequest(query, envelope.encode("utf-8"))


def _xml_list(name: str, entries: Any) -> str:
    """``<Name><List>…</List>…</Name>`` for the popup event's entries."""
    items = "".join(
        "<List>" + "".join(f"<{key}><![CDATA[{value}]]></{key}>" for key, value in entry.items()) + "</List>"
        for entry in entries
    )
    return f"<{name}>{items}</{name}>"
