"""The clinic console over HTTP: sign-in (CSRF, lock-out, cookies), sessions (sign-out, idle expiry), roles,
the scan page (取号), and cross-clinic isolation.

The session cookie is Secure outside development, so this plain-http client carries cookies itself, as a
browser on https would (and the test checks every flag the server sets).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from bot.core.audit import entries_matching
from bot.core.chinatime import china_date
from bot.core.config import Settings
from bot.desk.steps import confirm_in_chat, pending_confirmations
from bot.dev.demo import CHILD, PARENT, demo_id_number
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.showcode.codes import issue_code
from bot.staff.auth import IDLE_LIMIT, MAX_FAILURES, add_staff
from bot.web.appkeys import CONSOLE, SERVICES, SESSIONS
from bot.web.console.base import COOKIE, SIGN_IN_COOKIE
from bot.web.console.routes import SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW
from models import (
    Certificate,
    FilingRequest,
    FilingStatus,
    Guardian,
    StaffRole,
    StaffSession,
    Vaccinee,
    Visit,
    VisitStatus,
    utcnow,
)
from tests.channels import WeChat
from tests.desk_kit import DeskWorld, desk_world, queue_visit
from tests.helpers import Client
from tests.test_filing import BABY_CERT, BABY_NAME, _add_child
from tests.world import NANJING, NANTONG, clinic, registry_file, verified

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
    assert (await browser.get("/clinic/sign-in"))[2] == "/clinic/queue"  # signed in: straight on
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
    assert status == 303 and location.startswith("/clinic/sign-in") and "ended=1" in location
    status, body, _ = await browser.get(location)
    assert status == 200 and "自动退出" in body
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


# --- the desk through the console ---------------------------------------------------------------------


class Clock:
    """The console's clock, moved by the test (no waiting on the wall clock)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def _clock(client: Client) -> Clock:
    clock = Clock()
    client.app[CONSOLE].clock = clock
    return clock


async def _code(client: Client, world: DeskWorld, shown_by: int) -> str:
    """A code ``shown_by`` shows for the child (what a scanner reads from the chat's image)."""
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        issued = issue_code(
            session,
            services.vault,
            certificate_id=world.certificate_id,
            identity_id=shown_by,
            now=utcnow(),
            ttl=timedelta(minutes=5),
        )
    return issued.payload


async def _visit(client: Client, visit_id: int) -> Visit:
    async with client.app[SESSIONS]() as session:
        visit = await session.get(Visit, visit_id)
    assert visit is not None
    return visit


def _plan_form(expires: str, dose: str = "HepB:2") -> dict[str, str]:
    return {"dose": dose, "lot_number": "202611A03", "manufacturer": "华北制药", "expires_on": expires}


async def test_the_whole_desk_flow_through_the_console(app_client: Client, settings: Settings) -> None:
    world = await desk_world(app_client, "wechat", settings.wechat_appid)
    clock = _clock(app_client)
    registrar_id = await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    vaccinator_id = await _staff(app_client, "nurse-zhou", StaffRole.VACCINATOR)
    observer_id = await _staff(app_client, "nurse-chen", StaffRole.OBSERVER)
    desk = Browser(app_client)
    await desk.sign_in("nurse-li")

    # 取号: the grandmother shows the code; the registrar scans it.
    await desk.get("/clinic/scan")
    status, body, _ = await desk.post("/clinic/scan", {"code": await _code(app_client, world, world.grandma_id)})
    assert status == 200 and "取号成功：1号" in body and "林*满" in body and CHILD.name not in body
    visit_id = int(re.search(r"/clinic/visits/(\d+)", body).group(1))  # type: ignore[union-attr]

    # Today's queue: the masked name, the step and the wait; 叫号 opens the visit.
    clock.now += timedelta(minutes=7)
    status, body, _ = await desk.get("/clinic/queue")
    assert status == 200 and "林*满" in body and "待登记" in body and "7分钟" in body and CHILD.name not in body
    status, _body, location = await desk.post("/clinic/queue/call", {})
    assert status == 303 and location == f"/clinic/visits/{visit_id}"

    # 三查七对: the full name, sex, age in years and months, and the dose due with its number.
    status, body, _ = await desk.get(location)
    assert status == 200 and CHILD.name in body and "乙肝疫苗 第2剂" in body and "岁" in body
    assert 'id="register-form"' in body and 'id="vaccinate-form"' not in body

    # 登记, then 一验证 asked: the family is sent the plan.
    answers = {
        "fever": "no",
        "allergies": "no",
        "recent_vaccines": "no",
        "contraindications": "no",
        "desk": "2号接种台",
    }
    status, _body, _ = await desk.post(f"/clinic/visits/{visit_id}/register", answers)
    assert status == 303 and (await _visit(app_client, visit_id)).status == VisitStatus.REGISTERED
    await desk.get(f"/clinic/visits/{visit_id}")
    expires = (china_date(clock.now) + timedelta(days=200)).isoformat()
    status, _body, _ = await desk.post(f"/clinic/visits/{visit_id}/plan", _plan_form(expires))
    assert status == 303
    status, body, _ = await desk.get(f"/clinic/visits/{visit_id}")
    assert 'id="live-status"' in body and "批号 202611A03" in body
    live = await app_client.get(f"/clinic/visits/{visit_id}/status.json", cookies=desk.cookies)
    assert live.status == 200 and (await live.json())["step"] == "registered"

    # The registrar may not record the dose.
    status, body, _ = await desk.post(f"/clinic/visits/{visit_id}/vaccinate", {"site": "left_deltoid"})
    assert status == 403 and "登记员" in body

    # The grandmother answers 「确认」 in the chat; the page's live box sees it.
    async with app_client.app[SESSIONS]() as session, session.begin():
        pending = await pending_confirmations(
            session, app_client.app[SERVICES].vault, world.grandma_id, china_date(clock.now)
        )
        assert len(pending) == 1
        assert await confirm_in_chat(session, world.grandma_id, pending[0], platform="wechat")
    live = await app_client.get(f"/clinic/visits/{visit_id}/status.json", cookies=desk.cookies)
    seen = await live.json()
    assert seen["step"] == "verified" and "确认" in seen["text"]

    # 接种 at the vaccinator's desk: observation starts.
    nurse = Browser(app_client)
    await nurse.sign_in("nurse-zhou")
    status, body, _ = await nurse.get(f"/clinic/visits/{visit_id}")
    assert 'id="vaccinate-form"' in body and "家长在聊天中确认" in body
    given = {"site": "left_deltoid", "route": "intramuscular", "vaccinator": "周护士"}
    status, _body, _ = await nurse.post(f"/clinic/visits/{visit_id}/vaccinate", given)
    assert status == 303 and (await _visit(app_client, visit_id)).status == VisitStatus.OBSERVING
    status, _body, _ = await nurse.post(f"/clinic/visits/{visit_id}/vaccinate", given)  # a double click
    assert status == 303

    # 留观: a countdown; finishing before 30 minutes needs a reason; after them, 留观结束.
    observer = Browser(app_client)
    await observer.sign_in("nurse-chen")
    status, body, _ = await observer.get("/clinic/observing")
    assert status == 200 and "林*满" in body and "data-ends=" in body
    status, body, _ = await observer.post(f"/clinic/visits/{visit_id}/finish", {"back": "observing"})
    assert status == 409 and "留观还没满30分钟" in body
    for _ in range(2):  # the observer keeps the list open (a console idle for 30 minutes would sign out)
        clock.now += timedelta(minutes=16)
        assert (await observer.get("/clinic/observing"))[0] == 200
    status, _body, location = await observer.post(f"/clinic/visits/{visit_id}/finish", {"back": "observing"})
    assert status == 303 and location == "/clinic/observing"
    assert (await _visit(app_client, visit_id)).status == VisitStatus.DONE

    # The day's summary, and the audit log naming each member and the clinic.
    status, body, _ = await observer.get("/clinic/summary")
    assert status == 200 and "今日接种剂次：1" in body and "乙肝疫苗" in body
    async with app_client.app[SESSIONS]() as session:
        rows = await entries_matching(session, since=clock.now - timedelta(hours=2))
    by_action = {(entry.action, entry.actor_ref) for entry in rows}
    at = f"@clinic:{world.clinic_id}"
    for action, staff in (
        ("desk_call", registrar_id),
        ("desk_detail_viewed", registrar_id),
        ("desk_register", registrar_id),
        ("desk_confirmation_requested", registrar_id),
        ("desk_vaccinate", vaccinator_id),
        ("desk_observation_done", observer_id),
    ):
        assert (action, f"staff:{staff}{at}") in by_action, action
    assert ("desk_queue", f"clinic:{NANTONG[0]}:staff:{registrar_id}") in by_action


async def test_an_expired_lot_is_refused_at_the_console(app_client: Client, settings: Settings) -> None:
    world = await desk_world(app_client, "wechat", settings.wechat_appid)
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    visit_id = await queue_visit(app_client, world, world.parent_id)
    desk = Browser(app_client)
    await desk.sign_in("nurse-li")
    await desk.get(f"/clinic/visits/{visit_id}")
    no = {"fever": "no", "allergies": "no", "recent_vaccines": "no", "contraindications": "no"}
    await desk.post(f"/clinic/visits/{visit_id}/register", no)
    await desk.get(f"/clinic/visits/{visit_id}")
    yesterday = (china_date(utcnow()) - timedelta(days=1)).isoformat()
    status, body, _ = await desk.post(f"/clinic/visits/{visit_id}/plan", _plan_form(yesterday))
    assert status == 409 and "过期" in body
    visit = await _visit(app_client, visit_id)
    assert visit.status == VisitStatus.REGISTERED and visit.confirmation_requested_at is None
    # Out of order: an in-person confirmation before any request is refused with its reason.
    status, body, _ = await desk.post(f"/clinic/visits/{visit_id}/confirm", {"reason": "手机没电"})
    assert status == 409 and "还没有发起一验证" in body


async def test_staff_see_and_act_on_their_own_clinic_only(app_client: Client, settings: Settings) -> None:
    world = await desk_world(app_client, "wechat", settings.wechat_appid)
    visit_id = await queue_visit(app_client, world, world.parent_id)
    other = ("T-NT-02", "南通市另一社区卫生服务中心预防接种门诊", "320602")  # in the pilot, another clinic
    await _staff(app_client, "nurse-li", StaffRole.ADMIN)
    await _staff(app_client, "nurse-li", StaffRole.ADMIN, at=other)  # the same login at the other clinic
    stranger = Browser(app_client)
    await stranger.sign_in("nurse-li", clinic_code=other[0])
    status, body, _ = await stranger.get("/clinic/queue")
    assert status == 200 and "林*满" not in body and "今天还没有人取号" in body
    status, body, _ = await stranger.get(f"/clinic/visits/{visit_id}")
    assert status == 404 and CHILD.name not in body and "林*满" not in body
    assert (await stranger.get(f"/clinic/visits/{visit_id + 1000}"))[0] == 404  # the same as no visit at all
    no = {"fever": "no", "allergies": "no", "recent_vaccines": "no", "contraindications": "no"}
    status, body, _ = await stranger.post(f"/clinic/visits/{visit_id}/register", no)
    assert status == 404 and CHILD.name not in body
    live = await app_client.get(f"/clinic/visits/{visit_id}/status.json", cookies=stranger.cookies)
    assert live.status == 404
    status, _body, location = await stranger.post("/clinic/queue/call", {})
    assert location == "/clinic/queue?none=1"  # another clinic's queue is not theirs to call
    assert (await _visit(app_client, visit_id)).status == VisitStatus.QUEUED
    assert (await _visit(app_client, visit_id)).called_at is None
    # Their own clinic's nurse sees it.
    own = Browser(app_client)
    await own.sign_in("nurse-li")
    status, body, _ = await own.get(f"/clinic/visits/{visit_id}")
    assert status == 200 and CHILD.name in body


def test_every_console_text_is_in_the_catalogue() -> None:
    """Each page's words come from the one catalogue: every key a template names, and every key built from a value."""
    from importlib import resources

    from bot.core.catalogue import MESSAGES
    from bot.desk.filing import Resolution
    from bot.desk.steps import Route, Site

    folder = resources.files("bot.web.console").joinpath("templates")
    named = set()
    for template in folder.iterdir():
        named |= set(re.findall(r"""t\(["']([a-z_]+)["']""", template.read_text(encoding="utf-8")))
    named = {key for key in named if not key.endswith("_")}  # a prefix joined with a value: checked below
    assert named and named <= set(MESSAGES), sorted(named - set(MESSAGES))
    built = [f"console_step_{status.value}" for status in VisitStatus]
    built += [f"console_role_{role.value}" for role in StaffRole]
    built += [f"console_site_{site.value}" for site in Site] + [f"console_route_{route.value}" for route in Route]
    built += ["desk_role_holder", "desk_role_grantee", "desk_role_filing"]
    built += ["console_filing_hint_self", "console_filing_hint_child"]
    built += [f"console_resolution_{value.value}" for value in Resolution]
    built += [f"console_sex_{sex}" for sex in "MF"] + [f"console_due_{status}" for status in ("overdue", "due")]
    built += [
        f"console_question_{question}" for question in ("fever", "allergies", "recent_vaccines", "contraindications")
    ]
    assert [key for key in built if key not in MESSAGES] == []


async def test_roles_are_checked_on_every_step(app_client: Client, settings: Settings) -> None:
    world = await desk_world(app_client, "wechat", settings.wechat_appid)
    visit_id = await queue_visit(app_client, world, world.parent_id)
    no = {"fever": "no", "allergies": "no", "recent_vaccines": "no", "contraindications": "no"}
    await _staff(app_client, "nurse-chen", StaffRole.OBSERVER)
    await _staff(app_client, "nurse-zhou", StaffRole.VACCINATOR)
    for login, path, form in (
        ("nurse-chen", "register", no),
        ("nurse-zhou", "register", no),
        ("nurse-chen", "confirm", {"reason": "当面核对"}),
    ):
        browser = Browser(app_client)
        await browser.sign_in(login)
        status, body, _ = await browser.get(f"/clinic/visits/{visit_id}")
        assert status == 200 and 'id="register-form"' not in body  # the form is not offered…
        status, body, _ = await browser.post(f"/clinic/visits/{visit_id}/{path}", form)
        assert status == 403 and "不能进行这一步" in body  # …and the step is refused when posted anyway
    assert (await _visit(app_client, visit_id)).status == VisitStatus.QUEUED


# --- auto-filing (自动建档) at the console ------------------------------------------------------------


async def test_the_registrar_files_a_child_who_has_no_file(
    app_client: Client, settings: Settings, wechat: WeChatClientSim, fake: FakeWeChatAPI
) -> None:
    channel = WeChat(app_client, wechat, fake)
    user = "o-console-filing"
    await verified(app_client, "wechat", user, PARENT.name, PARENT.id_number, settings.wechat_appid)
    await clinic(app_client, *NANTONG)
    code = await _add_child(channel, user, BABY_CERT)
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    await _staff(app_client, "nurse-chen", StaffRole.OBSERVER)
    desk = Browser(app_client)
    await desk.sign_in("nurse-li")
    await desk.get("/clinic/scan")
    status, body, _ = await desk.post("/clinic/scan", {"code": code})
    assert status == 200 and "取号成功：1号" in body and "林*安" in body
    visit_id = int(re.search(r"/clinic/visits/(\d+)", body).group(1))  # type: ignore[union-attr]
    assert "待建档" in (await desk.get("/clinic/queue"))[1]
    # The visit page is the filing page: the child in full, the parent who added it, no file yet.
    status, body, _ = await desk.get(f"/clinic/visits/{visit_id}")
    assert status == 200 and "自动建档" in body and BABY_NAME in body and "林*雨" in body and "新建档案" in body
    # An observer sees it but may not file.
    observer = Browser(app_client)
    await observer.sign_in("nurse-chen")
    status, body, _ = await observer.get(f"/clinic/visits/{visit_id}")
    assert status == 200 and 'id="filing-form"' not in body
    assert (await observer.post(f"/clinic/visits/{visit_id}/file", {}))[0] == 403
    # The registrar files it: the visit goes on to 登记 like any other.
    status, _body, location = await desk.post(f"/clinic/visits/{visit_id}/file", {"note": "出生医学证明已核对"})
    assert status == 303 and location == f"/clinic/visits/{visit_id}"
    status, body, _ = await desk.get(location)
    assert status == 200 and 'id="register-form"' in body and BABY_NAME in body
    async with app_client.app[SESSIONS]() as session:
        request = (await session.scalars(select(FilingRequest))).one()
        filed = await entries_matching(session, action="desk_filed")
    assert request.status == FilingStatus.FILED
    assert [entry.actor_ref.startswith("staff:") for entry in filed] == [True]


async def test_an_existing_file_is_never_overwritten_at_the_console(
    app_client: Client, settings: Settings, wechat: WeChatClientSim, fake: FakeWeChatAPI
) -> None:
    channel = WeChat(app_client, wechat, fake)
    user = "o-console-grandpa"
    vaccinee = await registry_file(
        app_client,
        ref="F-CHILD",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
    )
    grandpa = demo_id_number("320602", date(1960, 1, 9), 331)
    await verified(app_client, "wechat", user, "林国栋", grandpa, settings.wechat_appid)
    code = await _add_child(channel, user, CHILD.id_number, name="林晓满")
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    desk = Browser(app_client)
    await desk.sign_in("nurse-li")
    await desk.get("/clinic/scan")
    _status, body, _ = await desk.post("/clinic/scan", {"code": code})
    visit_id = int(re.search(r"/clinic/visits/(\d+)", body).group(1))  # type: ignore[union-attr]
    status, body, _ = await desk.get(f"/clinic/visits/{visit_id}")
    assert status == 200 and "不一致" in body and CHILD.name in body and "林晓满" in body
    assert 'name="resolve_name"' in body and 'name="resolve_guardian"' in body
    # A difference left undecided: refused, nothing changes.
    status, body, _ = await desk.post(f"/clinic/visits/{visit_id}/file", {"resolve_name": "keep"})
    assert status == 409 and "监护人" in body
    status, _body, _ = await desk.post(
        f"/clinic/visits/{visit_id}/file", {"resolve_name": "keep", "resolve_guardian": "note", "note": "以户口本为准"}
    )
    assert status == 303
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session:
        file = await session.get(Vaccinee, vaccinee)
        assert file is not None and vault.open("name", file.name_enc) == CHILD.name
        resolved = await entries_matching(session, action="filing_mismatch_resolved")
    assert sorted((entry.detail["field"], entry.reason) for entry in resolved) == [
        ("guardian", "note"),
        ("name", "keep"),
    ]
    assert (await _visit(app_client, visit_id)).vaccinee_id == vaccinee


async def test_a_scanned_certificate_whose_file_differs_is_resolved_at_registration(
    app_client: Client, settings: Settings
) -> None:
    # The child's file does not (yet) name the holder as a guardian.
    vaccinee = await registry_file(
        app_client, ref="C-CHILD", name=CHILD.name, id_number=CHILD.id_number, birth=CHILD.birth, sex=CHILD.sex
    )
    parent = await verified(
        app_client, "wechat", "o-console-compare", PARENT.name, PARENT.id_number, settings.wechat_appid
    )
    async with app_client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=vaccinee, holder_identity_id=parent, kind="child", claimed_via="wechat")
        session.add(certificate)
        await session.flush()
        world = DeskWorld(0, 0, vaccinee, certificate.id, parent, parent, "", "")
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    desk = Browser(app_client)
    await desk.sign_in("nurse-li")
    await desk.get("/clinic/scan")
    _status, body, _ = await desk.post("/clinic/scan", {"code": await _code(app_client, world, parent)})
    visit_id = int(re.search(r"/clinic/visits/(\d+)", body).group(1))  # type: ignore[union-attr]
    status, body, _ = await desk.get(f"/clinic/visits/{visit_id}")
    assert status == 200 and 'id="compare-form"' in body and 'name="resolve_guardian"' in body
    status, _body, _ = await desk.post(f"/clinic/visits/{visit_id}/resolve", {"resolve_guardian": "take_verified"})
    assert status == 303
    status, body, _ = await desk.get(f"/clinic/visits/{visit_id}")
    assert 'id="compare-form"' not in body  # nothing left to decide
    vault = app_client.app[SERVICES].vault
    async with app_client.app[SESSIONS]() as session:
        guardians = (
            await session.scalars(select(Guardian.id_number_hash).where(Guardian.vaccinee_id == vaccinee))
        ).all()
        resolved = await entries_matching(session, action="desk_mismatch_resolved")
    assert list(guardians) == [vault.digest("id_number", PARENT.id_number)]
    assert [(entry.detail["field"], entry.reason) for entry in resolved] == [("guardian", "take_verified")]


async def test_pages_refreshing_themselves_do_not_keep_an_idle_console_signed_in(app_client: Client) -> None:
    await _staff(app_client, "nurse-chen", StaffRole.OBSERVER)
    clock = _clock(app_client)
    screen = Browser(app_client)
    await screen.sign_in("nurse-chen")
    assert (await screen.get("/clinic/observing"))[0] == 200
    # The observation list reloads itself every half minute for 29 minutes: nobody touched the console…
    for _ in range(58):
        clock.now += timedelta(seconds=30)
        assert (await screen.get("/clinic/observing?auto=1"))[0] == 200
    # …so two minutes later it has been idle past the limit, and signs out.
    clock.now += timedelta(minutes=2)
    status, _body, location = await screen.get("/clinic/observing?auto=1")
    assert status == 303 and location.startswith("/clinic/sign-in")


async def test_one_address_cannot_hammer_the_sign_in(app_client: Client) -> None:
    await _staff(app_client, "nurse-li", StaffRole.REGISTRAR)
    clock = _clock(app_client)
    browser = Browser(app_client)
    for attempt in range(SIGN_IN_ATTEMPTS):
        status, _body, _ = await browser.sign_in(f"nobody-{attempt}")
        assert status == 401
    status, body, _ = await browser.sign_in("nurse-li")  # even the right password waits
    assert status == 429 and "太频繁" in body and COOKIE not in browser.cookies
    clock.now += SIGN_IN_WINDOW + timedelta(seconds=1)
    status, _body, location = await browser.sign_in("nurse-li")
    assert status == 303 and location == "/clinic/queue"
