"""An async client for WeChat's server API (the outbox sender built on it is in ``sender``).

One access token per app, shared by every process through ``platform_tokens``: it is refreshed under a
row lock (``stable_token``), and a call rejected for its token is retried once with a fresh one, never
more (wechatpy's retry recurses without bound).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.config import Settings
from bot.core.db import dialect_insert
from bot.core.metrics import Metrics
from bot.core.update import TemplateMessage, TemplateValue
from models import PlatformToken, utcnow

log = logging.getLogger("vaxbot.wechat.api")

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
# Web authorisation: the page that redirects back with a code, and where the code becomes an openid.
OAUTH_AUTHORIZE_PATH = "/connect/oauth2/authorize"
# Relative to /cgi-bin/ (where every other call goes): resolves to /sns/oauth2/access_token.
OAUTH_TOKEN_PATH = "../sns/oauth2/access_token"  # noqa: S105 (a path)
# Refresh this long before WeChat's stated expiry, so no request goes out with a dying token.
TOKEN_MARGIN = timedelta(minutes=5)
# How long one process may take to fetch a token before another may try.
REFRESH_LEASE = timedelta(seconds=15)


class WeChatAPIError(Exception):
    """WeChat answered with a non-zero ``errcode`` (or could not be reached: ``errcode`` -2)."""

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"wechat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class WeChatAPI:
    """Typed calls to ``/cgi-bin/…`` over aiohttp."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        metrics: Metrics,
        *,
        appid: str | None = None,
        secret: str | None = None,
        api_base: str | None = None,
    ) -> None:
        # appid, secret and api_base name another WeChat app (the mini program); default: the Official Account.
        self._http = http
        self._sessionmaker = sessionmaker
        self._api_root = (api_base or settings.wechat_api_base).rstrip("/")
        self._base = self._api_root + "/cgi-bin/"
        self._appid = appid or settings.wechat_appid
        self._secret = secret or settings.wechat_secret
        self._oauth_base = settings.wechat_oauth_base.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.api_timeout_seconds)
        self._metrics = metrics
        self._cached: tuple[str, Any] | None = None
        self._lock = asyncio.Lock()

    # --- access token -------------------------------------------------------------------

    async def access_token(self, rejected: str | None = None) -> str:
        """A valid token: from memory, else from the database, else fetched by one process at a time.

        ``rejected`` is a token WeChat just refused; it is never returned again, and when the database
        still holds it the refresh is forced. The fetch happens outside any transaction, under a lease
        on the token row: holding a row lock (and, on SQLite, the database's only writer) across an
        HTTP call would stall every webhook for as long as WeChat takes to answer.
        """
        now = utcnow()
        if self._cached and self._cached[0] != rejected and self._cached[1] - TOKEN_MARGIN > now:
            return self._cached[0]
        async with self._lock:
            if self._cached and self._cached[0] != rejected and self._cached[1] - TOKEN_MARGIN > now:
                return self._cached[0]
            waited_until = time.monotonic() + REFRESH_LEASE.total_seconds()
            while True:
                async with self._sessionmaker() as session, session.begin():
                    row = await self._token_row(session)
                    found = self._usable(row, rejected)
                    if found is not None:
                        return found
                    # Another process may have refreshed already (row.token differs from the rejected
                    # one); only force WeChat to rotate when the stored token is the one that failed.
                    force = rejected is not None and row.token == rejected
                    leased = await self._take_lease(session, row)
                if leased:
                    return await self._refresh(force)
                if time.monotonic() > waited_until:
                    raise WeChatAPIError(-3, "another process did not finish refreshing the token")
                await asyncio.sleep(0.05)

    async def _take_lease(self, session: AsyncSession, row: PlatformToken) -> bool:
        now = utcnow()
        result = await session.execute(
            update(PlatformToken)
            .where(PlatformToken.id == row.id)
            .where(or_(PlatformToken.refreshing_until.is_(None), PlatformToken.refreshing_until < now))
            .where(PlatformToken.token.is_(None) if row.token is None else PlatformToken.token == row.token)
            .values(refreshing_until=now + REFRESH_LEASE)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))

    async def _refresh(self, force: bool) -> str:
        try:
            token, expires_in = await self._fetch_stable_token(force)
        except Exception:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(PlatformToken)
                    .where(PlatformToken.platform == "wechat", PlatformToken.app_id == self._appid)
                    .values(refreshing_until=None)
                )
            raise
        expires_at = utcnow() + timedelta(seconds=expires_in)
        async with self._sessionmaker() as session, session.begin():
            await session.execute(
                update(PlatformToken)
                .where(PlatformToken.platform == "wechat", PlatformToken.app_id == self._appid)
                .values(
                    token=token,
                    expires_at=expires_at,
                    refreshed_at=utcnow(),
                    refresh_count=PlatformToken.refresh_count + 1,
                    refreshing_until=None,
                )
            )
        self._cached = (token, expires_at)
        self._metrics.token_refreshes.labels("wechat").inc()
        return token

    def _usable(self, row: PlatformToken, rejected: str | None) -> str | None:
        if row.token and row.expires_at and row.expires_at - TOKEN_MARGIN > utcnow() and row.token != rejected:
            self._cached = (row.token, row.expires_at)
            return row.token
        return None

    async def _token_row(self, session: AsyncSession) -> PlatformToken:
        query = select(PlatformToken).where(PlatformToken.platform == "wechat", PlatformToken.app_id == self._appid)
        row = (await session.scalars(query)).first()
        if row is None:
            insert = dialect_insert(session)
            await session.execute(
                insert(PlatformToken)
                .values(platform="wechat", app_id=self._appid, refresh_count=0)
                .on_conflict_do_nothing(index_elements=["platform", "app_id"])
            )
            row = (await session.scalars(query)).first()
        assert row is not None
        return row

    async def _fetch_stable_token(self, force_refresh: bool) -> tuple[str, int]:
        body = {
            "grant_type": "client_credential",
            "appid": self._appid,
            "secret": self._secret,
            "force_refresh": force_refresh,
        }
        data = await self._request("POST", "stable_token", json=body)
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise WeChatAPIError(-3, "stable_token answered without access_token")
        return token, int(data.get("expires_in", 7200))

    # --- calls --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        data: Any = None,
    ) -> dict[str, Any]:
        try:
            async with self._http.request(
                method, self._base + path, params=params, json=json, data=data, timeout=self._timeout
            ) as response:
                if response.status != 200:
                    raise WeChatAPIError(-2, f"http {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WeChatAPIError(-2, type(exc).__name__) from exc
        if not isinstance(body, dict):
            raise WeChatAPIError(-2, "not a json object")
        errcode = int(body.get("errcode", 0) or 0)
        if errcode != 0:
            raise WeChatAPIError(errcode, str(body.get("errmsg", "")))
        return body

    async def call(
        self, path: str, *, json: Any = None, data: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """POST to ``/cgi-bin/<path>`` with the access token; one refresh-and-retry on a token error."""
        rejected: str | None = None
        for attempt in range(2):
            try:
                token = await self.access_token(rejected)
            except WeChatAPIError as exc:
                # No token (secret rotated, IP not whitelisted, WeChat down): the message itself is fine,
                # so this is worth retrying later, whatever stable_token answered.
                raise WeChatAPIError(-3, f"no access token: {exc.errcode} {exc.errmsg}") from exc
            try:
                # Multipart bodies are single-use streams: rebuild them for the retry.
                body = data() if callable(data) else data
                return await self._request(
                    "POST", path, params={**(params or {}), "access_token": token}, json=json, data=body
                )
            except WeChatAPIError as exc:
                if exc.errcode in TOKEN_ERRORS and attempt == 0:
                    log.info("access token rejected; refreshing once", extra={"errcode": exc.errcode})
                    rejected = token
                    continue
                raise
        raise AssertionError("unreachable")

    # --- web authorisation (网页授权) ---------------------------------------------------------

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        """The silent ``snsapi_base`` authorisation page: WeChat sends the browser back with ``code`` and ``state``."""
        query = urlencode(
            {
                "appid": self._appid,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": "snsapi_base",
                "state": state,
            }
        )
        # WeChat reads the parameters in this order and wants the #wechat_redirect fragment on the end.
        return f"{self._oauth_base}{OAUTH_AUTHORIZE_PATH}?{query}#wechat_redirect"

    async def oauth_openid(self, code: str) -> str:
        """The openid of whoever was sent back with ``code`` (``sns/oauth2/access_token``; the code works once)."""
        return (await self.oauth_user(code))[0]

    async def oauth_user(self, code: str) -> tuple[str, str]:
        """(openid, unionid or "") of whoever was sent back with ``code``; WeChat gives the unionid when the
        account is bound to an Open Platform account (the same person's id in the mini program too)."""
        params = {"appid": self._appid, "secret": self._secret, "code": code, "grant_type": "authorization_code"}
        answer = await self._request("GET", OAUTH_TOKEN_PATH, params=params)
        openid = answer.get("openid")
        if not isinstance(openid, str) or not openid:
            raise WeChatAPIError(-3, "sns/oauth2/access_token answered without openid")
        unionid = answer.get("unionid")
        return openid, unionid if isinstance(unionid, str) else ""

    async def send_text(self, openid: str, content: str) -> None:
        """Customer-service text message."""
        await self.call("message/custom/send", json={"touser": openid, "msgtype": "text", "text": {"content": content}})

    async def send_image(self, openid: str, media_id: str) -> None:
        """Customer-service image message."""
        await self.call(
            "message/custom/send",
            json={"touser": openid, "msgtype": "image", "image": {"media_id": media_id}},
        )

    async def send_news(self, openid: str, article: dict[str, str]) -> None:
        """Customer-service link card (one article)."""
        item = {
            "title": article.get("title", ""),
            "description": article.get("description", ""),
            "url": article.get("url", ""),
            "picurl": article.get("image_url", ""),
        }
        await self.call("message/custom/send", json={"touser": openid, "msgtype": "news", "news": {"articles": [item]}})

    async def upload_image(self, content: bytes, filename: str = "code.png") -> str:
        """Upload a temporary image (kept three days by WeChat); returns its ``media_id``."""
        if len(content) > 2 * 1024 * 1024:
            raise WeChatAPIError(40009, "image larger than 2 MB")

        def form() -> aiohttp.FormData:
            body = aiohttp.FormData()
            body.add_field("media", content, filename=filename, content_type="image/png")
            return body

        result = await self.call("media/upload", params={"type": "image"}, data=form)
        return str(result["media_id"])

    async def send_template(self, openid: str, template: TemplateMessage) -> str:
        """Template message; returns WeChat's ``msgid`` (the result arrives later as an event)."""
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template.template_id,
            "data": {name: _template_value(value) for name, value in template.data().items()},
        }
        if template.url:
            body["url"] = template.url
        result = await self.call("message/template/send", json=body)
        return str(result.get("msgid", ""))

    async def send_subscription(self, openid: str, template_id: str, data: dict[str, str], page: str = "") -> None:
        """Subscription notification (订阅通知); ``thing`` values must be ≤ 20 characters."""
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if page:
            body["page"] = page
        await self.call("message/subscribe/bizsend", json=body)

    async def create_menu(self, menu: dict[str, Any]) -> None:
        """Replace the account's custom menu."""
        await self.call("menu/create", json=menu)


def _template_value(value: TemplateValue) -> dict[str, str]:
    return {"value": value.value, "color": value.color} if value.color else {"value": value.value}
