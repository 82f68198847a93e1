"""A verification link works only for the chat account that asked for it (web authorisation before the face).

The attack: user A asks to verify with B's name and ID number and forwards the link to B; B's face would
then make A's chat account B's. Every test here fails on code that reaches the face provider without first
learning, from the platform, which account the browser belongs to.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer
from sqlalchemy import select

from bot.core.config import DEV_ALIPAY_PREFIX, DEV_WECHAT_PREFIX, Settings
from bot.core.metrics import Metrics
from bot.dev.demo import demo_id_number
from bot.dev.fakes.alipay_gateway import OAUTH_TOKEN, FakeAlipayGateway
from bot.dev.fakes.tencent_faceid import FakeTencentFaceID
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.platforms.alipay.client import AlipayAPI, AlipayAPIError
from bot.platforms.wechat.client import WeChatAPI, WeChatAPIError
from bot.web.appkeys import DEV_FACE, SESSIONS
from models import AuditEntry, Identity, PlatformAccount, Verification
from tests.channels import SIM_USER_COOKIES, Channel, WeChat, authorise, link_in, local_path
from tests.conftest import Serve
from tests.helpers import Client, count, drain_outbox

VICTIM = ("林晓雨", demo_id_number("320602", date(1992, 3, 14), 122))
REFUSED = {"wechat": "请在发起认证的微信中打开此链接", "alipay": "请在发起认证的支付宝中打开此链接"}
TENCENT = {"secret_id": "AKIDfakeSecretId0000000000000000000", "secret_key": "fakeSecretKey000000000", "rule_id": "7"}


async def _link(channel: Channel, user: str, name: str = VICTIM[0], id_number: str = VICTIM[1]) -> str:
    await channel.do(user, ("click", "HELP_VERIFY"))
    await channel.say(user, name)
    return link_in(await channel.do(user, ("text", id_number)))


async def _account(client: Client, platform: str, user: str) -> PlatformAccount:
    async with client.app[SESSIONS]() as session:
        query = select(PlatformAccount).where(PlatformAccount.platform == platform, PlatformAccount.user_id == user)
        return (await session.scalars(query)).one()


async def _attempt(client: Client) -> Verification:
    async with client.app[SESSIONS]() as session:
        return (await session.scalars(select(Verification))).one()


async def _refusals(client: Client) -> list[AuditEntry]:
    async with client.app[SESSIONS]() as session:
        query = select(AuditEntry).where(AuditEntry.action == "verify_refused").order_by(AuditEntry.id)
        return list((await session.scalars(query)).all())


async def _to_platform(client: Client, link: str, platform: str, as_user: str) -> tuple[str, str]:
    """Open the link, let the platform's page authorise ``as_user``: (our return URL's path, the state)."""
    started = await client.get(local_path(link), allow_redirects=False)
    assert started.status == 302
    cookies = {SIM_USER_COOKIES[platform]: as_user}
    async with client.session.get(started.headers["Location"], allow_redirects=False, cookies=cookies) as page:
        assert page.status == 302, await page.text()
        back = page.headers["Location"]
    return local_path(back), parse_qs(urlsplit(back).query)["state"][0]


# --- the forwarded link -------------------------------------------------------------------------------


async def test_a_forwarded_link_is_refused(channel: Channel, app_client: Client) -> None:
    asker, opener = f"a-{channel.platform}", f"b-{channel.platform}"
    link = await _link(channel, asker)
    before = len(channel.inbox(asker))

    refused = await authorise(app_client, link, channel.platform, opener)

    assert refused.status == 403
    page = await refused.text()
    assert REFUSED[channel.platform] in page
    assert VICTIM[0] not in page and VICTIM[1] not in page
    assert app_client.app[DEV_FACE].attempts == {}  # the face provider was never reached
    assert await count(app_client, Identity) == 0
    account = await _account(app_client, channel.platform, asker)
    assert account.identity_id is None
    attempt = await _attempt(app_client)
    assert (attempt.status, attempt.reason) == ("failed", "opened_by_another_account")
    (audit,) = await _refusals(app_client)
    assert (audit.actor_kind, audit.actor_ref, audit.reason) == (
        "account",
        str(account.id),
        "opened_by_another_account",
    )
    assert audit.platform == channel.platform and audit.detail["attempt"] == attempt.id
    assert opener not in str(audit.detail)  # who opened it is kept as a keyed hash only
    # The asker learns it in the chat; the link is spent, for B and for A alike.
    await drain_outbox(app_client)
    told = channel.inbox(asker)[before:]
    assert len(told) == 1 and "被打开" in told[0] and "不要转发" in told[0]
    again = await app_client.get(local_path(link), allow_redirects=False)
    assert again.status == 410
    assert await count(app_client, Identity) == 0


async def test_the_asker_passes_and_is_bound(channel: Channel, app_client: Client) -> None:
    user = f"me-{channel.platform}"
    link = await _link(channel, user)
    to_provider = await authorise(app_client, link, channel.platform, user)
    assert to_provider.status == 302
    page = to_provider.headers["Location"]
    assert "/_dev/face/" in page
    decided = await app_client.post(local_path(page), data={"decision": "pass"}, allow_redirects=False)
    back = await app_client.get(local_path(decided.headers["Location"]))
    assert back.status == 200 and "实名认证成功" in await back.text()
    assert (await _account(app_client, channel.platform, user)).identity_id is not None
    assert await _refusals(app_client) == []


async def test_the_authorisation_urls_are_the_platforms(channel: Channel, app_client: Client) -> None:
    link = await _link(channel, f"url-{channel.platform}")
    started = await app_client.get(local_path(link), allow_redirects=False)
    location = started.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    path = urlsplit(link).path
    if channel.platform == "wechat":
        assert urlsplit(location).path == "/connect/oauth2/authorize" and location.endswith("#wechat_redirect")
        assert query["appid"] == [channel.app_id] and query["response_type"] == ["code"]
        assert query["scope"] == ["snsapi_base"]
    else:
        assert urlsplit(location).path == "/oauth2/publicAppAuthorize.htm"
        assert query["app_id"] == [channel.app_id] and query["scope"] == ["auth_base"]
    assert urlsplit(query["redirect_uri"][0]).path == f"{path}/authorised"
    assert len(query["state"][0]) >= 32
    assert started.headers["Cache-Control"] == "no-store" and started.headers["Referrer-Policy"] == "no-referrer"
    cookie = started.cookies["vx_verify"]
    assert cookie["httponly"] and cookie["path"] == f"{path}/" and cookie["samesite"] == "Lax"


# --- the state: bound to the attempt and to the browser, single use ----------------------------------------


async def test_forged_foreign_and_replayed_states_change_nothing(channel: Channel, app_client: Client) -> None:
    user = f"st-{channel.platform}"
    link = await _link(channel, user)
    back, state = await _to_platform(app_client, link, channel.platform, user)

    forged = back.replace(state, state[:-2] + ("AA" if not state.endswith("AA") else "BB"))
    assert (await app_client.get(forged, allow_redirects=False)).status == 403
    # The return URL opened in another browser (no cookie from opening the link): refused too.
    async with aiohttp.ClientSession() as elsewhere:
        async with elsewhere.get(str(app_client.make_url(back)), allow_redirects=False) as response:
            assert response.status == 403
            assert "重新点击认证链接" in await response.text()
    attempt = await _attempt(app_client)
    assert attempt.status == "pending" and (attempt.provider_ref or "").startswith("oauth:")
    assert app_client.app[DEV_FACE].attempts == {}
    assert [entry.reason for entry in await _refusals(app_client)] == ["oauth_state", "oauth_state"]

    # The real return, once: on to the provider. A second time: nothing moves.
    assert (await app_client.get(back, allow_redirects=False)).status == 302
    replay = await app_client.get(back, allow_redirects=False)
    assert replay.status == 410
    assert len(app_client.app[DEV_FACE].attempts) == 1
    assert (await _attempt(app_client)).status == "started"


async def test_a_state_from_an_earlier_opening_no_longer_works(channel: Channel, app_client: Client) -> None:
    user = f"old-{channel.platform}"
    link = await _link(channel, user)
    first, _ = await _to_platform(app_client, link, channel.platform, user)
    second, _ = await _to_platform(app_client, link, channel.platform, user)  # the link opened again
    assert (await app_client.get(first, allow_redirects=False)).status == 403
    assert (await app_client.get(second, allow_redirects=False)).status == 302


async def test_the_provider_page_finished_in_another_browser_binds_nothing(
    channel: Channel, app_client: Client
) -> None:
    """A passes the account check, then forwards the face page itself: its return is refused."""
    user = f"fw-{channel.platform}"
    link = await _link(channel, user)
    to_provider = await authorise(app_client, link, channel.platform, user)
    page = to_provider.headers["Location"]
    async with aiohttp.ClientSession() as other_phone:
        decide = str(app_client.make_url(local_path(page)))
        async with other_phone.post(decide, data={"decision": "pass"}, allow_redirects=False) as decided:
            back = str(app_client.make_url(local_path(decided.headers["Location"])))
        async with other_phone.get(back) as refused:
            assert refused.status == 403 and REFUSED[channel.platform] in await refused.text()
    attempt = await _attempt(app_client)
    assert (attempt.status, attempt.reason) == ("failed", "returned_in_another_browser")
    # A's own browser comes too late: the attempt proves nothing any more.
    late = await app_client.get(local_path(link.rstrip("/") + "/done"))
    assert late.status == 410
    assert await count(app_client, Identity) == 0
    assert [entry.reason for entry in await _refusals(app_client)] == ["returned_in_another_browser"]
    await drain_outbox(app_client)
    assert any("不要转发" in told for told in channel.inbox(user))


# --- the Tencent H5 provider, against its fake ------------------------------------------------------------


@pytest.fixture
async def tencent(aiohttp_server: AiohttpServer) -> tuple[FakeTencentFaceID, str]:
    fake = FakeTencentFaceID(TENCENT["secret_id"], TENCENT["secret_key"], rule_id=TENCENT["rule_id"])
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url(""))


@pytest.fixture
async def tencent_wechat(
    make_settings: Any, serve: Serve, tencent: tuple[FakeTencentFaceID, str], fake: FakeWeChatAPI
) -> tuple[Client, WeChat]:
    settings = make_settings(
        face_provider_wechat="tencent",
        tencent_secret_id=TENCENT["secret_id"],
        tencent_secret_key=TENCENT["secret_key"],
        tencent_faceid_rule_id=TENCENT["rule_id"],
        tencent_faceid_endpoint=tencent[1],
    )
    client = await serve(settings)
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    return client, WeChat(client, sim, fake)


async def test_tencent_forwarded_link_is_refused_before_detect_auth(
    tencent_wechat: tuple[Client, WeChat], tencent: tuple[FakeTencentFaceID, str]
) -> None:
    client, channel = tencent_wechat
    link = await _link(channel, "o-asker")
    refused = await authorise(client, link, "wechat", "o-someone-else")
    assert refused.status == 403 and REFUSED["wechat"] in await refused.text()
    assert tencent[0].calls("DetectAuth") == []
    assert (await _attempt(client)).status == "failed"
    assert [entry.reason for entry in await _refusals(client)] == ["opened_by_another_account"]


async def test_tencent_the_asker_passes(
    tencent_wechat: tuple[Client, WeChat], tencent: tuple[FakeTencentFaceID, str]
) -> None:
    client, channel = tencent_wechat
    link = await _link(channel, "o-me")
    to_provider = await authorise(client, link, "wechat", "o-me")
    assert to_provider.status == 302
    h5 = to_provider.headers["Location"]
    assert h5.startswith(tencent[1].rstrip("/") + "/h5/")
    async with client.session.get(h5, params={"result": "pass"}, allow_redirects=False) as finished:
        back = finished.headers["Location"]
    done = await client.get(local_path(back))
    assert done.status == 200 and "实名认证成功" in await done.text()
    assert (await _account(client, "wechat", "o-me")).identity_id is not None


# --- the fakes: codes are single-use and short-lived, calls are checked ---------------------------------------


async def test_wechat_codes_work_once(
    fake_wechat: tuple[FakeWeChatAPI, str], app_client: Client, settings: Any
) -> None:
    fake = fake_wechat[0]
    async with aiohttp.ClientSession() as http:
        api = WeChatAPI(http, app_client.app[SESSIONS], settings, Metrics())
        code = fake.issue_oauth_code("o-someone")
        assert await api.oauth_openid(code) == "o-someone"
        with pytest.raises(WeChatAPIError) as replay:
            await api.oauth_openid(code)
        assert replay.value.errcode == 40163
        with pytest.raises(WeChatAPIError) as unknown:
            await api.oauth_openid("made-up")
        assert unknown.value.errcode == 40029
        fake.oauth_code_ttl = 0  # every code is already too old
        with pytest.raises(WeChatAPIError) as expired:
            await api.oauth_openid(fake.issue_oauth_code("o-someone"))
        assert expired.value.errcode == 40029
        fake.oauth_code_ttl = 300
        other = dataclasses.replace(settings, wechat_secret="not-the-secret")
        wrong_secret = WeChatAPI(http, app_client.app[SESSIONS], other, Metrics())
        with pytest.raises(WeChatAPIError) as refused:
            await wrong_secret.oauth_openid(fake.issue_oauth_code("o-someone"))
        assert refused.value.errcode == 40125


async def test_alipay_auth_codes_work_once_and_answers_must_be_signed(
    fake_alipay: tuple[FakeAlipayGateway, str], settings: Any
) -> None:
    fake = fake_alipay[0]
    async with aiohttp.ClientSession() as http:
        api = AlipayAPI.from_settings(http, settings, Metrics())
        code = fake.issue_auth_code("2088000000000999")
        assert await api.oauth_user_id(code) == "2088000000000999"
        with pytest.raises(AlipayAPIError) as replay:
            await api.oauth_user_id(code)
        assert (replay.value.code, replay.value.sub_code) == ("40002", "isv.code-invalid")
        fake.leave_unsigned(OAUTH_TOKEN)
        with pytest.raises(AlipayAPIError) as unsigned:
            await api.oauth_user_id(fake.issue_auth_code("2088000000000999"))
        assert unsigned.value.code == "response_signature_invalid"
    calls = fake.calls(OAUTH_TOKEN)
    assert calls and all(call.params["grant_type"] == "authorization_code" and call.params["sign"] for call in calls)


async def test_the_authorisation_pages_need_a_logged_in_user(
    fake_wechat: tuple[FakeWeChatAPI, str], fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    wechat_page = f"{fake_wechat[1]}/connect/oauth2/authorize"
    alipay_page = fake_alipay[1].removesuffix("/gateway.do") + "/oauth2/publicAppAuthorize.htm"
    back = "http://127.0.0.1:1/verify/h/authorised"
    async with aiohttp.ClientSession() as http:
        wechat_query = {
            "appid": fake_wechat[0].appid,
            "redirect_uri": back,
            "response_type": "code",
            "scope": "snsapi_base",
            "state": "s",
        }
        async with http.get(wechat_page, params=wechat_query, allow_redirects=False) as page:
            assert page.status == 403 and "请在微信客户端打开链接" in await page.text()
        async with http.get(wechat_page, params={**wechat_query, "appid": "wx-other"}, allow_redirects=False) as page:
            assert page.status == 400
        alipay_query = {"app_id": fake_alipay[0].app_id, "scope": "auth_base", "redirect_uri": back, "state": "s"}
        async with http.get(alipay_page, params=alipay_query, allow_redirects=False) as page:
            assert page.status == 403 and "请在支付宝客户端打开链接" in await page.text()
        # The development form: the browser says whom it plays, and is sent back with a code for that user.
        chosen = {**alipay_query, "sim_user": "2088000000000777"}
        async with http.get(alipay_page, params=chosen, allow_redirects=False) as page:
            assert page.status == 302
            query = parse_qs(urlsplit(page.headers["Location"]).query)
        assert query["state"] == ["s"] and query["scope"] == ["auth_base"]
        assert fake_alipay[0].auth_codes[query["auth_code"][0]].user_id == "2088000000000777"
    assert fake_wechat[0].oauth_codes == {}  # nobody logged in, no code


# --- settings, the mini program, development -----------------------------------------------------------


def test_production_wants_https_authorisation_pages() -> None:
    def problems(**values: str) -> list[str]:
        settings = Settings(env="production", public_url="https://vaxbot.example.org", **values)
        return [problem for problem in settings.production_problems(dev_keys=False) if "OAUTH" in problem]

    assert problems() == []  # the defaults are the real hosts
    assert Settings().wechat_oauth_base == "https://open.weixin.qq.com"
    assert Settings().alipay_oauth_base == "https://openauth.alipay.com"
    assert problems(wechat_oauth_base="http://127.0.0.1:8080/_dev/wechat") == [
        "VAXBOT_WECHAT_OAUTH_BASE must be https in production"
    ]
    assert problems(alipay_oauth_base="http://127.0.0.1:8080/_dev/alipay") == [
        "VAXBOT_ALIPAY_OAUTH_BASE must be https in production"
    ]


def test_development_points_the_authorisation_at_the_fakes() -> None:
    settings = Settings(env="development", port=9100, public_url="http://192.0.2.7:9100")
    assert settings.wechat_oauth_base == f"http://192.0.2.7:9100{DEV_WECHAT_PREFIX}"  # where the browser reaches us
    assert settings.alipay_oauth_base == f"http://192.0.2.7:9100{DEV_ALIPAY_PREFIX}"
    kept = Settings(env="development", wechat_oauth_base="https://open.weixin.qq.com")
    assert kept.wechat_oauth_base == "https://open.weixin.qq.com"


async def test_the_mini_program_face_needs_no_web_authorisation(
    make_settings: Any, serve: Serve, fake: FakeWeChatAPI
) -> None:
    settings = make_settings(face_provider_wechat="wechat_mini")
    client = await serve(settings)
    sim = WeChatClientSim(settings.wechat_token, settings.wechat_appid, settings.wechat_aes_key)
    link = await _link(WeChat(client, sim, fake), "o-mini")
    page = await client.get(local_path(link), allow_redirects=False)
    assert page.status == 200 and "请在小程序中打开" in await page.text()
    (session,) = fake.face_sessions.values()
    assert session.openid == "o-mini"  # WeChat runs the face for the account that asked
    assert fake.oauth_codes == {}


async def test_a_wechat_browser_may_say_whom_it_plays_in_development(fake_wechat: tuple[FakeWeChatAPI, str]) -> None:
    query = {
        "appid": fake_wechat[0].appid,
        "redirect_uri": "http://127.0.0.1:1/verify/h/authorised?x=1",
        "response_type": "code",
        "scope": "snsapi_base",
        "state": "s",
        "sim_user": "o-demo-parent",
    }
    async with aiohttp.ClientSession() as http:
        page = f"{fake_wechat[1]}/connect/oauth2/authorize"
        async with http.get(page, params=query, allow_redirects=False) as response:
            assert response.status == 302
            back = parse_qs(urlsplit(response.headers["Location"]).query)
            assert response.cookies["vx_sim_wechat_user"].value == "o-demo-parent"
    assert back["x"] == ["1"] and back["state"] == ["s"]
    assert fake_wechat[0].oauth_codes[back["code"][0]].openid == "o-demo-parent"
