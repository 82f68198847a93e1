"""The console's routes: sign-in and sign-out, the scan page (取号), and the desk's step pages.

Mounted on the app by :meth:`ConsoleRoutes.setup`; the routes object is built whole at start-up and held
under an app key, as the other browser pages are.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from importlib import resources

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.chat.conversation import Services
from bot.desk.queue import ClinicProblem, ClinicRefused, take_number
from bot.showcode.codes import CodeRejected
from bot.showcode.page import client_address
from bot.staff.auth import SignInProblem, SignInRefused, resume_session, sign_in, sign_out
from bot.staff.roles import Permission
from bot.web.console.base import (
    COOKIE,
    DEMO_STAFF,
    PREFIX,
    SIGN_IN_COOKIE,
    TEMPLATES,
    Clock,
    Console,
    china_time,
    cookie_options,
    new_form_token,
    now_utc,
    page,
    redirect,
    safe_next,
    staff_page,
    templates,
)
from bot.web.console.desk import DeskPages
from bot.web.console.notices import NoticePages
from bot.web.console.slots import SlotPages

# Sign-in attempts from one client address: each costs an argon2 check, and an unknown login locks nothing.
SIGN_IN_ATTEMPTS = 20
SIGN_IN_WINDOW = timedelta(minutes=5)
SIGN_IN_ADDRESSES = 10_000  # addresses remembered at most (the oldest forgotten first)
MAX_SCAN_LENGTH = 512  # a shown code is about 60 characters; a scanner's runaway input is cut short
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


class ConsoleRoutes(DeskPages, SlotPages, NoticePages):
    """The console's handlers, with the services, database sessions and clock they use."""

    def __init__(self, services: Services, sessions: async_sessionmaker[AsyncSession], clock: Clock = now_utc) -> None:
        self.services = services
        self.sessions = sessions
        self.clock = clock
        self._attempts: OrderedDict[str, deque[datetime]] = OrderedDict()

    def _admit_sign_in(self, request: web.Request, now: datetime) -> bool:
        """False when this address has tried to sign in too often lately (then it waits; nothing is checked)."""
        address = client_address(request, self.services.settings.client_address_header)
        attempts = self._attempts.pop(address, deque())
        while attempts and now - attempts[0] > SIGN_IN_WINDOW:
            attempts.popleft()
        admitted = len(attempts) < SIGN_IN_ATTEMPTS
        if admitted:
            attempts.append(now)
        self._attempts[address] = attempts
        while len(self._attempts) > SIGN_IN_ADDRESSES:
            self._attempts.popitem(last=False)
        return admitted

    @staticmethod
    def setup(app: web.Application, key: web.AppKey[ConsoleRoutes]) -> None:
        """Mount the console's routes and templates; served by the routes object the app holds under ``key``."""
        app[TEMPLATES] = templates()

        def bind(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def handler(request: web.Request) -> web.StreamResponse:
                method = getattr(request.app[key], name)
                response: web.StreamResponse = await method(request)
                return response

            return handler

        routes = [
            ("GET", "", "home"),
            ("GET", "/", "home"),
            ("GET", "/sign-in", "sign_in_page"),
            ("POST", "/sign-in", "sign_in"),
            ("POST", "/sign-out", "sign_out"),
            ("GET", "/scan", "scan_page"),
            ("POST", "/scan", "scan"),
            ("GET", "/static/{name}", "static"),
            ("GET", "/queue", "queue"),
            ("POST", "/queue/call", "call"),
            ("GET", "/visits/{visit_id}", "visit"),
            ("GET", "/visits/{visit_id}/status.json", "status"),
            ("POST", "/visits/{visit_id}/register", "register"),
            ("POST", "/visits/{visit_id}/file", "file"),
            ("POST", "/visits/{visit_id}/resolve", "resolve"),
            ("POST", "/visits/{visit_id}/plan", "plan"),
            ("POST", "/visits/{visit_id}/confirm", "confirm"),
            ("POST", "/visits/{visit_id}/vaccinate", "vaccinate"),
            ("POST", "/visits/{visit_id}/finish", "finish"),
            ("GET", "/observing", "observing"),
            ("GET", "/summary", "summary"),
            ("GET", "/slots", "slots_page"),
            ("POST", "/slots", "slot_add"),
            ("POST", "/slots/close", "slot_close"),
            ("GET", "/notices", "notices_page"),
            ("POST", "/notices/preview", "notice_preview"),
            ("POST", "/notices", "notice_send"),
            ("GET", "/notices/{notice_id}", "notice_report"),
        ]
        for method, path, name in routes:
            app.router.add_route(method, PREFIX + path, bind(name))

    # --- signing in and out ---------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        """``/clinic/``: the queue (which sends a stranger to sign in)."""
        raise web.HTTPSeeOther(f"{PREFIX}/queue")

    def _sign_in_form(self, request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
        form_token = new_form_token()
        ended = not error and request.query.get("ended") == "1"
        values: dict[str, object] = {
            "form_token": form_token,
            "error": error,
            "notice": self.services.catalogue("console_session_ended") if ended else "",
            "next": safe_next(request.query.get("next", "")),
        }
        previous = request.query.get("clinic", "")
        values["clinic"] = previous[:32]
        demo = request.app.get(DEMO_STAFF)
        values["demo_staff"] = demo.staff if demo is not None else ()
        values["demo_clinic"] = demo.clinic if demo is not None else ""
        values["demo_password"] = demo.password if demo is not None else ""
        if demo is not None and not values["clinic"]:
            values["clinic"] = demo.clinic
        response = page(request, self.services, "sign_in.html", values, status=status)
        response.set_cookie(SIGN_IN_COOKIE, form_token, max_age=1800, **cookie_options(self.services))
        return response

    async def sign_in_page(self, request: web.Request) -> web.StreamResponse:
        """The sign-in form (clinic code, login, password), with its CSRF token in a cookie and the form.

        Someone already signed in goes straight on (the sandbox's link, a bookmark).
        """
        token = request.cookies.get(COOKIE, "")
        if token:
            async with self.sessions() as session, session.begin():
                member = await resume_session(session, self.services.vault, token, self.clock(), touch=False)
            if member is not None:
                return redirect(safe_next(request.query.get("next", "")))
        return self._sign_in_form(request)

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        """Check the sign-in form; a good one sets the session cookie and goes on."""
        catalogue = self.services.catalogue
        form = await request.post()
        expected = request.cookies.get(SIGN_IN_COOKIE, "")
        given = form.get("csrf", "")
        if not expected or not isinstance(given, str) or not hmac.compare_digest(expected.encode(), given.encode()):
            return self._sign_in_form(request, error=catalogue("console_csrf_refused"), status=403)
        if not self._admit_sign_in(request, self.clock()):
            return self._sign_in_form(request, error=catalogue("console_sign_in_too_often"), status=429)
        fields = {name: form.get(name, "") for name in ("clinic", "login", "password")}
        clinic, login, password = (value if isinstance(value, str) else "" for value in fields.values())
        refused: SignInRefused | None = None
        token = ""
        async with self.sessions() as session, session.begin():
            try:
                _member, token = await sign_in(
                    session,
                    self.services.vault,
                    clinic_code=clinic.strip(),
                    login=login.strip(),
                    password=password,
                    now=self.clock(),
                )
            except SignInRefused as exc:
                refused = exc  # committed all the same: the failure counts and is audited
        if refused is not None:
            if refused.problem is SignInProblem.LOCKED and refused.locked_until is not None:
                error = catalogue("console_sign_in_locked", until=china_time(refused.locked_until, "%H:%M"))
            else:
                error = catalogue("console_sign_in_failed")
            return self._sign_in_form(request, error=error, status=401)
        target = form.get("next", "")
        response = redirect(safe_next(target if isinstance(target, str) else ""))
        response.set_cookie(COOKIE, token, **cookie_options(self.services))
        response.del_cookie(SIGN_IN_COOKIE, path=PREFIX)
        return response

    @staff_page(Permission.VIEW)
    async def sign_out(self, console: Console) -> web.StreamResponse:
        """End the session (the token stops working everywhere) and go back to the sign-in page."""
        async with self.sessions() as session, session.begin():
            await sign_out(session, self.services.vault, console.token, self.clock())
        response = redirect(f"{PREFIX}/sign-in?clinic={console.member.clinic_code}")
        response.del_cookie(COOKIE, path=PREFIX)
        return response

    async def static(self, request: web.Request) -> web.StreamResponse:
        """The console's stylesheet and script (no inline script or style runs on its pages)."""
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("bot.web.console").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=STATIC[name], headers={"Cache-Control": "max-age=300"})

    # --- 取号 -----------------------------------------------------------------------------------------

    @staff_page(Permission.SCAN)
    async def scan_page(self, console: Console) -> web.StreamResponse:
        """The scan page: a focused field for a USB scanner or a paste, and the camera where the browser reads QR."""
        return page(
            console.request,
            self.services,
            "scan.html",
            {"ticket": None, "error": ""},
            member=console.member,
            token=console.token,
        )

    @staff_page(Permission.SCAN)
    async def scan(self, console: Console) -> web.StreamResponse:
        """Take a number for the scanned code at the member's own clinic (取号)."""
        catalogue = self.services.catalogue
        payload = console.field("code")[:MAX_SCAN_LENGTH]
        ticket, error, status = None, "", 200
        if not payload:
            error, status = catalogue("cli_scan_empty"), 400
        else:
            async with self.sessions() as session, session.begin():
                try:
                    ticket = await take_number(
                        session,
                        self.services.vault,
                        catalogue,
                        clinic_code=console.member.clinic_code,
                        pilot_regions=self.services.settings.pilot_regions,
                        payload=payload,
                        staff=f"staff:{console.member.id}",
                        now=self.clock(),
                    )
                except ClinicRefused as exc:
                    key = "cli_clinic_unknown" if exc.problem is ClinicProblem.UNKNOWN else "desk_clinic_not_pilot"
                    error, status = catalogue(key, clinic=console.member.clinic_code), 409
                except CodeRejected as exc:
                    error, status = catalogue(f"desk_code_{exc.problem.value}"), 409
        values = {"ticket": ticket, "error": error}
        return page(
            console.request,
            self.services,
            "scan.html",
            values,
            status=status,
            member=console.member,
            token=console.token,
        )
