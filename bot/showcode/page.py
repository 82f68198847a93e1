"""The code page (亮码页面): a link from the chat to a page that keeps a fresh code on screen.

The link's handle is random and stored hashed; the page expires, and every new code is issued only while
the person who opened it may still see the certificate (a revoked grant stops the page at once). The page
shows the name and ID number masked; the code itself carries no personal data (see :mod:`bot.showcode.codes`).
A page refused because it expired or its owner lost the certificate is audited under the owner's name; a
handle that matches no page touches no certificate and is only answered 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import Visible, open_visible, record_view
from bot.chat.conversation import Services
from bot.core.audit import record_about_certificate
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.showcode.codes import issue_code, qr_svg
from models import CodePage, Identity, utcnow

PAGE_PATH = "/code/{handle}"
CODE_PATH = "/code/{handle}/qr"
# The link carries the handle: never in a Referer, never in a cache. The page runs only its own script.
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
REFUSED = "code_page_refused"  # the audit action of a refused page or code request; the reason says why
# The catalogue key of a refusal → its HTTP status and the reason recorded in the audit log.
_REFUSALS = {
    "page_code_invalid": (404, ""),
    "page_code_revoked": (403, "revoked"),
    "page_code_expired": (410, "expired"),
}
# A page asks for a new code a third of the way through the old one's life; a reload may ask sooner, but
# not more often than this.
MIN_CODE_GAP = timedelta(seconds=5)
# What open_code_page hands out (token_urlsafe(24)): anything else leads nowhere, without a lookup.
HANDLE_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}")
# Drawing a code takes milliseconds of pure Python: done in worker threads, at most this many at once.
DRAWING_THREADS = 2


def page_digest(vault: Vault, handle: str) -> str:
    """The stored form of a code page's handle."""
    return vault.digest("code_page_handle", handle)


def code_page_url(settings: Settings, handle: str) -> str:
    """The link sent in the chat."""
    return settings.public_url.rstrip("/") + PAGE_PATH.format(handle=handle)


def open_code_page(
    session: AsyncSession, vault: Vault, *, certificate_id: int, identity_id: int, now: datetime, ttl: timedelta
) -> str:
    """Record a new code page; returns its handle (shown once, stored hashed)."""
    handle = secrets.token_urlsafe(24)
    session.add(
        CodePage(
            handle_hash=page_digest(vault, handle),
            certificate_id=certificate_id,
            identity_id=identity_id,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return handle


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Token buckets by key, in this process: ``burst`` tokens each, refilled at ``per_minute``.

    Only the most recently used ``max_keys`` keys are remembered; a forgotten key starts full again, which
    is what an idle key would be anyway.
    """

    def __init__(
        self, burst: int, per_minute: float, *, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = float(burst)
        self._per_second = per_minute / 60
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._per_second)
            bucket.at = now
        return bucket

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when one was there, else the seconds until one will be."""
        bucket = self._bucket(key)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._per_second

    def give_back(self, key: str) -> None:
        """Return a token taken for ``key`` that turned out not to be owed."""
        bucket = self._bucket(key)
        bucket.tokens = min(self._burst, bucket.tokens + 1)


class _Recent:
    """The most recently seen ``size`` keys."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class PageLimits:
    """Who may ask the code page for what, decided in memory before any database or drawing work.

    Every request spends a token of its client address and one of its page. A page this process has not
    found before also spends one of the address's *miss* tokens, given back when the page turns out to
    exist: guessing links costs the guesser a lookup budget, not the database a lookup per guess.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._addresses = TokenBuckets(
            settings.code_page_address_burst, settings.code_page_address_per_minute, clock=clock
        )
        self._pages = TokenBuckets(settings.code_page_page_burst, settings.code_page_page_per_minute, clock=clock)
        self._misses = TokenBuckets(settings.code_page_miss_burst, settings.code_page_miss_per_minute, clock=clock)
        self._found = _Recent(10_000)

    def admit(self, address: str, handle: str) -> Admission:
        """Whether the request may go on, and whether it holds a miss token of its address."""
        wait = self._addresses.take(address)
        if wait:
            return Admission(wait, holds_miss=False)
        holds_miss = handle not in self._found
        if holds_miss:
            wait = self._misses.take(address)
            if wait:
                return Admission(wait, holds_miss=False)
        wait = self._pages.take(handle)
        if wait and holds_miss:
            self._misses.give_back(address)  # not looked up: no miss
            holds_miss = False
        return Admission(wait, holds_miss)

    def found(self, address: str, handle: str, admission: Admission) -> None:
        """The page exists (valid, expired or revoked): remembered, and a held miss token goes back."""
        self._found.add(handle)
        if admission.holds_miss:
            self._misses.give_back(address)


@dataclasses.dataclass(frozen=True)
class Admission:
    """:meth:`PageLimits.admit`'s answer: 0 or the seconds to wait, and whether a miss token is held."""

    wait: float
    holds_miss: bool


def client_address(request: web.Request, header: str) -> str:
    """The client's address: from ``header`` when a reverse proxy sets it, else the peer's."""
    if header:
        # The last entry is the one our proxy wrote (X-Forwarded-For); any before it came from the client.
        forwarded = request.headers.get(header, "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.remote or ""


_SCRIPT = """
const box = document.getElementById("code"), note = document.getElementById("note");
const status = document.getElementById("status");
async function refresh() {
  let wait = 15;
  try {
    const response = await fetch(location.pathname + "/qr", {cache: "no-store"});
    const body = await response.json();
    if (response.ok) {
      box.innerHTML = body.svg;
      const shown = String(body.expires_at);
      box.dataset.expires = shown;
      // Never leave an expired code on screen (offline, or the page's own end).
      setTimeout(() => { if (box.dataset.expires === shown) box.innerHTML = ""; }, body.expires_in * 1000);
      status.textContent = body.hint;
      wait = body.refresh_in;
    } else if (body.final) {
      box.innerHTML = "";
      box.dataset.expires = "";
      status.textContent = body.message;
      return;
    } else {
      wait = body.retry_in || wait;
    }
  } catch (error) {
    status.textContent = note.dataset.offline;
  }
  setTimeout(refresh, wait * 1000);
}
refresh();
"""


class CodePageRoutes:
    """The page and the endpoint it fetches its codes from."""

    def __init__(self, services: Services, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._services = services
        self._sessionmaker = sessions
        self._limits = PageLimits(services.settings)
        self._drawing = asyncio.Semaphore(DRAWING_THREADS)

    def _admit(self, request: web.Request) -> tuple[str, Admission]:
        """The request's client address and what the limits say of it (see :class:`PageLimits`)."""
        address = client_address(request, self._services.settings.client_address_header)
        return address, self._limits.admit(address, request.match_info["handle"])

    @staticmethod
    def setup(app: web.Application, key: web.AppKey[CodePageRoutes]) -> None:
        """Mount the endpoints, served by the routes object the app holds under ``key`` once it starts."""

        async def page(request: web.Request) -> web.Response:
            return await request.app[key].page(request)

        async def code(request: web.Request) -> web.Response:
            return await request.app[key].code(request)

        app.router.add_get(PAGE_PATH, page)
        app.router.add_get(CODE_PATH, code)

    def _sessions(self) -> AsyncSession:
        return self._sessionmaker()

    async def _open(
        self, session: AsyncSession, request: web.Request, now: datetime, address: str, admission: Admission
    ) -> tuple[CodePage | None, Identity | None, Visible | None, str]:
        """The page, its viewer and certificate, and the catalogue key of what is wrong ("" when all is well)."""
        handle = request.match_info["handle"]
        if not HANDLE_SHAPE.fullmatch(handle):
            return None, None, None, "page_code_invalid"  # no link of ours looks like this: not looked up
        vault = self._services.vault
        digest = page_digest(vault, handle)
        page = (await session.scalars(select(CodePage).where(CodePage.handle_hash == digest))).first()
        if page is None:
            return None, None, None, "page_code_invalid"
        self._limits.found(address, handle, admission)
        if page.expires_at <= now:
            return page, None, None, "page_code_expired"
        identity = await session.get(Identity, page.identity_id)
        visible = await open_visible(session, vault, identity, page.certificate_id) if identity else None
        if visible is None:
            return page, identity, None, "page_code_revoked"
        return page, identity, visible, ""

    async def _refuse(self, session: AsyncSession, page: CodePage | None, problem: str, endpoint: str) -> int:
        """Audit a refusal of a known page under its owner's name (committed with the answer); returns the status."""
        status, reason = _REFUSALS[problem]
        if page is None:  # no page, no certificate: nothing to record against
            return status
        await record_about_certificate(
            session,
            page.certificate_id,
            actor_kind="identity",
            actor_ref=f"identity:{page.identity_id}",
            action=REFUSED,
            reason=reason,
            platform="web",
            detail={"page": page.id, "endpoint": endpoint},
        )
        return status

    def _document(self, body: str, status: int = 200) -> web.Response:
        catalogue = self._services.catalogue
        title = html.escape(catalogue("page_code_title"))
        nonce = secrets.token_urlsafe(16)
        headers = dict(_PRIVATE)
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; connect-src 'self'; style-src 'unsafe-inline'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        document = (
            '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{title}</title><style>"
            "body{font-family:sans-serif;margin:0;background:#f2f5f3;color:#1d2b24;text-align:center}"
            "main{max-width:420px;margin:0 auto;padding:24px}"
            ".card{background:#fff;border-radius:12px;padding:20px;box-shadow:0 1px 4px #0002}"
            "#code{width:260px;height:260px;margin:12px auto}#code svg{width:100%;height:100%}"
            ".muted{color:#5b6b63;font-size:14px;line-height:1.6}"
            f"</style></head><body><main><h3>{title}</h3>{body}</main>"
            f'<script nonce="{nonce}">{_SCRIPT}</script></body></html>'
        )
        return web.Response(text=document, content_type="text/html", status=status, headers=headers)

    def _message(self, key: str, status: int) -> web.Response:
        text = html.escape(self._services.catalogue(key))
        return self._document(
            f'<div class="card"><p id="status">{text}</p></div><i id="code"></i><i id="note"></i>', status
        )

    async def page(self, request: web.Request) -> web.Response:
        """The page: masked identity and an empty frame its script fills with a fresh code."""
        address, admission = self._admit(request)
        if admission.wait:
            response = self._message("page_code_busy", 429)
            response.headers["Retry-After"] = str(math.ceil(admission.wait))
            return response
        now = utcnow()
        async with self._sessions() as session, session.begin():
            page, identity, visible, problem = await self._open(session, request, now, address, admission)
            if problem or identity is None or visible is None:
                return self._message(problem, await self._refuse(session, page, problem, "page"))
            record_view(session, identity, visible, "code_page_view", "web")
        catalogue = self._services.catalogue
        text = {
            "who": catalogue("page_code_who", name=visible.file.masked_name, id=visible.file.masked_id),
            "hint": catalogue("page_code_hint"),
            "warning": catalogue("page_code_warning"),
            "offline": catalogue("page_code_offline"),
        }
        safe = {key: html.escape(value) for key, value in text.items()}
        body = (
            f'<div class="card"><p>{safe["who"]}</p><div id="code" aria-label="QR"></div>'
            f'<p id="status" class="muted">{safe["hint"]}</p></div>'
            f'<p id="note" class="muted" data-offline="{safe["offline"]}">{safe["warning"]}</p>'
        )
        return self._document(body)

    async def code(self, request: web.Request) -> web.Response:
        """A new code for the page, if it is still valid and has not just had one."""
        address, admission = self._admit(request)
        if admission.wait:
            retry_in = math.ceil(admission.wait)
            return _json({"final": False, "retry_in": retry_in}, 429, {"Retry-After": str(retry_in)})
        now = utcnow()
        settings = self._services.settings
        catalogue = self._services.catalogue
        async with self._sessions() as session, session.begin():
            page, identity, visible, problem = await self._open(session, request, now, address, admission)
            if problem or page is None or identity is None or visible is None:
                status = await self._refuse(session, page, problem, "qr")
                return _json({"final": True, "message": catalogue(problem)}, status)
            # One conditional UPDATE: two tabs (or a script) racing get one code between them per gap.
            moved = await session.execute(
                update(CodePage)
                .where(
                    CodePage.id == page.id,
                    or_(CodePage.last_code_at.is_(None), CodePage.last_code_at <= now - MIN_CODE_GAP),
                )
                .values(last_code_at=now)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                return _json({"final": False, "retry_in": int(MIN_CODE_GAP.total_seconds())}, 429)
            life = timedelta(seconds=settings.code_page_code_seconds)
            issued = issue_code(
                session,
                self._services.vault,
                certificate_id=page.certificate_id,
                identity_id=identity.id,
                now=now,
                ttl=min(life, page.expires_at - now),  # no code outlives its page
            )
        remaining = int((issued.expires_at - now).total_seconds())
        async with self._drawing:  # off the event loop: the webhooks go on answering while codes are drawn
            svg = await asyncio.to_thread(qr_svg, issued.payload)
        return _json(
            {
                "svg": svg,
                "expires_at": int(issued.expires_at.timestamp()),
                "expires_in": remaining,
                # A third of the way through the code's life, or when it ends (the page's last code).
                "refresh_in": max(min(int(life.total_seconds() // 3), remaining), 1),
                "hint": catalogue("page_code_hint"),
            },
            200,
        )


def _json(body: dict[str, object], status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers={**_PRIVATE, **(headers or {})},
    )
