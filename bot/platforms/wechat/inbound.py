"""WeChat Official Account adapter: verify, decrypt and parse inbound requests; render passive replies.

Pure functions over bytes and query strings (no aiohttp here), so tests, the benchmark and the fake
platform use exactly the same code. wechatpy provides the AES envelope, the message-class registry and
the reply renderers; signature checks are ours, in constant time (wechatpy compares with ``!=``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.replies import ArticlesReply, ImageReply, TextReply

from bot.core.config import Settings
from bot.core.update import Article, Image, OutMessage, Platform, Text, Update, UpdateKind
from bot.platforms.common import Rejected, safe_xml

_SIMPLE_EVENTS = {
    "subscribe": UpdateKind.FOLLOW,
    "subscribe_scan": UpdateKind.FOLLOW,
    "unsubscribe": UpdateKind.UNFOLLOW,
    "scan": UpdateKind.SCAN,
    "click": UpdateKind.MENU_CLICK,
    "view": UpdateKind.MENU_VIEW,
    "scancode_push": UpdateKind.SCAN_CODE,
    "scancode_waitmsg": UpdateKind.SCAN_CODE,
    "templatesendjobfinish": UpdateKind.TEMPLATE_RESULT,
    "subscribe_msg_popup_event": UpdateKind.SUBSCRIPTION,
    "subscribe_msg_change_event": UpdateKind.SUBSCRIPTION,
    "subscribe_msg_sent_event": UpdateKind.SUBSCRIPTION,
}


def sha1_signature(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the sorted parts concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324 (the protocol's hash)


def _require(query: Mapping[str, str], *names: str) -> list[str]:
    values = [query.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise Rejected(400, "missing " + ",".join(missing))
    return values


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(400, "body is not UTF-8") from exc


def _safe_xml(raw: str) -> dict[str, Any]:
    return safe_xml(raw, "xml")


class WeChatGateway:
    """Everything about WeChat's inbound protocol for one Official Account."""

    def __init__(self, settings: Settings) -> None:
        self.app_id = settings.wechat_appid
        self._token = settings.wechat_token
        self._tolerance = settings.timestamp_tolerance_seconds
        self._aes_key: bytes | None = None
        self._crypto: WeChatCrypto | None = None
        if settings.wechat_aes_key:
            self._aes_key = base64.b64decode(settings.wechat_aes_key + "=")
            self._crypto = WeChatCrypto(self._token, settings.wechat_aes_key, self.app_id)

    def verify_signature(self, query: Mapping[str, str], now: float | None = None) -> None:
        """Check ``signature`` (present on every request) and the timestamp's freshness."""
        signature, timestamp, nonce = _require(query, "signature", "timestamp", "nonce")
        expected = sha1_signature(self._token, timestamp, nonce)
        if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
            raise Rejected(403, "bad signature")
        try:
            sent = int(timestamp)
        except ValueError as exc:
            raise Rejected(400, "bad timestamp") from exc
        if abs((now if now is not None else time.time()) - sent) > self._tolerance:
            raise Rejected(403, "stale timestamp")

    def check_url(self, query: Mapping[str, str], now: float | None = None) -> str:
        """The GET handshake: the ``echostr`` to echo back when the signature holds."""
        self.verify_signature(query, now)
        (echostr,) = _require(query, "echostr")
        return echostr

    def open(self, query: Mapping[str, str], body: bytes, now: float | None = None) -> tuple[Update, bool]:
        """Verify, decrypt and parse a POST; returns the update and whether the reply must be encrypted."""
        self.verify_signature(query, now)
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        text = _decode(body)
        envelope = _safe_xml(text)
        if encrypted:
            inner = self._decrypt(query, envelope)
            root = _safe_xml(inner)
        else:
            if self._aes_key is not None:
                # Only the body's ciphertext is authenticated (msg_signature); a plain request's
                # signature covers token, timestamp and nonce but not the body, so in safe or
                # compatible mode a plain request could carry any body under a captured signature.
                raise Rejected(403, "plain request while an EncodingAESKey is configured")
            if "Encrypt" in envelope and "MsgType" not in envelope:
                raise Rejected(400, "encrypted body without encrypt_type=aes")
            inner, root = text, envelope
        return self._to_update(inner, root), encrypted

    def _decrypt(self, query: Mapping[str, str], envelope: Mapping[str, Any]) -> str:
        if self._aes_key is None:
            raise Rejected(400, "encrypted message but no EncodingAESKey is configured")
        (msg_signature,) = _require(query, "msg_signature")
        encrypt = envelope.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise Rejected(400, "missing Encrypt")
        expected = sha1_signature(self._token, query["timestamp"], query["nonce"], encrypt)
        if not hmac.compare_digest(expected.encode(), msg_signature.lower().encode()):
            raise Rejected(403, "bad msg_signature")
        try:
            text: str = PrpCrypto(self._aes_key).decrypt(encrypt, self.app_id)
        except InvalidAppIdException as exc:
            raise Rejected(403, "wrong app id") from exc
        except Exception as exc:  # bad base64, bad padding, truncated plaintext
            raise Rejected(400, "undecryptable Encrypt") from exc
        return text

    def _to_update(self, xml: str, root: Mapping[str, Any]) -> Update:
        for name in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
            if not isinstance(root.get(name), str) or not root.get(name):
                raise Rejected(400, f"missing {name}")
        try:
            message = parse_message(xml)
            created = datetime.fromtimestamp(int(root["CreateTime"]), UTC)
        except Exception as exc:
            raise Rejected(400, "malformed message") from exc
        data: dict[str, Any] = message._data
        msg_type = str(data["MsgType"]).lower()
        event = str(data.get("Event") or "").lower() if msg_type == "event" else ""
        common: dict[str, Any] = {
            "platform": Platform.WECHAT,
            "app_id": self.app_id,
            "user_id": str(data["FromUserName"]),
            "created_at": created,
            "message_id": str(data.get("MsgId") or data.get("MsgID") or ""),
            "raw_type": event or msg_type,
        }
        extra = {"to": str(data["ToUserName"])}
        if msg_type == "text":
            return Update(kind=UpdateKind.TEXT, text=str(data.get("Content") or ""), extra=extra, **common)
        if msg_type == "image":
            extra.update(media_id=str(data.get("MediaId") or ""), pic_url=str(data.get("PicUrl") or ""))
            return Update(kind=UpdateKind.IMAGE, extra=extra, **common)
        if msg_type != "event":
            return Update(kind=UpdateKind.UNKNOWN, extra=extra, **common)
        # wechatpy strips "qrscene_" for subscribe_scan and renames the event: read what it left.
        event = str(message.event if hasattr(message, "event") else event).lower()
        kind = _SIMPLE_EVENTS.get(event, UpdateKind.OTHER_EVENT)
        key = str(data.get("EventKey") or "")
        text = ""
        if kind is UpdateKind.SCAN_CODE:
            info = data.get("ScanCodeInfo")
            text = str(info.get("ScanResult") or "") if isinstance(info, dict) else ""
        elif kind is UpdateKind.TEMPLATE_RESULT:
            extra["status"] = str(data.get("Status") or "")
        elif kind is UpdateKind.SUBSCRIPTION:
            extra["detail"] = str(
                data.get("SubscribeMsgPopupEvent")
                or data.get("SubscribeMsgChangeEvent")
                or data.get("SubscribeMsgSentEvent")
                or ""
            )
        common["raw_type"] = event
        return Update(kind=kind, key=key, text=text, extra=extra, **common)

    def render(self, update: Update, message: OutMessage | None, encrypt: bool) -> str:
        """The passive reply body: the message as WeChat XML (encrypted when asked), or ``success``."""
        if message is None:
            return "success"
        source = update.extra.get("to", "")
        reply: TextReply | ImageReply | ArticlesReply
        if isinstance(message, Text):
            reply = TextReply(source=source, target=update.user_id, content=message.content)
        elif isinstance(message, Image):
            reply = ImageReply(source=source, target=update.user_id, media_id=message.media_id)
        else:
            assert isinstance(message, Article)
            reply = ArticlesReply(source=source, target=update.user_id)
            reply.add_article(
                {
                    "title": message.title,
                    "description": message.description,
                    "url": message.url,
                    "image": message.image_url,
                }
            )
        xml = reply.render()
        if not encrypt:
            return str(xml)
        assert self._crypto is not None
        return str(self._crypto.encrypt_message(xml, secrets.token_hex(5), str(int(time.time()))))
