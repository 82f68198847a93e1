"""Alipay's certify from its mini program: signed as the mini program, decided only by the server's query.

A mini-program user logs in with ``my.getAuthCode``, asks the API for a certify (``initialize`` signed with
the mini program's app id, every answer's signature checked by the fake gateway and by us), runs the face in
Alipay, and asks for the result: only ``alipay.user.certify.open.query`` binds her. The same refusals as the
WeChat mini program's face: another account's attempt, a face not done yet, and an attempt decided once.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from bot.core.config import DEV_ALIPAY_MINI_APPID, Settings
from bot.dev.demo import PARENT
from bot.dev.fakes.alipay_gateway import CERTIFY_INITIALIZE, CERTIFY_PAGE, CERTIFY_QUERY, FakeAlipayGateway
from bot.dev.fakes.wxmini import FakeMiniProgramAPI
from bot.identity.face.alipay_certify import AlipayCertify
from bot.identity.face.base import StartRequest, Subject
from bot.web.appkeys import ALIPAY_API, SERVICES, SESSIONS
from models import AuditEntry, OutboxMessage, PlatformAccount, Verification
from tests.helpers import Client, Gate

API = "/mp/api/v1"
SECRETS = (PARENT.name, PARENT.id_number)


@pytest.fixture
def settings(make_settings: Any, fake_mini: tuple[FakeMiniProgramAPI, str, Gate]) -> Settings:
    """The test settings, with the WeChat mini program's API on its own fake (the Alipay one on the gateway)."""
    return make_settings(wxmini_api_base=fake_mini[1])  # type: ignore[no-any-return]


@pytest.fixture
def gateway(fake_alipay: tuple[FakeAlipayGateway, str]) -> FakeAlipayGateway:
    """The fake gateway, which also accepts calls signed as the Alipay mini program (same key pair)."""
    fake_alipay[0].other_app_ids.add(DEV_ALIPAY_MINI_APPID)
    return fake_alipay[0]


class AlipayPage:
    """The Alipay mini program's pages for one user: my.getAuthCode, then the API with the session token."""

    def __init__(self, client: Client, gateway: FakeAlipayGateway, user_id: str) -> None:
        self.client, self.gateway, self.user_id = client, gateway, user_id
        self.token = ""

    async def login(self) -> None:
        code = self.gateway.issue_auth_code(self.user_id, app_id=DEV_ALIPAY_MINI_APPID)
        status, body = await self.call("POST", "/login", {"platform": "alipay", "code": code}, auth=False)
        assert status == 200, body
        self.token = body["token"]

    async def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        response = await self.client.request(method, API + path, json=body, headers=headers)
        answer = await response.json()
        for secret in SECRETS:  # nothing personal comes back unmasked, not even inside the certify URL
            assert secret not in str(answer), (path, secret)
        return response.status, answer

    async def start(self) -> dict[str, Any]:
        status, started = await self.call(
            "POST", "/verifications", {"name": PARENT.name, "id_number": PARENT.id_number}
        )
        assert status == 200, started
        return started


def _error(client: Client, code: str) -> dict[str, Any]:
    catalogue = client.app[SERVICES].catalogue
    return {"error": {"code": code, "message": catalogue(f"mp_error_{code}")}}


async def test_an_alipay_mini_program_user_verifies_by_alipays_certify(
    app_client: Client, gateway: FakeAlipayGateway
) -> None:
    page = AlipayPage(app_client, gateway, "2088000000000123")
    await page.login()
    started = await page.start()
    # Initialised as the mini program, with the subject we were given; the page URL opens certify for that id.
    [initialize] = gateway.calls(CERTIFY_INITIALIZE)
    assert initialize.params["app_id"] == DEV_ALIPAY_MINI_APPID
    assert initialize.biz["identity_param"]["cert_no"] == PARENT.id_number
    query = parse_qs(urlsplit(started["url"]).query)
    assert query["method"] == [CERTIFY_PAGE] and query["app_id"] == [DEV_ALIPAY_MINI_APPID]
    assert started["certify_id"] in query["biz_content"][0] and "sign" in query
    result = f"/verifications/{started['attempt']}/result"

    # Before the face (or after the user cancelled, 6001) Alipay says "F": the attempt stays open.
    assert await page.call("POST", result) == (409, _error(app_client, "face_pending"))
    assert await page.call("POST", result, {"result_status": "6001"}) == (409, _error(app_client, "face_pending"))
    gateway.complete_certify(started["certify_id"], "pass")
    status, finished = await page.call("POST", result, {"result_status": "9000"})
    assert (status, finished["status"]) == (200, "passed") and "林*雨" in finished["message"]
    assert (await page.call("GET", "/me"))[1]["verified"] is True
    asked = len(gateway.calls(CERTIFY_QUERY))
    assert (await page.call("POST", result, {"result_status": "9000"}))[1]["status"] == "passed"
    assert len(gateway.calls(CERTIFY_QUERY)) == asked  # decided once: Alipay is not asked again

    async with app_client.app[SESSIONS]() as session:
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.platform == "alipaymini"))).one()
        attempt = (await session.scalars(select(Verification))).one()
        rows = (await session.scalars(select(OutboxMessage).where(OutboxMessage.platform == "alipaymini"))).all()
    assert account.identity_id is not None and attempt.provider == "alipaymini"
    assert rows == []  # the Alipay mini program cannot be written to: its page shows the answer


async def test_the_alipay_certify_refusals_and_a_failed_face_bind_nothing(
    app_client: Client, gateway: FakeAlipayGateway, fake: Any
) -> None:
    page = AlipayPage(app_client, gateway, "2088000000000456")
    await page.login()
    started = await page.start()
    result = f"/verifications/{started['attempt']}/result"
    other = AlipayPage(app_client, gateway, "2088000000000789")
    await other.login()
    assert await other.call("POST", result, {"result_status": "9000"}) == (404, _error(app_client, "face_not_found"))

    gateway.complete_certify(started["certify_id"], "other")  # someone else's face in front of the camera
    status, finished = await page.call("POST", result, {"result_status": "4000"})
    assert (status, finished["status"]) == (200, "failed")
    assert (await page.call("POST", result, {"result_status": "9000"}))[1]["status"] == "failed"
    assert (await page.call("GET", "/me"))[1]["verified"] is False
    assert await page.call("POST", "/verifications/not-an-attempt/result") == (
        404,
        _error(app_client, "face_not_found"),
    )
    async with app_client.app[SESSIONS]() as session:
        attempt = (await session.scalars(select(Verification))).one()
        account = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == page.user_id))).one()
        bound = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "identity_bound"))).all()
    assert (attempt.status, attempt.reason) == ("failed", "alipay_not_passed")
    assert account.identity_id is None and bound == []

    # A passed face whose answer was altered on the way: its signature fails, so it proves nothing.
    again = await page.start()
    gateway.complete_certify(again["certify_id"], "pass")
    gateway.tamper(CERTIFY_QUERY)
    status, finished = await page.call("POST", f"/verifications/{again['attempt']}/result", {"result_status": "9000"})
    assert (status, finished["status"]) == (200, "failed")
    assert (await page.call("GET", "/me"))[1]["verified"] is False


async def test_a_certify_id_of_the_mini_program_is_unknown_to_another_app(
    app_client: Client, gateway: FakeAlipayGateway
) -> None:
    page = AlipayPage(app_client, gateway, "2088000000000321")
    await page.login()
    started = await page.start()
    gateway.complete_certify(started["certify_id"], "pass")
    # The life account (another app id, the same key pair) asks about the mini program's certify_id.
    life = AlipayCertify(app_client.app[ALIPAY_API])
    request = StartRequest("vx0000000001", Subject(PARENT.name, PARENT.id_number), "https://example.invalid/", "")
    outcome = await life.query(started["certify_id"], request)
    assert (outcome.passed, outcome.reason) == (False, "expired")
