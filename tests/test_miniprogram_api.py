"""The pages' JSON API: login, the mini program's face, claiming, grants, records, codes, and every refusal.

The "done when" of the mini program: a parent who only uses the WeChat mini program logs in, verifies by
the mini program's face, claims her child and authorises the grandmother; the grandmother, who also only
uses the mini program, consented once and receives the next reminder as a subscription message.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from bot.core.config import DEV_ALIPAY_MINI_APPID, DEV_SUBSCRIBE_TEMPLATE, Settings
from bot.dev.demo import CHILD, GRANDMA, PARENT
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.reminders.doses import next_reminder_time, plan_reminders, send_due_reminders
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Certificate, Consent, Identity, MiniSession, PlatformAccount, utcnow
from tests.helpers import Client, Gate, drain_outbox
from tests.test_reminders import DOSES
from tests.world import registry_file, verified

API = "/mp/api/v1"
SECRETS = (CHILD.name, CHILD.id_number, PARENT.name, PARENT.id_number, GRANDMA.name, GRANDMA.id_number)


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the mini program's API on its own fake."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


class Page:
    """The mini program's pages for one WeChat user: wx.login, then the API with the session token."""

    def __init__(self, client: Client, fake: FakeMiniProgramAPI, openid: str, unionid: str = "") -> None:
        self.client, self.fake, self.openid, self.unionid = client, fake, openid, unionid
        self.token = ""

    async def login(self) -> dict[str, Any]:
        code = self.fake.issue_login_code(self.openid, self.unionid)
        status, body = await self.call("POST", "/login", {"platform": "wechat", "code": code}, auth=False)
        assert status == 200, body
        self.token = body["token"]
        return body

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        response = await self.client.request(method, API + path, json=body, headers=headers)
        answer = await response.json()
        text = str(answer)
        for secret in SECRETS:  # nothing personal ever comes back unmasked
            assert secret not in text, (path, secret)
        return response.status, answer

    async def verify(self, name: str, id_number: str, result: str = "pass") -> dict[str, Any]:
        status, started = await self.call("POST", "/verifications", {"name": name, "id_number": id_number})
        assert status == 200, started
        self.fake.complete_face(started["verify_id"], result)  # wx.requestFacialVerify, on the phone
        status, finished = await self.call("POST", f"/verifications/{started['attempt']}/result")
        assert status == 200, finished
        return finished


async def _child_file(client: Client) -> int:
    return await registry_file(
        client,
        ref="T-MP",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex="M",
        doses=DOSES,
        guardians=[PARENT.id_number],
    )


async def test_a_mini_program_family_from_login_to_the_grandmothers_reminder(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    fake = fake_mini[0]
    child = await _child_file(app_client)
    parent = Page(app_client, fake, "o-mp-parent")
    assert (await parent.login())["verified"] is False
    assert await parent.call("GET", "/pending") == (403, _error(app_client, "not_verified"))

    passed = await parent.verify(PARENT.name, PARENT.id_number)
    assert passed["status"] == "passed" and "林*雨" in passed["message"]
    # WeChat's face ran with the mini program's own token and this user's openid in it.
    face_calls = [item for item in fake.received if item.path.startswith("cityservice/face")]
    assert [item.body["openid"] for item in face_calls] == ["o-mp-parent", "o-mp-parent"]
    assert all(item.token in fake.tokens for item in face_calls)

    status, pending = await parent.call("GET", "/pending")
    assert status == 200
    [item] = [each for each in pending["items"] if each["file"] == child]
    assert (item["standing"], item["name"], item["kind"]) == ("claimable", "林*满", "child")
    assert (await parent.call("POST", "/claims", {"file": child}))[1]["error"]["code"] == "consent_required"
    status, claimed = await parent.call("POST", "/claims", {"file": child, "agree": True})
    assert status == 200, claimed
    certificate = claimed["certificate"]
    assert (await parent.call("POST", "/claims", {"file": child, "agree": True}))[1]["error"]["code"] in (
        "not_claimable",
        "claim_taken",
    )

    grandma_fields = {"name": GRANDMA.name, "id_number": GRANDMA.id_number, "relationship": "grandmother"}
    status, grant = await parent.call(
        "POST", f"/certificates/{certificate}/grants", {**grandma_fields, "phone": "13912345678"}
    )
    assert status == 200, grant
    assert (grant["name"], grant["phone"], grant["notified"]) == ("周*兰", "139****5678", False)

    grandma = Page(app_client, fake, "o-mp-grandma")
    await grandma.login()
    assert (await grandma.verify(GRANDMA.name, GRANDMA.id_number))["status"] == "passed"
    status, mine = await grandma.call("GET", "/certificates")
    assert [(each["certificate"], each["role"]) for each in mine["items"]] == [(certificate, "grantee")]
    status, records = await grandma.call("GET", f"/certificates/{certificate}/records")
    assert status == 200 and records["name"] == "林*满" and len(records["doses"]) == 3 and records["next"]
    status, code = await grandma.call("POST", f"/certificates/{certificate}/code")
    assert status == 200 and code["svg"].startswith("<svg") and "/code/" in code["page"]
    # She consents once, in the popup the page opens with wx.requestSubscribeMessage.
    status, consented = await grandma.call("POST", "/subscriptions", {"results": {DEV_SUBSCRIBE_TEMPLATE: "accept"}})
    assert (status, consented["recorded"], consented["consents"]) == (200, 1, {DEV_SUBSCRIBE_TEMPLATE: 1})
    fake.consent("o-mp-grandma", DEV_SUBSCRIBE_TEMPLATE)

    services = app_client.app[SERVICES]
    sessions = app_client.app[SESSIONS]
    now = utcnow()
    await plan_reminders(sessions, services.vault, services.settings, now)
    send_at = next_reminder_time(now, services.settings.reminder_hour)
    assert await send_due_reminders(sessions, services.vault, services.catalogue, services.settings, send_at) == 1
    await drain_outbox(app_client)
    assert len(fake.subscriptions_to("o-mp-grandma")) == 1
    # The parent gave no consent: nothing reaches her, and nothing is sent without one.
    assert fake.subscriptions_to("o-mp-parent") == []
    status, me = await grandma.call("GET", "/me")
    assert (me["verified"], me["reminder_consents"], me["person"]["name"]) == (True, 0, "周*兰")

    async with sessions() as session:
        consent = (await session.scalars(select(Consent).where(Consent.purpose == "certificate_child"))).one()
        actions = (
            await session.scalars(select(AuditEntry.action).where(AuditEntry.certificate_id == certificate))
        ).all()
    assert consent.subject_ref == str(child)
    assert {"claim", "grant", "records_view", "code_show"} <= set(actions)


def _error(client: Client, code: str, **values: Any) -> dict[str, Any]:
    catalogue = client.app[SERVICES].catalogue
    return {"error": {"code": code, "message": catalogue(f"mp_error_{code}", **values)}}


async def test_login_refuses_replayed_foreign_and_malformed_codes(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    fake = fake_mini[0]
    page = Page(app_client, fake, "o-mp-login")
    code = fake.issue_login_code("o-mp-login")
    assert (await page.call("POST", "/login", {"platform": "wechat", "code": code}, auth=False))[0] == 200
    replay = await page.call("POST", "/login", {"platform": "wechat", "code": code}, auth=False)
    assert replay == (401, _error(app_client, "login_code_used"))
    foreign = fake.issue_login_code("o-mp-login", appid="wx00000000000other")  # another mini program's code
    assert (await page.call("POST", "/login", {"platform": "wechat", "code": foreign}, auth=False)) == (
        401,
        _error(app_client, "login_code_invalid"),
    )
    made_up = await page.call("POST", "/login", {"platform": "wechat", "code": "not-a-code"}, auth=False)
    assert made_up == (401, _error(app_client, "login_code_invalid"))
    for body in ({}, {"platform": "qq", "code": "x"}, {"platform": "wechat", "code": ""}, {"platform": "wechat"}):
        assert (await page.call("POST", "/login", body, auth=False)) == (400, _error(app_client, "bad_request"))
    raw = await app_client.post(API + "/login", data=b"[1,2", headers={"Content-Type": "application/json"})
    assert raw.status == 400
    async with app_client.app[SESSIONS]() as session:
        rows = (await session.scalars(select(MiniSession))).all()
    assert len(rows) == 1 and rows[0].session_key_enc  # WeChat's session_key is kept sealed, never returned


async def test_every_endpoint_refuses_without_a_live_session(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    page = Page(app_client, fake_mini[0], "o-mp-session")
    unauthorised = (401, _error(app_client, "unauthorised"))
    paths = [("GET", "/me"), ("GET", "/pending"), ("GET", "/certificates"), ("POST", "/certificates/1/code")]
    for method, path in paths:
        assert await page.call(method, path, auth=False) == unauthorised
        page.token = "made-up-token"
        assert await page.call(method, path) == unauthorised
    await page.login()
    assert (await page.call("GET", "/me"))[0] == 200
    assert (await page.call("POST", "/logout"))[0] == 200
    assert await page.call("GET", "/me") == unauthorised  # logged out: the token ends at once
    await page.login()
    async with app_client.app[SESSIONS]() as session, session.begin():
        for row in (await session.scalars(select(MiniSession))).all():
            row.expires_at = utcnow()
    assert await page.call("GET", "/me") == unauthorised  # expired


async def test_requests_past_the_budget_get_429(
    serve: Any, make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    client = await serve(make_settings(wxmini_api_base=fake_mini[1], mp_api_burst=3, mp_api_per_minute=1))
    page = Page(client, fake_mini[0], "o-mp-busy")
    await page.login()
    statuses = [(await page.call("GET", "/me"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await client.get(API + "/me", headers={"Authorization": f"Bearer {page.token}"})
    assert response.status == 429 and int(response.headers["Retry-After"]) > 0


async def test_grant_and_certificate_refusals_are_answered_and_audited(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    fake = fake_mini[0]
    child = await _child_file(app_client)
    settings = app_client.app[SERVICES].settings
    holder = await verified(app_client, "wxmini", "o-mp-holder", PARENT.name, PARENT.id_number, settings.wxmini_appid)
    async with app_client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=child, holder_identity_id=holder, kind="child", claimed_via="wxmini")
        session.add(certificate)
        await session.flush()
        certificate_id = certificate.id
    parent = Page(app_client, fake, "o-mp-holder")
    await parent.login()
    grants = f"/certificates/{certificate_id}/grants"
    good = {"name": GRANDMA.name, "id_number": GRANDMA.id_number, "relationship": "grandmother", "phone": "13912345678"}
    cases = [
        ({**good, "name": "1234"}, 400, "invalid_name"),
        ({**good, "id_number": "320602196308022260"}, 400, "invalid_id_number"),
        ({**good, "relationship": "neighbour"}, 400, "invalid_relationship"),
        ({**good, "phone": "12345"}, 400, "invalid_phone"),
        ({**good, "id_number": PARENT.id_number, "name": PARENT.name}, 409, "grant_self"),
        ({**good, "id_number": CHILD.id_number, "name": CHILD.name}, 409, "grant_is_child"),
    ]
    for body, status, code in cases:
        answer = await parent.call("POST", grants, body)
        assert (answer[0], answer[1]["error"]["code"]) == (status, code), body
    assert (await parent.call("POST", grants, good))[0] == 200
    assert (await parent.call("POST", grants, good))[1]["error"]["code"] == "grant_duplicate"
    assert (await parent.call("DELETE", f"{grants}/999999"))[1]["error"]["code"] == "grant_not_found"

    stranger = Page(app_client, fake, "o-mp-stranger")
    await stranger.login()
    await verified(app_client, "wxmini", "o-mp-stranger", "王小二", "320602198001011234", settings.wxmini_appid)
    for method, path in (
        ("GET", f"/certificates/{certificate_id}/records"),
        ("POST", f"/certificates/{certificate_id}/code"),
        ("GET", grants),
        ("GET", "/certificates/abc/records"),
    ):
        assert await stranger.call(method, path) == (404, _error(app_client, "not_found")), path
    grandma = Page(app_client, fake, "o-mp-granny")
    await grandma.login()
    await verified(app_client, "wxmini", "o-mp-granny", GRANDMA.name, GRANDMA.id_number, settings.wxmini_appid)
    assert (await grandma.call("GET", f"/certificates/{certificate_id}/records"))[0] == 200
    assert await grandma.call("GET", grants) == (403, _error(app_client, "grant_not_holder"))
    status, listed = await parent.call("GET", grants)
    [grant] = listed["items"]
    assert (await parent.call("DELETE", f"{grants}/{grant['grant']}")) == (
        200,
        {"grant": grant["grant"], "revoked": True},
    )
    assert (await parent.call("DELETE", f"{grants}/{grant['grant']}"))[1]["error"]["code"] == "grant_not_found"
    assert await grandma.call("GET", f"/certificates/{certificate_id}/records") == (
        404,
        _error(app_client, "not_found"),
    )

    async with app_client.app[SESSIONS]() as session:
        refusals = (
            await session.scalars(
                select(AuditEntry.reason).where(AuditEntry.action.in_(("grant_refused", "pick_refused")))
            )
        ).all()
    assert {"self", "is_child", "duplicate", "no_such_grant", "not_holder", "not_visible"} <= set(refusals)


async def test_the_same_wechat_user_is_one_person_through_the_unionid(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    from bot.miniprogram.sessions import record_union

    settings = app_client.app[SERVICES].settings
    person = await verified(app_client, "wechat", "o-oa-union", PARENT.name, PARENT.id_number, settings.wechat_appid)
    async with app_client.app[SESSIONS]() as session, session.begin():
        official = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-oa-union"))).one()
        await record_union(session, app_client.app[SERVICES].vault, official, "union-123", utcnow())
    page = Page(app_client, fake_mini[0], "o-mini-union", unionid="union-123")
    assert (await page.login())["verified"] is True
    stranger = Page(app_client, fake_mini[0], "o-mini-other", unionid="union-999")
    assert (await stranger.login())["verified"] is False
    async with app_client.app[SESSIONS]() as session:
        mini = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == "o-mini-union"))).one()
        bound = (await session.scalars(select(AuditEntry).where(AuditEntry.reason == "union_id"))).one()
    assert mini.identity_id == person and bound.detail["identity_id"] == person


async def test_alipay_mini_program_login_is_the_life_accounts_person(
    app_client: Client, fake_alipay: tuple[FakeAlipayGateway, str], fake_mini: tuple[FakeMiniProgramAPI, str, Gate]
) -> None:
    gateway = fake_alipay[0]
    gateway.other_app_ids.add(DEV_ALIPAY_MINI_APPID)
    settings = app_client.app[SERVICES].settings
    person = await verified(
        app_client, "alipay", "2088000000000777", PARENT.name, PARENT.id_number, settings.alipay_appid
    )
    page = Page(app_client, fake_mini[0], "unused")
    code = gateway.issue_auth_code("2088000000000777", app_id=DEV_ALIPAY_MINI_APPID)
    status, body = await page.call("POST", "/login", {"platform": "alipay", "code": code}, auth=False)
    assert (status, body["verified"]) == (200, True)
    replay = await page.call("POST", "/login", {"platform": "alipay", "code": code}, auth=False)
    assert replay == (401, _error(app_client, "login_code_used"))
    life_code = gateway.issue_auth_code("2088000000000777")  # issued to the life account, not the mini program
    foreign = await page.call("POST", "/login", {"platform": "alipay", "code": life_code}, auth=False)
    assert foreign == (401, _error(app_client, "login_code_invalid"))
    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.platform == "alipaymini"))).one()
        identity = await session.get(Identity, person)
    assert account.identity_id == person and identity is not None


def test_the_openapi_description_lists_every_endpoint(app_client: Client) -> None:
    from pathlib import Path

    described = Path(__file__).parent.parent / "docs" / "mp-api.openapi.yaml"
    text = described.read_text(encoding="utf-8")
    documented = {line.strip().rstrip(":") for line in text.splitlines() if line.startswith("  /")}
    mounted = {
        resource.canonical.removeprefix(API)
        for resource in app_client.app.router.resources()
        if resource.canonical.startswith(API)
    }
    assert mounted == documented


async def test_the_face_refusals_and_a_failed_face_bind_nothing(
    app_client: Client, fake_mini: tuple[FakeMiniProgramAPI, str, Gate], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    fake = fake_mini[0]
    page = Page(app_client, fake, "o-mp-face")
    await page.login()
    for body, code in (
        ({"name": "", "id_number": PARENT.id_number}, "invalid_name"),
        ({"name": PARENT.name, "id_number": "123"}, "invalid_id_number"),
    ):
        assert await page.call("POST", "/verifications", body) == (400, _error(app_client, code))
    status, started = await page.call("POST", "/verifications", {"name": PARENT.name, "id_number": PARENT.id_number})
    assert status == 200
    result = f"/verifications/{started['attempt']}/result"
    assert await page.call("POST", result) == (409, _error(app_client, "face_pending"))  # not done yet
    other = Page(app_client, fake, "o-mp-face-other")
    await other.login()
    assert await other.call("POST", result) == (404, _error(app_client, "face_not_found"))  # not her attempt
    fake.complete_face(started["verify_id"], "other")  # someone else's face in front of the camera
    status, finished = await page.call("POST", result)
    assert (status, finished["status"]) == (200, "failed")
    assert (await page.call("POST", result))[1]["status"] == "failed"  # decided once, not asked again
    assert (await page.call("GET", "/me"))[1]["verified"] is False
    assert await page.call("POST", "/verifications/not-an-attempt/result") == (
        404,
        _error(app_client, "face_not_found"),
    )
    # WeChat's session_key never leaves the server: not in an answer (checked by Page), not in a log line.
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert fake.session_keys and not any(key in logged for key in fake.session_keys)


async def test_a_parent_verified_on_the_official_account_is_known_in_the_mini_program_by_her_unionid(
    app_client: Client,
    wechat: Any,
    fake: Any,
    fake_mini: tuple[FakeMiniProgramAPI, str, Gate],
) -> None:
    from tests.channels import WeChat, authorise, link_in, local_path

    official = WeChat(app_client, wechat, fake)
    fake.unionids["o-oa-verified"] = "union-of-lin"  # the Official Account is bound to an Open Platform account
    await official.do("o-oa-verified", ("text", "实名认证"))
    await official.say("o-oa-verified", PARENT.name)
    link = link_in(await official.do("o-oa-verified", ("text", PARENT.id_number)))
    to_face = await authorise(app_client, link, "wechat", "o-oa-verified")
    decided = await app_client.post(
        local_path(to_face.headers["Location"]), data={"decision": "pass"}, allow_redirects=False
    )
    assert (await app_client.get(local_path(decided.headers["Location"]))).status == 200
    await drain_outbox(app_client)  # the verification's own answer
    before = len(official.inbox("o-oa-verified"))

    page = Page(app_client, fake_mini[0], "o-mini-lin", unionid="union-of-lin")
    assert (await page.login())["verified"] is True  # no second face: WeChat vouches it is the same user
    await drain_outbox(app_client)
    told = official.inbox("o-oa-verified")[before:]
    assert len(told) == 1 and "微信小程序" in told[0]  # she hears at once that one more account speaks for her
