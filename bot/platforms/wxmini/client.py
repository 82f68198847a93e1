"""The WeChat mini program's server API, with the mini program's own app id, secret and access token.

Everything :class:`WeChatAPI` does (one shared access token per app, one refresh-and-retry on a token
error) for the mini program's credentials, plus what only mini programs have: ``jscode2session`` (login),
link cards in customer-service messages, and subscription messages (``message/subscribe/send``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.config import Settings
from bot.core.metrics import Metrics
from bot.platforms.wechat.client import WeChatAPI, WeChatAPIError

# Relative to /cgi-bin/ (where WeChatAPI posts): resolves to /sns/jscode2session.
CODE2SESSION_PATH = "../sns/jscode2session"
# WeChat answers these for a login code that is not (or no longer) good: invalid, used, or a high-risk user.
BAD_LOGIN_CODE = frozenset({40029, 40163, 40226})


@dataclasses.dataclass(frozen=True)
class MiniLogin:
    """What ``jscode2session`` answers; ``session_key`` is a secret that never leaves the server."""

    openid: str
    session_key: str = dataclasses.field(repr=False)
    unionid: str = ""


# Subscription-message value types (the name before the digits: thing1, time2, character_string3…):
# their length limits, and the characters each type may hold.
_HAN = r"\u4e00-\u9fff"
SUBSCRIPTION_FIELD_RULES: dict[str, tuple[int, re.Pattern[str] | None]] = {
    "thing": (20, None),
    "number": (32, re.compile(r"^\d+(\.\d+)?$")),
    "letter": (32, re.compile(r"^[A-Za-z]+$")),
    "symbol": (5, re.compile(r"^[^\w\s]+$")),
    "character_string": (32, re.compile(r"^[\x21-\x7e]+$")),
    "time": (64, re.compile(r"\d{1,2}:\d{2}")),
    "date": (64, re.compile(r"\d")),
    "amount": (12, None),
    "phone_number": (17, re.compile(r"^[\d+\-() ]+$")),
    "car_number": (8, None),
    "name": (20, None),
    "phrase": (5, re.compile(f"^[{_HAN}]+$")),
}
_FIELD = re.compile(r"^([a-z_]+?)(\d+)$")


def subscription_field_problem(name: str, value: str) -> str | None:
    """Why ``value`` may not fill field ``name`` of a subscription template (None when it may)."""
    match = _FIELD.match(name)
    if match is None or match[1] not in SUBSCRIPTION_FIELD_RULES:
        return f"{name}: not a typed field name"
    kind = match[1]
    limit, pattern = SUBSCRIPTION_FIELD_RULES[kind]
    if kind == "name" and re.search(f"[{_HAN}]", value):
        limit = 10  # a Chinese name: ten characters; a Latin one: twenty
    if not value or len(value) > limit:
        return f"{name}: 1 to {limit} characters"
    if any(ord(char) < 32 for char in value):
        return f"{name}: no control characters"
    if pattern is not None and not pattern.search(value):
        return f"{name}: not a {kind} value"
    return None


def fit_subscription_value(name: str, value: str) -> str:
    """``value`` on one line, and a ``thing`` cut to its 20 characters (ending in "…").

    Other types are not cut (half a phrase or a queue number misleads): check the result with
    :func:`subscription_field_problem`.
    """
    text = " ".join(value.split())  # no control characters, no line breaks
    match = _FIELD.match(name)
    if match is None or match[1] != "thing":
        return text
    limit = SUBSCRIPTION_FIELD_RULES["thing"][0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MiniProgramAPI(WeChatAPI):
    """Typed calls to WeChat's API as the mini program."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        super().__init__(
            http,
            sessionmaker,
            settings,
            metrics,
            appid=settings.wxmini_appid,
            secret=settings.wxmini_secret,
            api_base=settings.wxmini_api_base,
        )

    @property
    def appid(self) -> str:
        """The mini program's app id."""
        return self._appid

    async def code_to_session(self, js_code: str) -> MiniLogin:
        """``jscode2session``: the user a ``wx.login`` code was issued to (a code works once, for five minutes)."""
        params = {"appid": self._appid, "secret": self._secret, "js_code": js_code, "grant_type": "authorization_code"}
        answer = await self._request("GET", CODE2SESSION_PATH, params=params)
        openid, session_key = answer.get("openid"), answer.get("session_key")
        if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
            raise WeChatAPIError(-3, "jscode2session answered without openid or session_key")
        unionid = answer.get("unionid")
        return MiniLogin(openid, session_key, unionid if isinstance(unionid, str) else "")

    async def send_link(self, openid: str, article: Mapping[str, str]) -> None:
        """A customer-service link card (mini programs have ``link``, not the Official Account's ``news``)."""
        link = {
            "title": article.get("title", ""),
            "description": article.get("description", ""),
            "url": article.get("url", ""),
            "thumb_url": article.get("image_url", ""),
        }
        await self.call("message/custom/send", json={"touser": openid, "msgtype": "link", "link": link})

    async def send_subscribe(self, openid: str, template_id: str, data: Mapping[str, str], page: str = "") -> None:
        """A subscription message (``message/subscribe/send``); every field must pass its type's rules first."""
        problems = [problem for name, value in data.items() if (problem := subscription_field_problem(name, value))]
        if problems:
            raise WeChatAPIError(47003, "; ".join(problems))  # WeChat's own answer to such a body
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {name: {"value": value} for name, value in data.items()},
        }
        if page:
            body["page"] = page
        await self.call("message/subscribe/send", json=body)
