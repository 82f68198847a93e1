"""The code page (亮码页面): a link from the chat to a page that keeps a fresh code on screen.

The link's handle is random and stored hashed; the page expires, and every new code is issued only while
the person who opened it may still see the certificate (a revoked grant stops the page at once). The page
shows the name and ID number masked; the code itself carries no personal data (see :mod:`bot.showcode.codes`).
A page refused because it expired or its owner lost the certificate is audited under the owner's name; a
handle that matches no page touches no certificate and is only answered 404.
"""

from __future__ import annotations

import html
import json
import secrets
from datetime import datetime, timedelta

from aiohttp import web
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.certificates.rules import Visible, open_visible, record_view
from bot.chat.conversation import Services
from bot.core.audit import record_access
from bot.core.config import Settings
from bot.core.pii import Vault
from bot.showcode.codes import issue_code, qr_svg
from models import Certificate, CodePage, Identity, utcnow

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
        self, session: AsyncSession, handle: str, now: datetime
    ) -> tuple[CodePage | None, Identity | None, Visible | None, str]:
        """The page, its viewer and certificate, and the catalogue key of what is wrong ("" when all is well)."""
        vault = self._services.vault
        digest = page_digest(vault, handle)
        page = (await session.scalars(select(CodePage).where(CodePage.handle_hash == digest))).first()
        if page is None:
            return None, None, None, "page_code_invalid"
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
        certificate = await session.get(Certificate, page.certificate_id)
        record_access(
            session,
            actor_kind="identity",
            actor_ref=f"identity:{page.identity_id}",
            action=REFUSED,
            reason=reason,
            certificate_id=page.certificate_id,
            vaccinee_id=certificate.vaccinee_id if certificate is not None else None,
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
        now = utcnow()
        async with self._sessions() as session, session.begin():
            page, identity, visible, problem = await self._open(session, request.match_info["handle"], now)
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
        now = utcnow()
        settings = self._services.settings
        catalogue = self._services.catalogue
        async with self._sessions() as session, session.begin():
            page, identity, visible, problem = await self._open(session, request.match_info["handle"], now)
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
        return _json(
            {
                "svg": qr_svg(issued.payload),
                "expires_at": int(issued.expires_at.timestamp()),
                "expires_in": remaining,
                # A third of the way through the code's life, or when it ends (the page's last code).
                "refresh_in": max(min(int(life.total_seconds() // 3), remaining), 1),
                "hint": catalogue("page_code_hint"),
            },
            200,
        )


def _json(body: dict[str, object], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False), status=status, content_type="application/json", headers=_PRIVATE
    )
