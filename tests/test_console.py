"""The clinic console over HTTP: sign-in (CSRF, lock-out, cookies), sessions (sign-out, idle expiry), roles,
the scan page (取号), and cross-clinic isolation.

The session cookie is Secure outside development, so this plain-http client carries cookies itself, as a
browser on https would (and the test checks every flag the server sets).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from bot.core.audit import entries_matching
from bot.staff.auth import IDLE_LIMIT, MAX_FAILURES, add_staff
from bot.web.appkeys import SESSIONS
from bot.web.console.base import COOKIE, SIGN_IN_COOKIE
from models import StaffRole, StaffSession, Visit
from tests.helpers import Client
from tests.world import NANJING, NANTONG, clinic

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class Browser:
    """A browser's side of the console: its cookies, and the CSRF token of the last page it read."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}
        self.csrf = ""
        self.set_cookie_headers: list[str] = []

    def _keep(self, response: Any) -> None:
        self.set_cookie_headers = response.headers.getall("Set-Cookie", [])
        for name, morsel in response.cookies.items():
            if morsel.value and morsel["max-age"] != "0":
                self.cookies[name] = morsel.value
            else:
                self.cookies.pop(name, None)

    async def get(self, path: str) -> tuple[int, str, str]:
        """GET without following redirects: (status, body, Location)."""
        async with self.client.get(path, cookies=self.cookies, allow_redirects=False) as response:
            body = await response.text()
            self._keep(response)
            found = CSRF.search(body)
            if found:
                self.csrf = found.group(1)
            return response.status, body, response.headers.get("Location", "")

    async def post(self, path: str, data: dict[str, str], *, csrf: str | None = None) -> tuple[int, str, str]:
        """POST a form with the page's CSRF token (or the one given)."""
        form = {"csrf": self.csrf if csrf is None else csrf, **data}
        async with self.client.post(path, data=form, cookies=self.cookies, allow_redirects=False) as response:
            body = await response.text()
            self._keep(response)
            found = CSRF.search(body)
            if found:
                self.csrf = found.group(1)
            return response.status, body, response.headers.get("Location", "")

    async def sign_in(
        self, login: str, password: str = PASSWORD, clinic_code: str = NANTONG[0]
    ) -> tuple[int, str, str]:
        """Open the sign-in page and submit it."""
        await self.get("/clinic/sign-in")
        return await self.post("/clinic/sign-in", {"clinic": clinic_code, "login": login, "password": password})


async def _staff(client: Client, login: str, role: StaffRole, at: tuple[str, str, str] = NANTONG) -> int:
    await clinic(client, *at)
    async with client.app[SESSIONS]() as session, session.begin():
        staff = await add_staff(
            session, clinic_code=at[0], login=login, display_name=login, role=role, password=PASSWORD
        )
        return staff.id


async def test_a_stranger_is_sent_to_sign_in(app_client: Client) -> None:
    browser = Browser(app_client)
    status, _body, location = await browser.get("/clinic/scan")
    assert status == 303 and location == "/clinic/sign-in?next=%2Fclinic%2Fscan"
    status, body, _ = await browser.get(location)
    assert status == 200 and "门诊工作台登录" in body
    assert "demo-registrar" not in body  # the demo accounts panel is development's only


async def test_sign_in_sets_a_strict_http_only_secure_cookie_and_goes_on(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.get("/clinic/sign-in?next=%2Fclinic%2Fscan")
    assert SIGN_IN_COOKIE in browser.cookies
    status, _body, location = await browser.post(
        "/clinic/sign-in", {"clinic": NANTONG[0], "login": "nurse-li", "password": PASSWORD, "next": "/clinic/scan"}
    )
    assert status == 303 and location == "/clinic/scan"
    session_cookie = next(header for header in browser.set_cookie_headers if header.startswith(f"{COOKIE}="))
    flags = {part.strip().lower() for part in session_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/clinic"} <= flags
    status, body, _ = await browser.get("/clinic/scan")
    assert status == 200 and "扫码取号" in body and "nurse-li（登记员）" in body
    assert "no-store" in (await app_client.get("/clinic/scan", cookies=browser.cookies)).headers["Cache-Control"]


async def test_sign_in_goes_only_to_console_pages(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.get("/clinic/sign-in")
    for target in ("https://evil.example/", "//evil.example/clinic/", "/sandbox"):
        browser.cookies.pop(COOKIE, None)
        await browser.get("/clinic/sign-in")
        status, _body, location = await browser.post(
            "/clinic/sign-in", {"clinic": NANTONG[0], "login": "nurse-li", "password": PASSWORD, "next": target}
        )
        assert status == 303 and location == "/clinic/queue", target


async def test_sign_in_without_its_csrf_token_is_refused(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.get("/clinic/sign-in")
    good = {"clinic": NANTONG[0], "login": "nurse-li", "password": PASSWORD}
    status, body, _ = await browser.post("/clinic/sign-in", good, csrf="forged")
    assert status == 403 and "页面已过期" in body and COOKIE not in browser.cookies
    # A cross-site form carries no SameSite=Strict cookie: without the sign-in cookie, the token proves nothing.
    token = browser.csrf
    browser.cookies.clear()
    status, _body, _ = await browser.post("/clinic/sign-in", good, csrf=token)
    assert status == 403 and COOKIE not in browser.cookies


async def test_wrong_passwords_lock_the_console_account(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    for attempt in range(MAX_FAILURES - 1):
        status, body, _ = await browser.sign_in("nurse-li", f"guess {attempt}")
        assert status == 401 and "不正确" in body
    status, body, _ = await browser.sign_in("nurse-li", "guess again")
    assert status == 401 and "已锁定" in body
    status, body, _ = await browser.sign_in("nurse-li", PASSWORD)  # the right one, too late
    assert status == 401 and "已锁定" in body and COOKIE not in browser.cookies
    # An unknown login reads the same as a wrong password: names cannot be probed.
    status, body, _ = await browser.sign_in("nobody", PASSWORD)
    assert status == 401 and "不正确" in body


async def test_a_post_without_the_sessions_csrf_token_is_refused(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    status, _body, _ = await browser.get("/clinic/scan")
    assert status == 200
    for forged in ("", "0" * 64):
        status, body, _ = await browser.post("/clinic/scan", {"code": "VX1:A:1:B"}, csrf=forged)
        assert status == 403 and "页面已过期" in body
    # Another signed-in member's token is not this session's either.
    await _staff(app_client, "nurse-wang", StaffRole.REGISTRAR)
    other = Browser(app_client)
    await other.sign_in("nurse-wang")
    await other.get("/clinic/scan")
    status, _body, _ = await browser.post("/clinic/scan", {"code": "VX1:A:1:B"}, csrf=other.csrf)
    assert status == 403
    async with app_client.app[SESSIONS]() as session:
        refused = await entries_matching(session, action="desk_refused")
    assert refused == []  # nothing was scanned


async def test_a_stolen_session_cookie_is_worthless_after_sign_out(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    stolen = dict(browser.cookies)
    await browser.get("/clinic/scan")
    status, _body, location = await browser.post("/clinic/sign-out", {})
    assert status == 303 and location.startswith("/clinic/sign-in") and COOKIE not in browser.cookies
    thief = Browser(app_client)
    thief.cookies = stolen
    status, _body, location = await thief.get("/clinic/scan")
    assert status == 303 and location.startswith("/clinic/sign-in")


async def test_an_idle_console_signs_out(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    assert (await browser.get("/clinic/scan"))[0] == 200
    # The console left alone past the idle limit (its last use moved back, rather than waiting).
    async with app_client.app[SESSIONS]() as session, session.begin():
        row = (await session.scalars(select(StaffSession))).one()
        await session.execute(
            update(StaffSession)
            .where(StaffSession.id == row.id)
            .values(last_seen_at=row.last_seen_at - IDLE_LIMIT - timedelta(seconds=1))
        )
    status, _body, location = await browser.get("/clinic/scan")
    assert status == 303 and location.startswith("/clinic/sign-in")
    async with app_client.app[SESSIONS]() as session:
        ended = (await session.scalars(select(StaffSession))).one()
        expired = await entries_matching(session, action="staff_session_expired")
    assert ended.ended_at is not None and [entry.reason for entry in expired] == ["idle"]


async def test_an_observer_cannot_scan(app_client: Client) -> None:
    await _staff(app_client, "nurse-chen", StaffRole.OBSERVER)
    browser = Browser(app_client)
    await browser.sign_in("nurse-chen")
    status, body, _ = await browser.get("/clinic/scan")
    assert status == 403 and "留观护士" in body


async def test_scanning_a_bad_code_is_refused_in_chinese_and_audited_under_staff_and_clinic(
    app_client: Client,
) -> None:
    staff_id = await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    browser = Browser(app_client)
    await browser.sign_in("nurse-li")
    await browser.get("/clinic/scan")
    status, body, _ = await browser.post("/clinic/scan", {"code": "not a code"})
    assert status == 409 and "不是电子预防接种证的接种码" in body
    async with app_client.app[SESSIONS]() as session:
        refused = await entries_matching(session, action="desk_refused")
        visits = (await session.scalars(select(Visit))).all()
    assert [(entry.actor_ref, entry.reason) for entry in refused] == [
        (f"clinic:{NANTONG[0]}:staff:{staff_id}", "malformed")
    ]
    assert visits == []


async def test_nanjing_staff_cannot_take_numbers_outside_the_pilot(app_client: Client) -> None:
    await _staff(app_client, "nurse-zhao", StaffRole.REGISTRAR, at=NANJING)
    browser = Browser(app_client)
    await browser.sign_in("nurse-zhao", clinic_code=NANJING[0])
    await browser.get("/clinic/scan")
    status, body, _ = await browser.post("/clinic/scan", {"code": "VX1:A:1:B"})
    assert status == 409 and body.count("试点") >= 1
