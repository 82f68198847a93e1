"""What the fake Alipay gateway demands of each method's business parameters, and the answers it refuses with.

Pure checks on a parsed ``biz_content`` (no state: windows, follows and certifications are the gateway's).
Each raises :class:`Refusal` with Alipay's code and sub-code, as Alipay answers the same mistake.
"""

from __future__ import annotations

import json
import re
from typing import Any

MSGS = {
    "10000": "Success",
    "20000": "Service Currently Unavailable",
    "20001": "Insufficient Token Permissions",
    "40001": "Missing Required Arguments",
    "40002": "Invalid Arguments",
    "40004": "Business Failed",
    "40006": "Insufficient Permissions",
}
IMAGE_TYPES = {"png": b"\x89PNG", "jpg": b"\xff\xd8", "jpeg": b"\xff\xd8"}
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MINI_VALUE_LIMIT = 50
MENU_ACTIONS = frozenset({"out", "link", "tel", "map", "consumption"})
_KEYWORD = re.compile(r"keyword[1-9][0-9]*")
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
_OUTER_ORDER_NO = re.compile(r"[A-Za-z0-9]{1,32}")
_CERT_NO = re.compile(r"\d{17}[\dX]")


class Refusal(Exception):
    """An answer other than success; ``unsigned`` ones go out as ``error_response``."""

    def __init__(self, code: str, sub_code: str, sub_msg: str = "", *, unsigned: bool = False) -> None:
        super().__init__(f"{code} {sub_code}")
        self.code = code
        self.sub_code = sub_code
        self.sub_msg = sub_msg
        self.unsigned = unsigned

    def content(self) -> dict[str, Any]:
        """The ``<method>_response`` object of the refusal."""
        body: dict[str, Any] = {"code": self.code, "msg": MSGS.get(self.code, "Unknown Error")}
        if self.sub_code:
            body["sub_code"] = self.sub_code
        if self.sub_msg:
            body["sub_msg"] = self.sub_msg
        return body


def invalid(what: str) -> Refusal:
    """Alipay's answer to a business parameter it cannot accept."""
    return Refusal("40002", "isv.invalid-parameter", f"参数无效: {what}")


def parse_biz(params: dict[str, str]) -> dict[str, Any]:
    """The request's ``biz_content``, which must be a JSON object."""
    raw = params.get("biz_content")
    if raw is None:
        raise Refusal("40001", "isv.missing-biz-content", "缺少业务参数")
    try:
        biz = json.loads(raw)
    except ValueError as exc:
        raise invalid("biz_content is not json") from exc
    if not isinstance(biz, dict):
        raise invalid("biz_content is not an object")
    return biz


def recipient(biz: dict[str, Any]) -> str:
    """The ``to_user_id`` of a message call."""
    user = biz.get("to_user_id")
    if not isinstance(user, str) or not user:
        raise invalid("to_user_id")
    return user


def check_custom_message(biz: dict[str, Any]) -> str:
    """A customer-service message's content (text, or 1–10 image-text articles); returns its recipient."""
    user = recipient(biz)
    msg_type = biz.get("msg_type")
    if msg_type == "text":
        text = biz.get("text")
        if not isinstance(text, dict) or not isinstance(text.get("content"), str) or not text["content"].strip():
            raise invalid("text.content")
    elif msg_type == "image-text":
        _check_articles(biz.get("articles"))
    else:
        raise invalid("msg_type")
    if biz.get("chat", "0") not in ("0", "1"):
        raise invalid("chat")
    return user


def _check_articles(articles: Any) -> None:
    if not isinstance(articles, list) or not 1 <= len(articles) <= 10:
        raise invalid("articles")
    for article in articles:
        if not isinstance(article, dict) or not (article.get("title") or article.get("desc")):
            raise invalid("articles.title")
        for field in ("url", "image_url"):
            value = article.get(field)
            if (field == "url" or value) and not str(value or "").startswith(("http://", "https://")):
                raise invalid(f"articles.{field}")


def check_template_message(biz: dict[str, Any]) -> str:
    """A template message: an id and a context of known keys (keyword1 at least); returns its recipient."""
    user = recipient(biz)
    template = biz.get("template")
    if not isinstance(template, dict) or not template.get("template_id"):
        raise invalid("template.template_id")
    context = template.get("context")
    if not isinstance(context, dict) or "keyword1" not in context:
        raise invalid("template.context.keyword1")
    for key, value in context.items():
        if key in ("url", "action_name"):
            if not isinstance(value, str):
                raise invalid(f"template.context.{key}")
        elif key == "head_color":
            if not isinstance(value, str) or not _COLOR.fullmatch(value):
                raise invalid("template.context.head_color")
        elif key in ("first", "remark") or _KEYWORD.fullmatch(key):
            if not isinstance(value, dict) or not isinstance(value.get("value"), str):
                raise invalid(f"template.context.{key}.value")
            if "color" in value and not _COLOR.fullmatch(str(value["color"])):
                raise invalid(f"template.context.{key}.color")
        else:
            raise invalid(f"template.context.{key}")
    return user


def check_mini_message(biz: dict[str, Any]) -> None:
    """A mini-program subscription message: a user template id and JSON data of short values."""
    recipient(biz)
    if not biz.get("user_template_id"):
        raise Refusal("40004", "USER_TEMPLATE_ILLEGAL", "模板不合法")
    raw = biz.get("data")
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not data:
        raise invalid("data")
    for key, value in data.items():
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise invalid(f"data.{key}.value")
        if len(value["value"]) > MINI_VALUE_LIMIT:
            raise Refusal("40004", "USER_KEYWORD_LENGTH_ERROR", f"{key} 超过{MINI_VALUE_LIMIT}个字符")


def check_menu(biz: dict[str, Any]) -> None:
    """A life-account menu: 1–4 named buttons, each an action or 1–5 named sub-buttons."""
    buttons = biz.get("button")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= 4:
        raise invalid("button")
    if biz.get("type", "text") not in ("text", "icon"):
        raise invalid("type")
    for button in buttons:
        if not isinstance(button, dict) or not button.get("name"):
            raise invalid("button.name")
        subs = button.get("sub_button")
        if subs is None:
            _check_menu_action(button)
            continue
        if not isinstance(subs, list) or not 1 <= len(subs) <= 5:
            raise invalid("sub_button")
        for sub in subs:
            if not isinstance(sub, dict) or not sub.get("name"):
                raise invalid("sub_button.name")
            _check_menu_action(sub)


def _check_menu_action(button: dict[str, Any]) -> None:
    if button.get("action_type") not in MENU_ACTIONS or not button.get("action_param"):
        raise invalid("action_type/action_param")


def check_certify_initialize(biz: dict[str, Any]) -> tuple[str, str, str, str]:
    """A face-verification start: (outer_order_no, cert_name, cert_no, return_url), each checked."""
    order_no = biz.get("outer_order_no")
    if not isinstance(order_no, str) or not _OUTER_ORDER_NO.fullmatch(order_no):
        raise invalid("outer_order_no")
    if biz.get("biz_code") != "FACE":
        raise invalid("biz_code")
    identity = biz.get("identity_param")
    if (
        not isinstance(identity, dict)
        or identity.get("identity_type") != "CERT_INFO"
        or identity.get("cert_type") != "IDENTITY_CARD"
        or not isinstance(identity.get("cert_name"), str)
        or not identity["cert_name"].strip()
        or not isinstance(identity.get("cert_no"), str)
        or not _CERT_NO.fullmatch(identity["cert_no"])
    ):
        raise invalid("identity_param")
    merchant = biz.get("merchant_config")
    return_url = merchant.get("return_url") if isinstance(merchant, dict) else None
    if not isinstance(return_url, str) or not return_url.startswith(("http://", "https://")):
        raise invalid("merchant_config.return_url")
    return order_no, identity["cert_name"], identity["cert_no"], return_url


def check_image_upload(params: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    """An image upload: a known type whose bytes match it, within the size limit; (type, bytes)."""
    image_type = params.get("image_type", "").lower()
    if not image_type or not params.get("image_name"):
        raise invalid("image_type/image_name")
    if image_type not in IMAGE_TYPES:
        raise Refusal("40002", "isv.invalid-file-extension", "不支持的文件类型")
    if "image_content" not in files:
        raise Refusal("40002", "isv.upload-fail", "文件上传失败")
    _, content = files["image_content"]
    if not content or len(content) > MAX_IMAGE_BYTES:
        raise Refusal("40002", "isv.invalid-file-size", "文件大小不符")
    if not content.startswith(IMAGE_TYPES[image_type]):
        raise Refusal("40002", "isv.invalid-file-extension", "文件内容与类型不符")
    return image_type, content
