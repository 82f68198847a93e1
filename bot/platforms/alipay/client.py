"""An async client for Alipay's open-platform gateway (the outbox sender built on it is in ``sender``).

The official SDK builds the request objects (``get_params()``), its sign-content rule is ours, and we
send over aiohttp and sign with ``cryptography`` (its client is synchronous and its signer would block
the event loop). A response is trusted only when Alipay's signature verifies over the exact bytes of
its ``<method>_response`` object as they arrived; an unsigned answer is only ever read as an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import PurePath
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from alipay.aop.api.domain.AlipayOpenAppMiniTemplatemessageSendModel import (
    AlipayOpenAppMiniTemplatemessageSendModel,
)
from alipay.aop.api.domain.AlipayOpenPublicMenuCreateModel import AlipayOpenPublicMenuCreateModel
from alipay.aop.api.domain.AlipayOpenPublicMessageCustomSendModel import AlipayOpenPublicMessageCustomSendModel
from alipay.aop.api.FileItem import FileItem
from alipay.aop.api.request.AlipayOfflineMaterialImageUploadRequest import AlipayOfflineMaterialImageUploadRequest
from alipay.aop.api.request.AlipayOpenAppMiniTemplatemessageSendRequest import (
    AlipayOpenAppMiniTemplatemessageSendRequest,
)
from alipay.aop.api.request.AlipayOpenPublicMenuCreateRequest import AlipayOpenPublicMenuCreateRequest
from alipay.aop.api.request.AlipayOpenPublicMessageCustomSendRequest import AlipayOpenPublicMessageCustomSendRequest
from alipay.aop.api.request.AlipayOpenPublicMessageSingleSendRequest import AlipayOpenPublicMessageSingleSendRequest
from alipay.aop.api.request.AlipaySystemOauthTokenRequest import AlipaySystemOauthTokenRequest
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from bot.core.chinatime import CHINA, china_now
from bot.core.config import Settings
from bot.core.metrics import Metrics
from bot.platforms.alipay import sign as alipay_sign

log = logging.getLogger("vaxbot.alipay.api")

# Alipay reads every timestamp as Beijing time, whatever zone this machine runs in.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
CHARSET = "utf-8"
SUCCESS = "10000"
# Parameters that travel in the query string (as the SDK sends them); the rest go in the body.
COMMON_PARAMS = frozenset(
    {
        "app_id",
        "method",
        "format",
        "charset",
        "sign_type",
        "sign",
        "timestamp",
        "version",
        "notify_url",
        "return_url",
        "auth_token",
        "app_auth_token",
        "encrypt_type",
    }
)

MINI_VALUE_LIMIT = 50  # characters per mini-program subscription-message value
# Web authorisation: the page that sends the browser back with an auth_code, and the call that reads it.
OAUTH_AUTHORIZE_PATH = "/oauth2/publicAppAuthorize.htm"
OAUTH_TOKEN = "alipay.system.oauth.token"  # noqa: S105 (a method name)
# Methods whose success answer carries no ``code`` at all (only errors do, in ``error_response``):
# for them a verified signature over the ``<method>_response`` object is the success.
CODELESS_SUCCESS = frozenset({OAUTH_TOKEN})


class AlipayAPIError(Exception):
    """Alipay answered with a code other than ``10000``, or could not be reached (``code`` "transport")."""

    def __init__(self, code: str, msg: str = "", sub_code: str = "", sub_msg: str = "") -> None:
        detail = " ".join(part for part in (sub_code, sub_msg or msg) if part)
        super().__init__(f"alipay {code}: {detail}" if detail else f"alipay {code}")
        self.code = code
        self.msg = msg
        self.sub_code = sub_code
        self.sub_msg = sub_msg

    @property
    def may_have_arrived(self) -> bool:
        """False only when Alipay certainly did not act on the call (it answered, and said no)."""
        return self.code in ("transport", "bad_response", "response_signature_invalid")


class AlipayRequest(Protocol):
    """What the SDK's request classes provide."""

    def get_params(self) -> dict[str, Any]:
        """Method, version, ``biz_content`` and any other text parameters."""

    def get_multipart_params(self) -> dict[str, Any]:
        """File parameters (``FileItem``), sent as multipart parts and never signed."""


# --- the raw response object ------------------------------------------------------------------------

_WHITESPACE = " \t\r\n"


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _string_end(text: str, index: int) -> int:
    """``text[index]`` is an opening quote; the index just past its closing quote."""
    index += 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index + 1
        index += 1
    raise ValueError("unterminated string")


def _value_end(text: str, index: int) -> int:
    """The index just past the JSON value starting at ``index`` (strings and escapes respected)."""
    char = text[index]
    if char == '"':
        return _string_end(text, index)
    if char in "{[":
        depth = 0
        while index < len(text):
            char = text[index]
            if char == '"':
                index = _string_end(text, index)
                continue
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return index + 1
            index += 1
        raise ValueError("unbalanced braces")
    end = index
    while end < len(text) and text[end] not in ",}]" + _WHITESPACE:
        end += 1
    if end == index:
        raise ValueError("missing value")
    return end


def raw_members(text: str) -> dict[str, str]:
    """The top-level members of a JSON object, each value as the exact substring it occupies in ``text``.

    Alipay signs the bytes it sent, not a canonical form: re-serialising a parsed answer (key order,
    escaped slashes, spacing, ``\\u`` escapes) would break the signature. ``ValueError`` when ``text`` is
    not one JSON object.
    """
    members: dict[str, str] = {}
    try:
        index = _skip(text, 0)
        if text[index] != "{":
            raise ValueError("not a json object")
        index = _skip(text, index + 1)
        if text[index] == "}":
            return members
        while True:
            if text[index] != '"':
                raise ValueError("expected a member name")
            name_end = _string_end(text, index)
            name = json.loads(text[index:name_end])
            index = _skip(text, name_end)
            if text[index] != ":":
                raise ValueError("expected ':'")
            start = _skip(text, index + 1)
            end = _value_end(text, start)
            members[name] = text[start:end]
            index = _skip(text, end)
            if text[index] == "}":
                break
            if text[index] != ",":
                raise ValueError("expected ',' or '}'")
            index = _skip(text, index + 1)
        if _skip(text, index + 1) != len(text):
            raise ValueError("trailing data after the object")
    except IndexError as exc:
        raise ValueError("truncated json") from exc
    return members


def response_key(method: str) -> str:
    """``alipay.open.public.menu.create`` → ``alipay_open_public_menu_create_response``."""
    return method.replace(".", "_") + "_response"


# --- the client ---------------------------------------------------------------------------------------


class AlipayAPI:
    """Signed calls to Alipay's gateway over aiohttp."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        settings: Settings,
        metrics: Metrics,
        private_key: rsa.RSAPrivateKey,
        alipay_public_key: rsa.RSAPublicKey,
    ) -> None:
        self._http = http
        self._settings = settings
        self._metrics = metrics
        self._app_id = settings.alipay_appid
        self._gateway = settings.alipay_gateway.split("?", 1)[0]
        self._oauth_base = settings.alipay_oauth_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.api_timeout_seconds)
        self._private_key = private_key
        self._alipay_public_key = alipay_public_key

    @classmethod
    def from_settings(cls, http: aiohttp.ClientSession, settings: Settings, metrics: Metrics) -> AlipayAPI:
        """A client with the key files the settings name (``AlipayKeyError`` when they cannot be used)."""
        return cls(
            http,
            settings,
            metrics,
            alipay_sign.read_private_key(settings.alipay_private_key_path),
            alipay_sign.read_public_key(settings.alipay_public_key_path),
        )

    @property
    def settings(self) -> Settings:
        """The settings this client was built with."""
        return self._settings

    # --- signing ---

    def signed_params(
        self, request: AlipayRequest, now: datetime | None = None
    ) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
        """(common parameters with ``sign``, business parameters, files), as the SDK's client splits them.

        The signature covers every parameter but ``sign`` (so ``sign_type`` too), files excepted.
        """
        params = {key: _text(value) for key, value in request.get_params().items() if value is not None}
        files = dict(request.get_multipart_params() or {})
        stamp = (now or china_now()).astimezone(CHINA).strftime(TIMESTAMP_FORMAT)
        common = {key: value for key, value in params.items() if key in COMMON_PARAMS}
        common.update(
            app_id=self._app_id,
            method=params["method"],
            format="JSON",
            charset=CHARSET,
            sign_type="RSA2",
            timestamp=stamp,
            version=params.get("version") or "1.0",
        )
        business = {key: value for key, value in params.items() if key not in COMMON_PARAMS}
        content = alipay_sign.sign_content({**business, **common})
        common["sign"] = alipay_sign.sign(self._private_key, content, CHARSET)
        return common, business, files

    def page_url(self, request: AlipayRequest) -> str:
        """A signed GET URL for a page API (the user's browser opens it; no call is made here)."""
        common, business, _ = self.signed_params(request)
        query = urlencode(common)
        if business:
            query += "&" + urlencode(business)
        return f"{self._gateway}?{query}"

    # --- calls ---

    async def execute(self, request: AlipayRequest) -> dict[str, Any]:
        """Send one request; the verified ``<method>_response`` object when its code is ``10000``."""
        common, business, files = self.signed_params(request)
        method = common["method"]
        url = URL(f"{self._gateway}?{urlencode(common)}", encoded=True)
        data: aiohttp.FormData | bytes
        headers: dict[str, str] = {}
        if files:
            data = aiohttp.FormData(charset=CHARSET)
            for key, value in business.items():
                data.add_field(key, value)
            for key, item in files.items():
                if isinstance(item, FileItem):
                    data.add_field(
                        key,
                        item.get_file_content(),
                        filename=item.get_file_name(),
                        content_type=item.get_mime_type() or "application/octet-stream",
                    )
        else:
            data = urlencode(business).encode("ascii")
            headers["Content-Type"] = f"application/x-www-form-urlencoded;charset={CHARSET}"
        try:
            try:
                async with self._http.post(url, data=data, headers=headers, timeout=self._timeout) as response:
                    if response.status != 200:
                        raise AlipayAPIError("transport", f"http {response.status}")
                    body = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise AlipayAPIError("transport", type(exc).__name__) from exc
            return self.open_response(method, body)
        except AlipayAPIError as exc:
            self._metrics.api_errors.labels("alipay", exc.code).inc()
            raise

    def open_response(self, method: str, body: bytes) -> dict[str, Any]:
        """Verify and read a gateway answer; raise :class:`AlipayAPIError` for anything but success."""
        try:
            text = body.decode(CHARSET)
            members = raw_members(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise AlipayAPIError("bad_response", f"not a json object: {exc}") from exc
        raw = members.get(response_key(method))
        if raw is None:
            raw = members.get("error_response")
        if raw is None:
            raise AlipayAPIError("bad_response", "no response object")
        try:
            content = json.loads(raw)
            sign_raw = members.get("sign")
            signature = json.loads(sign_raw) if sign_raw is not None else None
        except ValueError as exc:
            raise AlipayAPIError("bad_response", "malformed json") from exc
        if not isinstance(content, dict):
            raise AlipayAPIError("bad_response", "response is not an object")
        code = str(content.get("code", ""))
        if not code and method in CODELESS_SUCCESS and members.get(response_key(method)) is not None:
            code = SUCCESS  # trusted below only with a signature that verifies
        if isinstance(signature, str) and signature:
            if not alipay_sign.verify(self._alipay_public_key, raw, signature, CHARSET):
                log.error("alipay response signature does not verify", extra={"method": method, "code": code})
                raise AlipayAPIError("response_signature_invalid", "the response signature does not verify")
        elif code == SUCCESS:
            # Only failures may come unsigned; an unsigned success is not Alipay's.
            log.error("unsigned success response from alipay", extra={"method": method})
            raise AlipayAPIError("response_signature_invalid", "unsigned success response")
        if code != SUCCESS:
            raise AlipayAPIError(
                code or "bad_response",
                str(content.get("msg", "")),
                str(content.get("sub_code", "")),
                str(content.get("sub_msg", "")),
            )
        return content

    # --- typed calls ---

    async def custom_send(
        self,
        to_user_id: str,
        *,
        text: str | None = None,
        articles: list[dict[str, str]] | None = None,
        event_type: str | None,
        chat: bool,
    ) -> dict[str, Any]:
        """A customer-service message: text, or image-text ``articles`` (title, desc, url, image_url…)."""
        if (text is None) == (articles is None):
            raise ValueError("exactly one of text and articles")
        biz: dict[str, Any] = {"to_user_id": to_user_id, "chat": "1" if chat else "0"}
        if text is not None:
            biz.update(msg_type="text", text={"content": text})
        else:
            biz.update(msg_type="image-text", articles=articles)
        if event_type:
            biz["event_type"] = event_type
        request = AlipayOpenPublicMessageCustomSendRequest()
        request.biz_content = AlipayOpenPublicMessageCustomSendModel.from_alipay_dict(biz)
        return await self.execute(request)

    async def template_send(self, to_user_id: str, template_id: str, context: Mapping[str, Any]) -> dict[str, Any]:
        """A template message; ``context`` holds head_color, url, action_name, first, keywordN, remark."""
        # The SDK's Context model keeps keyword1 and keyword2 only: the body goes as raw JSON.
        biz = {"to_user_id": to_user_id, "template": {"template_id": template_id, "context": dict(context)}}
        request = AlipayOpenPublicMessageSingleSendRequest()
        request.add_other_text_param("biz_content", _json(biz))
        return await self.execute(request)

    async def mini_template_send(
        self, to_user_id: str, user_template_id: str, page: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A mini-program subscription message; ``data`` values are strings or ``{"value": …}``."""
        values = {key: _keyword(value) for key, value in data.items()}
        for key, value in values.items():
            if len(value["value"]) > MINI_VALUE_LIMIT:
                # Refused here, as Alipay would: no call is spent on a message that cannot go.
                raise AlipayAPIError(
                    "40004",
                    "Business Failed",
                    "USER_KEYWORD_LENGTH_ERROR",
                    f"{key} longer than {MINI_VALUE_LIMIT} characters (refused locally)",
                )
        model = AlipayOpenAppMiniTemplatemessageSendModel()
        model.to_user_id = to_user_id
        model.user_template_id = user_template_id
        model.page = page
        model.data = _json(values)
        request = AlipayOpenAppMiniTemplatemessageSendRequest()
        request.biz_content = model
        return await self.execute(request)

    async def upload_image(self, png: bytes, name: str = "code.png") -> str:
        """Upload an image (PNG or JPEG); returns the ``image_url`` to put in an image-text article."""
        suffix = PurePath(name).suffix.lower().lstrip(".")
        image_type = {"jpeg": "jpg"}.get(suffix, suffix) or "png"
        request = AlipayOfflineMaterialImageUploadRequest()
        request.image_type = image_type
        request.image_name = PurePath(name).stem or "image"
        request.image_content = FileItem(
            file_name=name, file_content=png, mime_type="image/jpeg" if image_type == "jpg" else f"image/{image_type}"
        )
        result = await self.execute(request)
        image_url = result.get("image_url")
        if not isinstance(image_url, str) or not image_url:
            raise AlipayAPIError("bad_response", "upload answered without image_url")
        return image_url

    # --- web authorisation ---

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """The silent ``auth_base`` page: Alipay sends the browser back with ``auth_code`` and ``state``."""
        query = urlencode({"app_id": self._app_id, "scope": "auth_base", "redirect_uri": redirect_uri, "state": state})
        return f"{self._oauth_base}{OAUTH_AUTHORIZE_PATH}?{query}"

    async def oauth_user_id(self, auth_code: str) -> str:
        """Whose browser was sent back with ``auth_code`` (``alipay.system.oauth.token``; the code works once).

        The ``user_id`` (2088…) this life account's messages carry; ``open_id`` for an app that was
        switched to OpenIDs, whose messages carry that instead.
        """
        request = AlipaySystemOauthTokenRequest()
        request.grant_type = "authorization_code"
        request.code = auth_code
        answer = await self.execute(request)
        user = answer.get("user_id") or answer.get("open_id")
        if not isinstance(user, str) or not user:
            raise AlipayAPIError("bad_response", "oauth token answered without user_id")
        return user

    async def create_menu(self, menu: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the life account's default menu (see :func:`bot.chat.menu.alipay_menu`)."""
        request = AlipayOpenPublicMenuCreateRequest()
        request.biz_content = AlipayOpenPublicMenuCreateModel.from_alipay_dict(dict(menu))
        return await self.execute(request)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _keyword(value: Any) -> dict[str, str]:
    """A template value as Alipay wants it: ``{"value": …}`` (with ``color`` when given)."""
    if isinstance(value, Mapping):
        item = {"value": str(value.get("value", ""))}
        if value.get("color"):
            item["color"] = str(value["color"])
        return item
    return {"value": str(value)}
