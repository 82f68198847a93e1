"""Alipay life-account developer gateway: decode, verify and parse inbound posts; sign our replies.

Pure functions over bytes (no aiohttp here), so the webhook, the tests, the benchmark and the fake
platform share them. Alipay posts a form (``service, sign, sign_type, charset, biz_content`` and
sometimes ``app_id``) in the charset it names, often GBK; it is checked with the V2 rule (every field
but ``sign``) against Alipay's public key. Replies are XML signed with our private key. Nothing here
answers a user: on Alipay every answer goes out later through the outbox, the reply is only an ack.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from cryptography.hazmat.primitives.asymmetric import rsa

from bot.core.update import Platform, Update, UpdateKind
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.common import Rejected, safe_xml

CHECK_SERVICE = "alipay.service.check"
NOTIFY_SERVICE = "alipay.mobile.public.message.notify"
REQUIRED_FIELDS = ("service", "sign", "sign_type", "charset", "biz_content")
_EVENTS = {
    "follow": UpdateKind.FOLLOW,
    "unfollow": UpdateKind.UNFOLLOW,
    "click": UpdateKind.MENU_CLICK,
    "enter": UpdateKind.ENTER,
}


@dataclasses.dataclass(frozen=True)
class Check:
    """``alipay.service.check`` (enabling developer mode): ``passed`` says whether its signature held."""

    charset: str
    passed: bool


@dataclasses.dataclass(frozen=True)
class Notify:
    """A verified ``alipay.mobile.public.message.notify``: the update, and who the ack goes to."""

    charset: str
    update: Update
    reply_to: str


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def parse_form(body: bytes) -> tuple[dict[str, str], str]:
    """The form's fields decoded with the charset the form itself names; the charset label as sent."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise Rejected(400, "form body is not percent-encoded") from exc
    try:
        probe = parse_qsl(text, keep_blank_values=True, encoding="latin-1", errors="strict")
    except ValueError as exc:
        raise Rejected(400, "malformed form") from exc
    charsets = [value for key, value in probe if key == "charset"]
    if len(charsets) != 1 or not charsets[0]:
        raise Rejected(400, "missing charset")
    label = charsets[0]
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding=alipay_sign.codec(label), errors="strict")
    except LookupError as exc:
        raise Rejected(400, "unsupported charset") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise Rejected(400, f"form is not valid {label}") from exc
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise Rejected(400, f"repeated field {key}")  # which one would the signature cover?
        fields[key] = value
    missing = [name for name in REQUIRED_FIELDS if not fields.get(name)]
    if missing:
        raise Rejected(400, "missing " + ",".join(missing))
    return fields, label


def _text(root: Mapping[str, Any], name: str) -> str:
    value = root.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Rejected(400, f"malformed {name}")
    return value.strip()


def _scene(action_param: str) -> str:
    """The scene id in an ActionParam like ``{"scene":{"sceneId":"…"}}`` (empty when there is none)."""
    if not action_param.startswith("{"):
        return ""
    try:
        parsed = json.loads(action_param)
    except ValueError:
        return ""
    scene = parsed.get("scene") if isinstance(parsed, dict) else None
    value = scene.get("sceneId") if isinstance(scene, dict) else None
    return str(value) if value is not None else ""


class AlipayGateway:
    """Everything about Alipay's inbound gateway protocol for one app."""

    def __init__(self, app_id: str, private_key: rsa.RSAPrivateKey, alipay_public_key: rsa.RSAPublicKey) -> None:
        self.app_id = app_id
        self._private_key = private_key
        self._alipay_key = alipay_public_key
        self.public_key_body = alipay_sign.public_key_body(private_key.public_key())

    def open(self, body: bytes) -> Check | Notify:
        """Decode and verify a post. A check with a bad signature is a :class:`Check` that did not pass
        (it gets a signed VERIFY_FAILED); any other bad post raises :class:`Rejected`."""
        fields, charset = parse_form(body)
        service = fields["service"]
        if service not in (CHECK_SERVICE, NOTIFY_SERVICE):
            raise Rejected(400, "unknown service")
        if fields["sign_type"].upper() != "RSA2":
            raise Rejected(400, "only RSA2 signatures are accepted")
        content = alipay_sign.sign_content(fields)
        signed = alipay_sign.verify(self._alipay_key, content, fields["sign"], charset)
        app_ok = fields.get("app_id", self.app_id) == self.app_id
        root = safe_xml(fields["biz_content"], "XML") if signed else {}
        if root and _text(root, "AppId") not in ("", self.app_id):
            app_ok = False
        if service == CHECK_SERVICE:
            return Check(charset=charset, passed=signed and app_ok)
        if not signed:
            raise Rejected(403, "bad signature")
        if not app_ok or not _text(root, "AppId"):
            raise Rejected(403, "wrong app id")
        update, reply_to = self._to_update(root)
        return Notify(charset=charset, update=update, reply_to=reply_to)

    def _to_update(self, root: Mapping[str, Any]) -> tuple[Update, str]:
        from_user = _text(root, "FromUserId")
        user_id = _text(root, "FromAlipayUserId") or from_user
        msg_type = _text(root, "MsgType").lower()
        created = _text(root, "CreateTime")
        if not user_id or not msg_type or not created.isdigit():
            raise Rejected(400, "missing FromAlipayUserId, MsgType or CreateTime")
        common: dict[str, Any] = {
            "platform": Platform.ALIPAY,
            "app_id": self.app_id,
            "user_id": user_id,
            "created_at": datetime.fromtimestamp(int(created) / 1000, UTC),
        }
        reply_to = from_user or user_id
        if msg_type == "text":
            text_node = root.get("Text")
            content = _text(text_node, "Content") if isinstance(text_node, dict) else ""
            update = Update(
                kind=UpdateKind.TEXT, text=content, message_id=_text(root, "MsgId"), raw_type="text", **common
            )
            return update, reply_to
        if msg_type == "image":
            image = root.get("Image")
            media_id = _text(image, "MediaId") if isinstance(image, dict) else ""
            update = Update(
                kind=UpdateKind.IMAGE,
                message_id=_text(root, "MsgId"),
                raw_type="image",
                extra={"media_id": media_id},
                **common,
            )
            return update, reply_to
        if msg_type != "event":
            unknown = Update(kind=UpdateKind.UNKNOWN, message_id=_text(root, "MsgId"), raw_type=msg_type, **common)
            return unknown, reply_to
        event = _text(root, "EventType").lower()
        action = _text(root, "ActionParam")
        kind = _EVENTS.get(event, UpdateKind.OTHER_EVENT)
        key = action if kind is UpdateKind.MENU_CLICK else _scene(action)
        # Events dedupe on user + CreateTime (+ event and key), never on a MsgId some events repeat.
        return Update(kind=kind, key=key, raw_type=event, **common), reply_to

    def _wrap(self, inner: str, charset: str) -> bytes:
        signature = alipay_sign.sign(self._private_key, inner, charset)
        document = (
            f'<?xml version="1.0" encoding="{escape(charset)}"?>'
            f"<alipay><response>{inner}</response><sign>{signature}</sign><sign_type>RSA2</sign_type></alipay>"
        )
        return document.encode(alipay_sign.codec(charset))

    def check_reply(self, check: Check) -> bytes:
        """The signed answer to ``alipay.service.check``, carrying our public key."""
        if check.passed:
            inner = f"<success>true</success><biz_content>{self.public_key_body}</biz_content>"
        else:
            inner = (
                "<success>false</success><error_code>VERIFY_FAILED</error_code>"
                f"<biz_content>{self.public_key_body}</biz_content>"
            )
        return self._wrap(inner, check.charset)

    def ack(self, notify: Notify, now: float | None = None) -> bytes:
        """The signed ack to a message notification (answers themselves go out asynchronously)."""
        millis = int((now if now is not None else time.time()) * 1000)
        inner = (
            f"<XML><ToUserId>{_cdata(notify.reply_to)}</ToUserId><AppId>{_cdata(self.app_id)}</AppId>"
            f"<CreateTime>{millis}</CreateTime><MsgType>{_cdata('ack')}</MsgType></XML>"
        )
        return self._wrap(inner, notify.charset)


def content_type(charset: str) -> str:
    """The Content-Type of a reply in ``charset``, as Alipay expects it."""
    return f"text/xml;charset={charset}"
