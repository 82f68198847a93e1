"""The platform-neutral shapes handlers see: one :class:`Update` in, :data:`OutMessage` values out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from models import OutboxKind


class Platform(StrEnum):
    """Where an update came from."""

    WECHAT = "wechat"
    ALIPAY = "alipay"


class UpdateKind(StrEnum):
    """What the user did, whatever the platform calls it."""

    TEXT = "text"
    IMAGE = "image"
    FOLLOW = "follow"
    UNFOLLOW = "unfollow"
    MENU_CLICK = "menu_click"
    MENU_VIEW = "menu_view"
    SCAN = "scan"  # a parametrised QR scanned by someone already following
    SCAN_CODE = "scan_code"  # the menu's scan button returned a code's content
    ENTER = "enter"  # opened the Alipay life account's page (key: the scene of the code that led there)
    TEMPLATE_RESULT = "template_result"
    SUBSCRIPTION = "subscription"  # subscription-message popup, change or sent report
    UNKNOWN = "unknown"  # a message type we do not read (voice, video, location…)
    OTHER_EVENT = "other_event"  # a background event nobody typed (LOCATION reports, mass-send results…)


# Kinds a person caused directly; the rest are platform reports that never get an answer.
CONVERSATIONAL_KINDS = frozenset(
    {
        UpdateKind.TEXT,
        UpdateKind.IMAGE,
        UpdateKind.FOLLOW,
        UpdateKind.MENU_CLICK,
        UpdateKind.SCAN,
        UpdateKind.SCAN_CODE,
        UpdateKind.UNKNOWN,
    }
)


# Kinds that count as contact for the platforms' customer-service windows: what a person did, including
# opening the account's page, which asks for no answer but lets us send one message that day on Alipay.
CONTACT_KINDS = CONVERSATIONAL_KINDS | {UpdateKind.ENTER}


# Kinds that start something new: the conversation step in progress is abandoned.
FRESH_START_KINDS = frozenset({UpdateKind.FOLLOW, UpdateKind.MENU_CLICK, UpdateKind.SCAN, UpdateKind.SCAN_CODE})


@dataclasses.dataclass(frozen=True)
class Update:
    """One thing that arrived from a platform, already verified, decrypted and parsed."""

    platform: Platform
    app_id: str
    user_id: str
    kind: UpdateKind
    created_at: datetime
    message_id: str = ""
    text: str = ""
    key: str = ""
    raw_type: str = ""
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """Messages dedupe on their id; events (id 0 or absent) on sender + creation time + event + key.

        The key is part of it so that two different menu taps within one second both count; a retry of
        one tap carries the same key and is still recognised. Time is in milliseconds, as precise as
        the platform gives it (WeChat: seconds; Alipay: milliseconds).
        """
        if self.message_id and self.message_id != "0":
            return f"msg:{self.message_id}"
        return f"evt:{self.user_id}:{round(self.created_at.timestamp() * 1000)}:{self.raw_type}:{self.key}"

    @property
    def user_key(self) -> tuple[str, str, str]:
        """(platform, app, user): the key of conversation state and of the per-user lock."""
        return (self.platform.value, self.app_id, self.user_id)


@dataclasses.dataclass(frozen=True)
class Text:
    """A plain text message."""

    content: str


@dataclasses.dataclass(frozen=True)
class Image:
    """An image: already uploaded to the platform (``media_id``), or PNG bytes the sender uploads first.

    Only an uploaded image can be a passive reply; handlers never call a platform, so theirs are PNGs
    and go out through the outbox.
    """

    media_id: str = ""
    png_base64: str = ""
    credential: bool = False  # a show-code image: the outbox scrubs it once delivered


@dataclasses.dataclass(frozen=True)
class Article:
    """A single link card (news reply on WeChat, image-text on Alipay)."""

    title: str
    description: str
    url: str
    image_url: str = ""
    credential: bool = False  # the link opens a credential (the code page): scrubbed once delivered


OutMessage = Text | Image | Article


def can_be_passive(message: OutMessage) -> bool:
    """Whether a reply may be the webhook's own answer: not an image still to upload, not a credential.

    A passive answer leaves its outbox row behind unscrubbed, and an image needs an upload first.
    """
    if isinstance(message, Text):
        return True
    return not message.credential and not (isinstance(message, Image) and not message.media_id)


def message_to_payload(message: OutMessage) -> tuple[OutboxKind, dict[str, Any]]:
    """Serialise a message for the outbox: (kind, payload)."""
    if isinstance(message, Text):
        return OutboxKind.TEXT, {"content": message.content}
    payload = dataclasses.asdict(message)
    if payload.pop("credential"):  # only credentials carry the flag, so other payloads are as before
        payload["credential"] = True
    if isinstance(message, Image):
        return OutboxKind.IMAGE, {key: value for key, value in payload.items() if value}
    return OutboxKind.NEWS, payload


def message_from_payload(kind: str, payload: Mapping[str, Any]) -> OutMessage:
    """Inverse of :func:`message_to_payload`."""
    if kind == OutboxKind.TEXT:
        return Text(content=str(payload["content"]))
    credential = bool(payload.get("credential"))
    if kind == OutboxKind.IMAGE:
        media_id, png = str(payload.get("media_id", "")), str(payload.get("png_base64", ""))
        return Image(media_id=media_id, png_base64=png, credential=credential)
    if kind == OutboxKind.NEWS:
        texts = {field.name: str(payload.get(field.name, "")) for field in dataclasses.fields(Article)}
        texts.pop("credential")
        return Article(**texts, credential=credential)
    raise ValueError(f"not a conversational message kind: {kind}")


@dataclasses.dataclass(frozen=True)
class TemplateValue:
    """One value of a template message, with the colour Alipay may show it in (WeChat ignores colours)."""

    value: str
    color: str = ""


@dataclasses.dataclass(frozen=True)
class TemplateMessage:
    """A template message (模板消息): the platform's fixed layout, filled with named values, and a link.

    Not a conversational reply: it goes out through the outbox as kind ``template``, serialised by
    :meth:`payload` as ``{"template_id", "data": {"first", "keyword1"…, "remark"}, "url"}`` (plus
    ``head_color`` on Alipay when set), which both platforms' senders read back with :meth:`from_payload`.
    """

    template_id: str
    keywords: tuple[TemplateValue, ...]  # keyword1, keyword2, … in the template's order
    first: TemplateValue | None = None
    remark: TemplateValue | None = None
    url: str = ""
    head_color: str = ""  # Alipay: the colour of the card's head
    # A template with typed field names (WeChat's current ones: ``thing1``, ``time2``…) names its keywords
    # here, in order; empty for the classic ``keyword1``… names.
    field_names: tuple[str, ...] = ()

    def data(self) -> dict[str, TemplateValue]:
        """The values by the template's field names: ``first``, ``keyword1``… (or ``field_names``), ``remark``."""
        names = self.field_names or tuple(f"keyword{number}" for number in range(1, len(self.keywords) + 1))
        named = dict(zip(names, self.keywords, strict=False))
        if self.first is not None:
            named = {"first": self.first, **named}
        if self.remark is not None:
            named["remark"] = self.remark
        return named

    def payload(self) -> dict[str, Any]:
        """The outbox payload (a value with a colour is an object, a plain one just its text)."""
        data = {name: _template_value_out(value) for name, value in self.data().items()}
        payload: dict[str, Any] = {"template_id": self.template_id, "data": data, "url": self.url}
        if self.head_color:
            payload["head_color"] = self.head_color
        if self.field_names:
            payload["field_names"] = list(self.field_names)
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TemplateMessage:
        """Inverse of :meth:`payload`; keywords are read in their numbers' order."""
        data = {str(name): _template_value_in(value) for name, value in dict(payload.get("data") or {}).items()}
        field_names = tuple(str(name) for name in payload.get("field_names") or ())
        if field_names:
            return cls(
                template_id=str(payload["template_id"]),
                keywords=tuple(data[name] for name in field_names if name in data),
                first=data.get("first"),
                remark=data.get("remark"),
                url=str(payload.get("url") or ""),
                head_color=str(payload.get("head_color") or ""),
                field_names=tuple(name for name in field_names if name in data),
            )
        numbered = sorted(
            (int(name.removeprefix("keyword")), value)
            for name, value in data.items()
            if name.startswith("keyword") and name.removeprefix("keyword").isdigit()
        )
        return cls(
            template_id=str(payload["template_id"]),
            keywords=tuple(value for _, value in numbered),
            first=data.get("first"),
            remark=data.get("remark"),
            url=str(payload.get("url") or ""),
            head_color=str(payload.get("head_color") or ""),
        )


def _template_value_out(value: TemplateValue) -> str | dict[str, str]:
    return {"value": value.value, "color": value.color} if value.color else value.value


def _template_value_in(raw: Any) -> TemplateValue:
    if isinstance(raw, Mapping):
        return TemplateValue(str(raw.get("value", "")), str(raw.get("color") or ""))
    return TemplateValue(str(raw))
