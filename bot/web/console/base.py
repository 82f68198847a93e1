"""What every console page shares: the session cookie, CSRF checks, role checks, templates and headers.

A page handler is wrapped by :func:`staff_page`, which resolves the session cookie to the signed-in
staff member (or sends the browser to sign in), refuses a POST whose CSRF token is not the session's, and
refuses an action the member's role may not take. Handlers receive a :class:`Console` context.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import Services
from bot.core.chinatime import CHINA
from bot.staff.auth import StaffMember, csrf_matches, csrf_token, resume_session
from bot.staff.roles import ALLOWED, Permission, may
from models import utcnow

PREFIX = "/clinic"
COOKIE = "vaxbot_clinic"  # the session token
SIGN_IN_COOKIE = "vaxbot_clinic_signin"  # the sign-in form's CSRF token, before there is a session
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
# Pages that show personal data: never cached, never in a Referer, never framed; only our own script runs.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    # The scan page may use the camera (BarcodeDetector); nothing else may.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}

Clock = Callable[[], datetime]


@dataclasses.dataclass(frozen=True)
class DemoStaff:
    """Development only: the demo clinic's console accounts, shown on the sign-in page (the password is public)."""

    clinic: str
    password: str
    staff: tuple[tuple[str, str, str], ...]  # (login, display name, role)


DEMO_STAFF = web.AppKey("console_demo_staff", DemoStaff)  # set by the development server only


@dataclasses.dataclass(frozen=True)
class Console:
    """One request's context: the member, their session token, the form (POST) and the request itself."""

    request: web.Request
    member: StaffMember
    token: str
    form: MultiDictProxy[str | bytes | Any]

    def field(self, name: str) -> str:
        """A form field as stripped text ("" when absent or not text)."""
        value = self.form.get(name, "")
        return value.strip() if isinstance(value, str) else ""


def cookie_options(services: Services) -> dict[str, Any]:
    """HttpOnly, SameSite=Strict, scoped to the console; Secure everywhere but development (plain http there)."""
    return {
        "httponly": True,
        "samesite": "Strict",
        "secure": services.settings.env != "development",
        "path": PREFIX,
    }


def page(
    request: web.Request,
    services: Services,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    member: StaffMember | None = None,
    token: str = "",
    now: datetime | None = None,
) -> web.Response:
    """Render ``template`` with the catalogue (``t``), the member, their CSRF token and the nav."""
    values = {
        "t": services.catalogue,
        "member": member,
        "csrf": csrf_token(services.vault, token) if token else "",
        "allowed": ALLOWED[member.role] if member is not None else frozenset(),
        "P": Permission,
        "prefix": PREFIX,
        "sandbox": services.settings.dev_tools,
        "server_now_ms": int((now or utcnow()).timestamp() * 1000),
        **context,
    }
    response = aiohttp_jinja2.render_template(template, request, values, app_key=TEMPLATES, status=status)
    response.headers.update(HEADERS)
    return response


def refusal(
    request: web.Request,
    services: Services,
    text: str,
    *,
    status: int,
    member: StaffMember | None = None,
    token: str = "",
) -> web.Response:
    """A plain console page saying why a request was refused."""
    return page(request, services, "refused.html", {"message": text}, status=status, member=member, token=token)


def redirect(location: str) -> web.Response:
    """A 303 to ``location`` (after a POST, the browser GETs it)."""
    return web.Response(status=303, headers={"Location": location, **HEADERS})


def to_sign_in(request: web.Request, *, ended: bool = False) -> web.Response:
    """A redirect to the sign-in page that brings the browser back here afterwards (GET pages only).

    ``ended``: the browser had a session that no longer works (idle, signed out elsewhere): the page says so.
    """
    target = request.path_qs if request.method == "GET" else f"{PREFIX}/queue"
    return redirect(f"{PREFIX}/sign-in?next={quote(target, safe='')}" + ("&ended=1" if ended else ""))


def safe_next(value: str) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value.startswith(PREFIX + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/queue"


def new_form_token() -> str:
    """A random token for the sign-in form's double submit."""
    return secrets.token_urlsafe(24)


def china_time(moment: datetime | None, pattern: str = "%H:%M") -> str:
    """A UTC instant as China time (for templates)."""
    return "" if moment is None else moment.astimezone(CHINA).strftime(pattern)


Handler = Callable[[Any, Console], Awaitable[web.StreamResponse]]


def staff_page(
    permission: Permission, *, json_api: bool = False
) -> Callable[[Handler], Callable[[Any, web.Request], Awaitable[web.StreamResponse]]]:
    """Wrap a console handler: a signed-in member, a matching CSRF token on POST, a role that may act."""

    def wrap(handler: Handler) -> Callable[[Any, web.Request], Awaitable[web.StreamResponse]]:
        async def run(routes: Any, request: web.Request) -> web.StreamResponse:
            services: Services = routes.services
            sessions: async_sessionmaker[AsyncSession] = routes.sessions
            clock: Clock = routes.clock
            token = request.cookies.get(COOKIE, "")
            member = None
            if token:
                async with sessions() as session, session.begin():
                    # A page refreshing itself (?auto=1) or a status poll is not someone using the console.
                    touch = not json_api and request.query.get("auto") != "1"
                    member = await resume_session(session, services.vault, token, clock(), touch=touch)
            if member is None:
                if json_api:
                    return web.json_response({"signed_in": False}, status=401, headers=HEADERS)
                response = to_sign_in(request, ended=bool(token))
                if token:
                    response.del_cookie(COOKIE, path=PREFIX)
                return response
            form: MultiDictProxy[Any] = MultiDictProxy(MultiDict())
            if request.method == "POST":
                form = await request.post()
                given = form.get("csrf", "")
                if not isinstance(given, str) or not csrf_matches(services.vault, token, given):
                    text = services.catalogue("console_csrf_refused")
                    return refusal(request, services, text, status=403, member=member, token=token)
            if not may(member.role, permission):
                role = services.catalogue(f"console_role_{member.role.value}")
                text = services.catalogue("console_role_refused", role=role)
                if json_api:
                    return web.json_response({"error": text}, status=403, headers=HEADERS)
                return refusal(request, services, text, status=403, member=member, token=token)
            return await handler(routes, Console(request, member, token, form))

        run.__doc__ = handler.__doc__
        return run

    return wrap


def templates() -> jinja2.Environment:
    """The console's template environment (autoescaped), with its filters."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.web.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["china_time"] = china_time
    return environment


def now_utc() -> datetime:
    """The console's default clock."""
    return utcnow()
