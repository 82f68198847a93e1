"""A faithful fake of Alipay calling *us*: the life-account developer gateway's signed form posts.

:class:`AlipayClientSim` builds ``alipay.service.check`` and ``alipay.mobile.public.message.notify``
posts exactly as Alipay does (form-urlencoded in GBK or UTF-8, RSA2 over every field but ``sign``,
signed with the platform's key) and opens our signed replies, verifying them with our public key. The
other direction (Alipay's API that we call) is :mod:`bot.dev.fakes.alipay_gateway`.

Refused in production; nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import xmltodict
from cryptography.hazmat.primitives.asymmetric import rsa

from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.inbound import CHECK_SERVICE, NOTIFY_SERVICE

FORM_TYPE = "application/x-www-form-urlencoded"
_REPLY = re.compile(r"<alipay><response>(?P<inner>.*)</response><sign>(?P<sign>[^<]*)</sign>", re.DOTALL)
# What a user did, as the fake API's customer-service windows count it.
WINDOW_KINDS = {"follow": "follow", "click": "click", "enter": "enter_ppchat", "unfollow": "unfollow"}


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml(fields: Mapping[str, str | int]) -> str:
    parts = []
    for name, value in fields.items():
        if isinstance(value, int) or (isinstance(value, str) and value.startswith("<")):
            parts.append(f"<{name}>{value}</{name}>")  # numbers and already-built nested XML
        else:
            parts.append(f"<{name}>{_cdata(value)}</{name}>")
    return "<XML>" + "".join(parts) + "</XML>"


class ReplyError(Exception):
    """Our reply was not a valid signed Alipay gateway reply."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """An opened reply: the inner ``<response>`` as a dict and as the exact text that was signed."""

    inner: dict[str, Any]
    text: str


class AlipayClientSim:
    """Plays Alipay's servers posting to our gateway for one app."""

    def __init__(
        self,
        app_id: str,
        platform_key: rsa.RSAPrivateKey,
        app_public_key: rsa.RSAPublicKey,
        *,
        on_interaction: Callable[[str, str], None] | None = None,
    ) -> None:
        self.app_id = app_id
        self._platform_key = platform_key
        self._app_public_key = app_public_key
        self._ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)
        self._on_interaction = on_interaction

    @staticmethod
    def now_ms() -> int:
        """Alipay's CreateTime: milliseconds since the epoch."""
        return int(time.time() * 1000)

    def _head(self, user: str, msg_type: str, create_time: int | None) -> dict[str, str | int]:
        return {
            "AppId": self.app_id,
            "FromUserId": user,
            "FromAlipayUserId": user,
            "CreateTime": create_time if create_time is not None else self.now_ms(),
            "MsgType": msg_type,
        }

    def text(self, user: str, content: str, msg_id: str | None = None, create_time: int | None = None) -> str:
        """A text message's biz_content."""
        fields = self._head(user, "text", create_time)
        fields["MsgId"] = msg_id or str(next(self._ids))
        fields["Text"] = f"<Content>{_cdata(content)}</Content>"
        self._interacted(user, "chat")
        return _xml(fields)

    def image(self, user: str, media_id: str = "demo-media", msg_id: str | None = None) -> str:
        """An image message's biz_content."""
        fields = self._head(user, "image", None)
        fields["MsgId"] = msg_id or str(next(self._ids))
        fields["Image"] = f"<MediaId>{_cdata(media_id)}</MediaId><Format>{_cdata('jpg')}</Format>"
        self._interacted(user, "chat")
        return _xml(fields)

    def event(self, user: str, event_type: str, action_param: str = "", create_time: int | None = None) -> str:
        """An event's biz_content: follow, unfollow, click (ActionParam = menu key), enter (scene JSON)."""
        fields = self._head(user, "event", create_time)
        fields["EventType"] = event_type
        if action_param:
            fields["ActionParam"] = action_param
        if event_type in WINDOW_KINDS:
            self._interacted(user, WINDOW_KINDS[event_type])
        return _xml(fields)

    @staticmethod
    def scene(scene_id: str) -> str:
        """The ActionParam of an enter (or follow) event that came through a parametrised code."""
        return json.dumps({"scene": {"sceneId": scene_id}}, separators=(",", ":"))

    def check(self, create_time: int | None = None) -> str:
        """``alipay.service.check``'s biz_content (``verifygw``)."""
        return _xml(
            {
                "AppId": self.app_id,
                "CreateTime": create_time if create_time is not None else self.now_ms(),
                "MsgType": "event",
                "EventType": "verifygw",
            }
        )

    def form(
        self,
        biz_content: str,
        *,
        service: str = NOTIFY_SERVICE,
        charset: str = "GBK",
        with_app_id: bool = True,
        key: rsa.RSAPrivateKey | None = None,
        tamper: Callable[[dict[str, str]], None] | None = None,
    ) -> bytes:
        """The signed, form-encoded POST body; ``tamper`` may change fields after signing."""
        fields = {"service": service, "sign_type": "RSA2", "charset": charset, "biz_content": biz_content}
        if with_app_id:
            fields["app_id"] = self.app_id
        content = alipay_sign.sign_content(fields)
        fields["sign"] = alipay_sign.sign(key or self._platform_key, content, charset)
        if tamper is not None:
            tamper(fields)
        return urlencode(fields, encoding=alipay_sign.codec(charset)).encode("ascii")

    def check_form(self, charset: str = "GBK", key: rsa.RSAPrivateKey | None = None) -> bytes:
        """A signed ``alipay.service.check`` post."""
        return self.form(self.check(), service=CHECK_SERVICE, charset=charset, key=key)

    def open_reply(self, body: bytes, charset: str = "GBK") -> Reply:
        """Verify our signed reply with the app's public key, as Alipay does, and parse its response."""
        try:
            text = body.decode(alipay_sign.codec(charset))
        except UnicodeDecodeError as exc:
            raise ReplyError(f"reply is not {charset}") from exc
        if not text.startswith(f'<?xml version="1.0" encoding="{charset}"?>'):
            raise ReplyError("reply does not declare the request's charset")
        match = _REPLY.search(text)
        if match is None or "<sign_type>RSA2</sign_type>" not in text:
            raise ReplyError("reply is not a signed <alipay> document")
        inner = match.group("inner")
        if not alipay_sign.verify(self._app_public_key, inner, match.group("sign"), charset):
            raise ReplyError("reply signature does not verify with the app's public key")
        parsed = xmltodict.parse(f"<response>{inner}</response>")["response"]
        return Reply(inner=dict(parsed), text=inner)

    def _interacted(self, user: str, kind: str) -> None:
        if self._on_interaction is not None:
            self._on_interaction(user, kind)
