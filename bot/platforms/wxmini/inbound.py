"""The WeChat mini program's message push (消息推送): verify, decrypt and parse into one :class:`Update`.

The same signature and safe-mode rules as the Official Account (``signature`` over token, timestamp and
nonce; in safe mode ``msg_signature`` over the ciphertext, and the envelope's trailing app id), with the
mini program's own token and EncodingAESKey. The push comes as XML or JSON, whichever the mini program's
console chose; both are read. There are no passive replies: every answer goes out through
``message/custom/send`` (see ``sender``), so the webhook only acknowledges.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.core.config import Settings
from bot.core.update import Platform, Update, UpdateKind
from bot.platforms.common import Rejected, safe_xml
from bot.platforms.wechat.inbound import WeChatGateway

# Subscription reports: the popup (accept/reject per template), the user's later changes in the
# settings, and the result of a message we sent.
SUBSCRIPTION_EVENTS = {
    "subscribe_msg_popup_event": "SubscribeMsgPopupEvent",
    "subscribe_msg_change_event": "SubscribeMsgChangeEvent",
    "subscribe_msg_sent_event": "SubscribeMsgSentEvent",
}
ACCEPTED = frozenset({"accept", "acceptwithaudio"})
# Deeper JSON than this is no push WeChat sends (it nests two levels); refused before it is walked.
MAX_JSON_BYTES = 64 * 1024


def _parse(text: str) -> dict[str, Any]:
    """A push body as a dict: JSON (``{…}``) or XML (``<xml>…</xml>``)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        if len(stripped) > MAX_JSON_BYTES:
            raise Rejected(413, "body too large")
        try:
            parsed = json.loads(stripped)
        except (ValueError, RecursionError) as exc:
            raise Rejected(400, "malformed json") from exc
        if not isinstance(parsed, dict):
            raise Rejected(400, "malformed json")
        return parsed
    if stripped.startswith("<"):
        return safe_xml(stripped, "xml")
    raise Rejected(400, "neither json nor xml")


def _items(value: Any) -> list[Mapping[str, Any]]:
    """WeChat's ``List``: one object when there is one entry, a list when there are several."""
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Mapping)]
    return []


def subscription_choices(root: Mapping[str, Any], event: str) -> tuple[list[str], list[str]]:
    """(accepted, rejected) template ids of a subscription report, in the order given."""
    holder = root.get(SUBSCRIPTION_EVENTS[event])
    # JSON carries List at the top level; XML nests it in the event's own element.
    entries = _items(holder.get("List")) if isinstance(holder, Mapping) else _items(root.get("List"))
    accepted: list[str] = []
    rejected: list[str] = []
    for entry in entries:
        template = str(entry.get("TemplateId") or "")
        status = str(entry.get("SubscribeStatusString") or "").lower()
        if template:
            (accepted if status in ACCEPTED else rejected).append(template)
    return accepted, rejected


class MiniProgramGateway(WeChatGateway):
    """The mini program's inbound protocol: :class:`WeChatGateway`'s checks with the mini program's credentials."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            dataclasses.replace(
                settings,
                wechat_appid=settings.wxmini_appid,
                wechat_token=settings.wxmini_token,
                wechat_aes_key=settings.wxmini_aes_key,
            )
        )

    def open_push(self, query: Mapping[str, str], body: bytes, now: float | None = None) -> Update:
        """Verify, decrypt and parse a push (JSON or XML) into an update of the ``wxmini`` platform."""
        self.verify_signature(query, now)
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(400, "body is not UTF-8") from exc
        if not encrypted and self._aes_key is not None:
            # As on the Official Account: only the ciphertext is authenticated, so in safe or compatible
            # mode a plain body could be anything under a captured signature. Refused before it is read.
            raise Rejected(403, "plain request while an EncodingAESKey is configured")
        envelope = _parse(text)
        root = _parse(self._decrypt(query, envelope)) if encrypted else envelope
        return self._mini_update(root)

    def _mini_update(self, root: Mapping[str, Any]) -> Update:
        for name in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
            if not str(root.get(name) or ""):
                raise Rejected(400, f"missing {name}")
        try:
            created = datetime.fromtimestamp(int(str(root["CreateTime"])), UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise Rejected(400, "bad CreateTime") from exc
        msg_type = str(root["MsgType"]).lower()
        event = str(root.get("Event") or "").lower() if msg_type == "event" else ""
        common: dict[str, Any] = {
            "platform": Platform.WXMINI,
            "app_id": self.app_id,
            "user_id": str(root["FromUserName"]),
            "created_at": created,
            "message_id": str(root.get("MsgId") or root.get("MsgID") or ""),
            "raw_type": event or msg_type,
        }
        extra = {"to": str(root["ToUserName"])}
        if msg_type == "text":
            return Update(kind=UpdateKind.TEXT, text=str(root.get("Content") or ""), extra=extra, **common)
        if msg_type == "image":
            extra.update(media_id=str(root.get("MediaId") or ""), pic_url=str(root.get("PicUrl") or ""))
            return Update(kind=UpdateKind.IMAGE, extra=extra, **common)
        if msg_type == "miniprogrampage":
            # A mini-program card the user sent into the chat: we read no cards, and say so kindly.
            extra.update(title=str(root.get("Title") or ""), page_path=str(root.get("PagePath") or ""))
            return Update(kind=UpdateKind.UNKNOWN, extra=extra, **common)
        if msg_type != "event":
            return Update(kind=UpdateKind.UNKNOWN, extra=extra, **common)
        if event == "user_enter_tempsession":
            # Opened the customer-service chat from the mini program: a contact (it opens a short window)
            # that asks for no answer; SessionFrom is what the page's contact button passed.
            return Update(kind=UpdateKind.ENTER, key=str(root.get("SessionFrom") or ""), extra=extra, **common)
        if event in SUBSCRIPTION_EVENTS:
            accepted, rejected = subscription_choices(root, event)
            extra.update(accepted=",".join(accepted), rejected=",".join(rejected))
            key = ",".join(accepted + rejected)
            return Update(kind=UpdateKind.SUBSCRIPTION, key=key, extra=extra, **common)
        return Update(kind=UpdateKind.OTHER_EVENT, key=str(root.get("EventKey") or ""), extra=extra, **common)
