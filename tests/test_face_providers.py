"""The face-verification providers against their fakes on loopback, and their configuration.

Each provider: start → the "user" finishes (pass, fail, someone else, never) → the server-side query gives
the right Outcome; signatures and credentials checked by the fakes (wrong ones refused, mapped to a
non-retryable FaceError); transport failures and stalls mapped to a retryable one. Also the TC3 signing
vector from Tencent's documentation, WeChat's cert_hash vector, the dev provider's page over HTTP, the age
tiers and the production refusals.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from pytest_aiohttp import AiohttpServer
from sqlalchemy.ext.asyncio import async_sessionmaker
from yarl import URL

from bot.core.config import DEV_ALIPAY_APPID, ConfigError, Settings, load_settings
from bot.core.db import create_engine, sessionmaker
from bot.core.metrics import Metrics
from bot.core.validators import parse_id_number
from bot.dev.fakes.alipay_gateway import CERTIFY_INITIALIZE, CERTIFY_QUERY, FakeAlipayGateway
from bot.dev.fakes.tencent_faceid import FakeTencentFaceID
from bot.dev.fakes.wechat import FakeWeChatAPI
from bot.identity.face.alipay_certify import AlipayCertify
from bot.identity.face.base import FaceError, Outcome, StartRequest, Subject
from bot.identity.face.dev import MOUNT, DevFace
from bot.identity.face.providers import (
    AgeTiers,
    build_face_providers,
    by_provider_name,
    dev_face,
    method_for_age,
    provider_name_for,
)
from bot.identity.face.tencent import (
    TencentFaceID,
    canonical_request,
    string_to_sign,
    tc3_authorization,
    tc3_signature,
)
from bot.identity.face.wechat_mini import WeChatMiniFace, cert_hash
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.client import AlipayAPI
from bot.platforms.wechat.client import WeChatAPI
from tests.helpers import STALL_SECONDS

NO_ENV_FILE = Path("/nonexistent/.env")
SUBJECT = Subject(name="张三", id_number="320602201901011235")
RETURN_URL = "https://vaxbot.example.org/verify/h4ndle/done"
SECRET_ID = "AKIDfakeSecretId0000000000000000000"
SECRET_KEY = "fakeSecretKey00000000000000000000"
RULE_ID = "7"


def request_for(reference: str = "vx0000000001", subject: Subject = SUBJECT, user: str = "o-user-1") -> StartRequest:
    return StartRequest(reference=reference, subject=subject, return_url=RETURN_URL, user_id=user)


def plain_settings(**overrides: Any) -> Settings:
    """Settings without a database (for the providers that need none)."""
    return load_settings(environ={}, env_file=NO_ENV_FILE, **{"env": "test", **overrides})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --- Tencent FaceID: TC3-HMAC-SHA256 ----------------------------------------------------------------------

# The worked example of Tencent's "Signature v3" page (a CVM DescribeInstances call).
DOC_PAYLOAD = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
DOC_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Host": "cvm.tencentcloudapi.com"}
DOC_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
DOC_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
DOC_TIMESTAMP = 1551113065


def test_tc3_signature_matches_tencents_documented_example() -> None:
    canonical, signed = canonical_request("POST", "/", "", DOC_HEADERS, DOC_PAYLOAD)
    assert signed == "content-type;host"
    assert canonical == (
        "POST\n/\n\n"
        "content-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\n"
        "content-type;host\n"
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    to_sign = string_to_sign(DOC_TIMESTAMP, "cvm", canonical)
    # 1551113065 is 2019-02-26 00:44 in Beijing: the scope's date must be the UTC one.
    assert to_sign == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    signature = "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    assert tc3_signature(DOC_KEY, DOC_TIMESTAMP, "cvm", to_sign) == signature
    assert tc3_authorization(
        DOC_ID, DOC_KEY, service="cvm", timestamp=DOC_TIMESTAMP, headers=DOC_HEADERS, payload=DOC_PAYLOAD
    ) == (
        f"TC3-HMAC-SHA256 Credential={DOC_ID}/2019-02-25/cvm/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}"
    )
    # Any change to what is signed changes the signature.
    assert tc3_signature(DOC_KEY + "x", DOC_TIMESTAMP, "cvm", to_sign) != signature
    assert tc3_signature(DOC_KEY, DOC_TIMESTAMP, "cvm", to_sign.replace("5ffe", "5ffd")) != signature


# --- Tencent FaceID: the provider against the fake ---------------------------------------------------------


@pytest.fixture
async def tencent_fake(aiohttp_server: AiohttpServer) -> tuple[FakeTencentFaceID, str]:
    fake = FakeTencentFaceID(SECRET_ID, SECRET_KEY, rule_id=RULE_ID)
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url(""))


@pytest.fixture
def tfake(tencent_fake: tuple[FakeTencentFaceID, str]) -> FakeTencentFaceID:
    return tencent_fake[0]


@pytest.fixture
def tencent_settings(tencent_fake: tuple[FakeTencentFaceID, str]) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values = {
            "tencent_secret_id": SECRET_ID,
            "tencent_secret_key": SECRET_KEY,
            "tencent_faceid_rule_id": RULE_ID,
            "tencent_faceid_endpoint": tencent_fake[1],
            **overrides,
        }
        return plain_settings(**values)

    return build


@pytest.fixture
def tencent(http: aiohttp.ClientSession, tencent_settings: Callable[..., Settings]) -> TencentFaceID:
    return TencentFaceID(http, tencent_settings())


async def open_tencent_page(http: aiohttp.ClientSession, url: str, result: str) -> aiohttp.ClientResponse:
    """The user's browser on FaceID's page, finishing with ``result``."""
    async with http.get(url, params={"result": result}, allow_redirects=False) as response:
        await response.read()
        return response


async def test_tencent_pass(http: aiohttp.ClientSession, tencent: TencentFaceID, tfake: FakeTencentFaceID) -> None:
    started = await tencent.start(request_for())
    [call] = tfake.calls("DetectAuth")
    assert call.params == {
        "RuleId": RULE_ID,
        "IdCard": SUBJECT.id_number,
        "Name": SUBJECT.name,
        "RedirectUrl": RETURN_URL,
        "Extra": "vx0000000001",
    }
    assert started.provider_ref in tfake.sessions
    assert started.url.endswith(f"/h5/{started.provider_ref}")

    async with http.get(started.url) as page:
        assert page.status == 200 and "通过" in await page.text()
    assert await tencent.query(started.provider_ref, request_for()) == Outcome(False, reason="not_completed")

    response = await open_tencent_page(http, started.url, "pass")
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert str(location.with_query(None)) == RETURN_URL and location.query["token"] == started.provider_ref

    outcome = await tencent.query(started.provider_ref, request_for())
    assert outcome == Outcome(True, name=SUBJECT.name, id_number=SUBJECT.id_number)
    # Only the text result is pulled: no ID card photos, frames or video to protect.
    assert tfake.calls("GetDetectInfoEnhanced")[-1].params == {
        "BizToken": started.provider_ref,
        "RuleId": RULE_ID,
        "InfoType": "1",
    }


async def test_tencent_failed_face_is_not_passed(
    http: aiohttp.ClientSession, tencent: TencentFaceID, tfake: FakeTencentFaceID
) -> None:
    started = await tencent.start(request_for())
    assert (await open_tencent_page(http, started.url, "fail")).status == 302
    outcome = await tencent.query(started.provider_ref, request_for())
    assert not outcome.passed and outcome.reason == "tencent_1004"
    assert (outcome.name, outcome.id_number) == ("", "")


async def test_tencent_other_person_is_reported_for_the_callers_check(
    tencent: TencentFaceID, tfake: FakeTencentFaceID
) -> None:
    started = await tencent.start(request_for())
    tfake.complete(started.provider_ref, "other")
    outcome = await tencent.query(started.provider_ref, request_for())
    assert outcome.passed
    assert outcome.id_number != SUBJECT.id_number and outcome.name != SUBJECT.name
    parse_id_number(outcome.id_number)  # a real person's number, reported as Tencent reports it


async def test_tencent_never_completed_then_expired(
    http: aiohttp.ClientSession, tencent: TencentFaceID, tfake: FakeTencentFaceID
) -> None:
    started = await tencent.start(request_for())
    assert await tencent.query(started.provider_ref, request_for()) == Outcome(False, reason="not_completed")
    tfake.sessions[started.provider_ref].created -= 7201
    assert await tencent.query(started.provider_ref, request_for()) == Outcome(False, reason="expired")
    assert (await open_tencent_page(http, started.url, "pass")).status == 409  # too late to finish


async def test_tencent_result_of_another_attempt_is_refused(tencent: TencentFaceID, tfake: FakeTencentFaceID) -> None:
    started = await tencent.start(request_for("vx0000000001"))
    tfake.complete(started.provider_ref, "pass")
    outcome = await tencent.query(started.provider_ref, request_for("vx0000000002"))
    assert outcome == Outcome(False, reason="tencent_other_attempt")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"tencent_secret_key": "not-the-key"}, "tencent_AuthFailure.SignatureFailure"),
        ({"tencent_secret_id": "AKIDsomeoneelse"}, "tencent_AuthFailure.SecretIdNotFound"),
        ({"tencent_faceid_rule_id": "99"}, "tencent_InvalidParameterValue.RuleIdNotExist"),
        ({"tencent_faceid_version": "2017-01-01"}, "tencent_NoSuchVersion"),
        ({"tencent_region": "ap-shanghai"}, "tencent_UnsupportedRegion"),
    ],
)
async def test_tencent_refusals_are_not_retryable(
    http: aiohttp.ClientSession,
    tencent_settings: Callable[..., Settings],
    tfake: FakeTencentFaceID,
    overrides: dict[str, str],
    code: str,
) -> None:
    provider = TencentFaceID(http, tencent_settings(**overrides))
    with pytest.raises(FaceError) as caught:
        await provider.start(request_for())
    assert caught.value.code == code and not caught.value.retryable
    assert tfake.sessions == {}


async def test_tencent_stale_clock_is_refused(
    http: aiohttp.ClientSession, tencent_settings: Callable[..., Settings], tfake: FakeTencentFaceID
) -> None:
    provider = TencentFaceID(http, tencent_settings(), clock=lambda: time.time() - 600)
    with pytest.raises(FaceError) as caught:
        await provider.start(request_for())
    assert caught.value.code == "tencent_AuthFailure.SignatureExpire" and not caught.value.retryable


async def test_tencent_unknown_biz_token_is_not_retryable(tencent: TencentFaceID) -> None:
    with pytest.raises(FaceError) as caught:
        await tencent.query("00000000-0000-0000-0000-000000000000", request_for())
    assert caught.value.code == "tencent_InvalidParameterValue.BizTokenIllegal" and not caught.value.retryable


@pytest.mark.parametrize("code", ["InternalError", "RequestLimitExceeded", "InternalError.UnKnown"])
async def test_tencent_busy_is_retryable(tencent: TencentFaceID, tfake: FakeTencentFaceID, code: str) -> None:
    started = await tencent.start(request_for())
    tfake.complete(started.provider_ref, "pass")
    tfake.fail("GetDetectInfoEnhanced", code)
    with pytest.raises(FaceError) as caught:
        await tencent.query(started.provider_ref, request_for())
    assert caught.value.retryable and caught.value.code == f"tencent_{code}"
    assert (await tencent.query(started.provider_ref, request_for())).passed  # and later it works


async def test_tencent_stall_beyond_the_timeout_is_retryable(
    http: aiohttp.ClientSession, tencent_settings: Callable[..., Settings], tfake: FakeTencentFaceID
) -> None:
    provider = TencentFaceID(http, tencent_settings(api_timeout_seconds=0.3))
    tfake.stall("DetectAuth", STALL_SECONDS)  # only the configured timeout can end the call
    with pytest.raises(FaceError) as caught:
        await provider.start(request_for())
    assert caught.value.code == "tencent_transport" and caught.value.retryable


async def test_tencent_unreachable_is_retryable(
    http: aiohttp.ClientSession, tencent_settings: Callable[..., Settings], unused_tcp_port: int
) -> None:
    provider = TencentFaceID(http, tencent_settings(tencent_faceid_endpoint=f"http://127.0.0.1:{unused_tcp_port}"))
    with pytest.raises(FaceError) as caught:
        await provider.query("whatever", request_for())
    assert caught.value.code == "tencent_transport" and caught.value.retryable


# --- WeChat mini-program face verification ------------------------------------------------------------------


def test_cert_hash_matches_wechats_documented_example() -> None:
    assert (
        cert_hash("IDENTITY_CARD", "张三", "310101199801011234")
        == "3c241f7ff324977aeb91f173bb2a7b06569e6fd784d5573db34a636d8671108b"
    )
    assert cert_hash("IDENTITY_CARD", "张四", "310101199801011234") != cert_hash(
        "IDENTITY_CARD", "张三", "310101199801011234"
    )


@pytest.fixture
async def wechat_api(make_settings: Callable[..., Settings], http: aiohttp.ClientSession) -> AsyncIterator[WeChatAPI]:
    """A WeChat API client on this test's database (its token row) against the fake."""
    settings = make_settings(api_timeout_seconds=0.3)
    engine = create_engine(settings)
    yield WeChatAPI(http, sessionmaker(engine), settings, Metrics())
    await engine.dispose()


@pytest.fixture
def mini(wechat_api: WeChatAPI) -> WeChatMiniFace:
    return WeChatMiniFace(wechat_api, page="pages/verify/face")


def verify_id_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["verify_id"][0]


async def test_wechat_mini_pass(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    started = await mini.start(request_for())
    assert started.url.startswith("pages/verify/face?verify_id=")
    assert verify_id_of(started.url) == started.provider_ref
    session = fake.face_sessions[started.provider_ref]
    assert (session.out_seq_no, session.openid) == ("vx0000000001", "o-user-1")
    assert (session.cert_type, session.cert_name, session.cert_no) == ("IDENTITY_CARD", SUBJECT.name, SUBJECT.id_number)
    # It went to /cityservice/face/identify/ (not /cgi-bin/) with a token the fake issued.
    [call] = [item for item in fake.received if item.path == "cityservice/face/identify/getverifyid"]
    assert call.token in fake.tokens

    assert await mini.query(started.provider_ref, request_for()) == Outcome(False, reason="not_completed")
    fake.complete_face(started.provider_ref, "pass")
    assert await mini.query(started.provider_ref, request_for()) == Outcome(True)
    queries = [item for item in fake.received if item.path == "cityservice/face/identify/queryverifyinfo"]
    assert len(queries) == 2 and queries[-1].body == {
        "verify_id": started.provider_ref,
        "out_seq_no": "vx0000000001",
        "cert_hash": cert_hash("IDENTITY_CARD", SUBJECT.name, SUBJECT.id_number),
        "openid": "o-user-1",
    }


@pytest.mark.parametrize(("result", "verify_ret"), [("fail", 10002), ("other", 10004), ("cancel", 90004)])
async def test_wechat_mini_not_passed(mini: WeChatMiniFace, fake: FakeWeChatAPI, result: str, verify_ret: int) -> None:
    started = await mini.start(request_for())
    fake.complete_face(started.provider_ref, result)
    outcome = await mini.query(started.provider_ref, request_for())
    assert outcome == Outcome(False, reason=f"wechat_verify_ret_{verify_ret}")


async def test_wechat_mini_identity_swapped_after_start_fails(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    started = await mini.start(request_for())
    fake.complete_face(started.provider_ref, "pass")
    # The same session queried for someone else (another name → another cert_hash), or another openid.
    someone_else = request_for(subject=Subject("李四", SUBJECT.id_number))
    assert await mini.query(started.provider_ref, someone_else) == Outcome(False, reason="wechat_84014")
    assert await mini.query(started.provider_ref, request_for(user="o-user-2")) == Outcome(False, reason="wechat_84014")
    assert await mini.query(started.provider_ref, request_for()) == Outcome(True)


async def test_wechat_mini_never_completed_then_expired(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    started = await mini.start(request_for())
    fake.face_sessions[started.provider_ref].created -= 3601
    with pytest.raises(ValueError, match="expired"):
        fake.complete_face(started.provider_ref, "pass")
    assert await mini.query(started.provider_ref, request_for()) == Outcome(False, reason="wechat_84002")
    assert await mini.query("no-such-verify-id", request_for()) == Outcome(False, reason="wechat_84001")


async def test_wechat_mini_start_refusals_are_not_retryable(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    await mini.start(request_for())
    with pytest.raises(FaceError) as caught:
        await mini.start(request_for())  # the same out_seq_no again
    assert caught.value.code == "wechat_84015" and not caught.value.retryable
    with pytest.raises(FaceError) as caught:
        await mini.start(request_for("vx1"))  # too short for out_seq_no: refused before any call
    assert caught.value.code == "wechat_bad_reference" and not caught.value.retryable
    fake.fail("cityservice/face/identify/getverifyid", 48001)
    with pytest.raises(FaceError) as caught:
        await mini.start(request_for("vx0000000009"))
    assert caught.value.code == "wechat_48001" and not caught.value.retryable


@pytest.mark.parametrize("errcode", [-1, 45009])
async def test_wechat_mini_busy_is_retryable(mini: WeChatMiniFace, fake: FakeWeChatAPI, errcode: int) -> None:
    started = await mini.start(request_for())
    fake.complete_face(started.provider_ref, "pass")
    fake.fail("cityservice/face/identify/queryverifyinfo", errcode)
    with pytest.raises(FaceError) as caught:
        await mini.query(started.provider_ref, request_for())
    assert caught.value.code == f"wechat_{errcode}" and caught.value.retryable
    assert await mini.query(started.provider_ref, request_for()) == Outcome(True)


async def test_wechat_mini_stall_is_retryable(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    started = await mini.start(request_for())
    fake.stall("cityservice/face/identify/queryverifyinfo", STALL_SECONDS)  # only the timeout ends it
    with pytest.raises(FaceError) as caught:
        await mini.query(started.provider_ref, request_for())
    assert caught.value.code == "wechat_-2" and caught.value.retryable


async def test_wechat_mini_token_is_checked_and_refreshed_once(mini: WeChatMiniFace, fake: FakeWeChatAPI) -> None:
    started = await mini.start(request_for())
    fetches = fake.token_fetches
    fake.expire_all_tokens()  # the token we hold is refused (40001): one refresh, then the call goes through
    fake.complete_face(started.provider_ref, "pass")
    assert await mini.query(started.provider_ref, request_for()) == Outcome(True)
    assert fake.token_fetches == fetches + 1


async def test_wechat_mini_wrong_secret_gets_no_token(
    make_settings: Callable[..., Settings], http: aiohttp.ClientSession, fake: FakeWeChatAPI
) -> None:
    settings = make_settings(wechat_secret="not-the-secret")
    engine = create_engine(settings)
    try:
        provider = WeChatMiniFace(WeChatAPI(http, sessionmaker(engine), settings, Metrics()))
        with pytest.raises(FaceError) as caught:
            await provider.start(request_for())
    finally:
        await engine.dispose()
    # WeChatAPI reports "no access token" as -3 (worth retrying once an operator fixes the secret).
    assert caught.value.code == "wechat_-3" and "40125" in str(caught.value)
    assert caught.value.retryable
    assert fake.face_sessions == {}


# --- Alipay identity verification ---------------------------------------------------------------------------


@pytest.fixture
def alipay_settings(keys_dir: Path, fake_alipay: tuple[FakeAlipayGateway, str]) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        return plain_settings(keys_dir=keys_dir, alipay_gateway=fake_alipay[1], **overrides)

    return build


@pytest.fixture
def afake(fake_alipay: tuple[FakeAlipayGateway, str]) -> FakeAlipayGateway:
    return fake_alipay[0]


@pytest.fixture
def certify(http: aiohttp.ClientSession, alipay_settings: Callable[..., Settings]) -> AlipayCertify:
    return AlipayCertify(AlipayAPI.from_settings(http, alipay_settings(), Metrics()))


async def choose_on_alipay_page(http: aiohttp.ClientSession, url: str, result: str) -> aiohttp.ClientResponse:
    """The user's browser: open the signed certify page, press one of its buttons."""
    async with http.get(URL(url, encoded=True)) as page:
        assert page.status == 200
        text = await page.text()
    action = re.search(r'<form method="post" action="([^"]+)">', text)
    assert action is not None, text
    async with http.post(urljoin(url, action[1]), data={"result": result}, allow_redirects=False) as response:
        await response.read()
        return response


async def test_alipay_pass(http: aiohttp.ClientSession, certify: AlipayCertify, afake: FakeAlipayGateway) -> None:
    started = await certify.start(request_for())
    [call] = afake.calls(CERTIFY_INITIALIZE)
    assert call.biz == {
        "outer_order_no": "vx0000000001",
        "biz_code": "FACE",
        "identity_param": {
            "identity_type": "CERT_INFO",
            "cert_type": "IDENTITY_CARD",
            "cert_name": SUBJECT.name,
            "cert_no": SUBJECT.id_number,
        },
        "merchant_config": {"return_url": RETURN_URL},
    }
    assert started.provider_ref in afake.certifications
    query = parse_qs(urlsplit(started.url).query)
    assert query["method"] == ["alipay.user.certify.open.certify"] and "sign" in query
    assert len(afake.received) == 1  # the page URL is built, not called

    assert await certify.query(started.provider_ref, request_for()) == Outcome(False, reason="alipay_not_passed")
    response = await choose_on_alipay_page(http, started.url, "pass")
    assert response.status == 303 and response.headers["Location"] == RETURN_URL
    assert [page.biz for page in afake.pages] == [{"certify_id": started.provider_ref}]
    assert await certify.query(started.provider_ref, request_for()) == Outcome(True)
    assert afake.calls(CERTIFY_QUERY)[-1].biz == {"certify_id": started.provider_ref}


@pytest.mark.parametrize("result", ["fail", "other"])
async def test_alipay_failed_or_someone_else_is_not_passed(
    http: aiohttp.ClientSession, certify: AlipayCertify, result: str
) -> None:
    started = await certify.start(request_for())
    response = await choose_on_alipay_page(http, started.url, result)
    assert response.status == 303 and response.headers["Location"] == RETURN_URL  # back on failure too
    assert await certify.query(started.provider_ref, request_for()) == Outcome(False, reason="alipay_not_passed")


async def test_alipay_never_certified_expires(certify: AlipayCertify, afake: FakeAlipayGateway) -> None:
    started = await certify.start(request_for())
    afake.certifications[started.provider_ref].created -= timedelta(hours=24)
    with pytest.raises(ValueError, match="expired"):
        afake.complete_certify(started.provider_ref, "pass")
    assert await certify.query(started.provider_ref, request_for()) == Outcome(False, reason="expired")


async def test_alipay_forged_answer_never_passes(certify: AlipayCertify, afake: FakeAlipayGateway) -> None:
    started = await certify.start(request_for())
    afake.complete_certify(started.provider_ref, "pass")
    afake.tamper(CERTIFY_QUERY)
    with pytest.raises(FaceError) as caught:
        await certify.query(started.provider_ref, request_for())
    assert caught.value.code == "alipay_response_signature_invalid" and not caught.value.retryable
    afake.leave_unsigned(CERTIFY_QUERY)
    with pytest.raises(FaceError) as caught:
        await certify.query(started.provider_ref, request_for())
    assert not caught.value.retryable


async def test_alipay_wrong_app_key_is_refused(
    http: aiohttp.ClientSession, alipay_settings: Callable[..., Settings], keys_dir: Path, afake: FakeAlipayGateway
) -> None:
    settings = alipay_settings()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    api = AlipayAPI(http, settings, Metrics(), other_key, alipay_sign.read_public_key(settings.alipay_public_key_path))
    with pytest.raises(FaceError) as caught:
        await AlipayCertify(api).start(request_for())
    assert caught.value.code == "alipay_40002_isv.invalid-signature" and not caught.value.retryable
    assert afake.certifications == {}


async def test_alipay_start_refusals(certify: AlipayCertify, afake: FakeAlipayGateway) -> None:
    await certify.start(request_for())
    with pytest.raises(FaceError) as caught:
        await certify.start(request_for())  # outer_order_no must be unique
    assert caught.value.code == "alipay_40004_OUTER_ORDER_NO_REPEATED" and not caught.value.retryable
    with pytest.raises(FaceError) as caught:
        await certify.start(request_for("x" * 33))
    assert caught.value.code == "alipay_bad_reference" and not caught.value.retryable
    assert len(afake.calls(CERTIFY_INITIALIZE)) == 1


async def test_alipay_busy_or_stalled_is_retryable(
    http: aiohttp.ClientSession, alipay_settings: Callable[..., Settings], afake: FakeAlipayGateway
) -> None:
    certify = AlipayCertify(AlipayAPI.from_settings(http, alipay_settings(api_timeout_seconds=0.3), Metrics()))
    afake.fail(CERTIFY_INITIALIZE, "20000", "isp.unknow-error")
    with pytest.raises(FaceError) as caught:
        await certify.start(request_for())
    assert caught.value.retryable
    started = await certify.start(request_for())
    afake.stall(CERTIFY_QUERY, STALL_SECONDS)  # only the configured timeout can end the call
    with pytest.raises(FaceError) as caught:
        await certify.query(started.provider_ref, request_for())
    assert caught.value.code == "alipay_transport" and caught.value.retryable


# --- the dev provider --------------------------------------------------------------------------------------


@pytest.fixture
async def dev_server(unused_tcp_port: int, aiohttp_server: AiohttpServer) -> tuple[DevFace, str]:
    """The simulated provider's page mounted as the service would mount it; (provider, public URL)."""
    base = f"http://127.0.0.1:{unused_tcp_port}"
    dev = DevFace(base)
    app = web.Application()
    app.add_subapp(MOUNT, dev.app())
    await aiohttp_server(app, port=unused_tcp_port)
    return dev, base


async def test_dev_page_flow(http: aiohttp.ClientSession, dev_server: tuple[DevFace, str]) -> None:
    dev, base = dev_server
    started = await dev.start(request_for())
    assert started.url == f"{base}{MOUNT}/{started.provider_ref}"
    async with http.get(started.url) as page:
        assert page.status == 200
        text = await page.text()
    assert "模拟人脸识别（仅用于开发演示）" in text and "张*" in text
    assert SUBJECT.name not in text and SUBJECT.id_number not in text
    assert all(label in text for label in ("通过", "不通过", "换一个人"))
    assert await dev.query(started.provider_ref, request_for()) == Outcome(False, reason="not_completed")

    async with http.post(started.url, data={"decision": "pass"}, allow_redirects=False) as response:
        assert response.status == 303 and response.headers["Location"] == RETURN_URL
    assert await dev.query(started.provider_ref, request_for()) == Outcome(
        True, name=SUBJECT.name, id_number=SUBJECT.id_number
    )
    async with http.post(started.url, data={"decision": "fail"}, allow_redirects=False) as response:
        assert response.status == 409  # decided once
    assert (await dev.query(started.provider_ref, request_for())).passed


async def test_dev_fail_other_and_refusals(http: aiohttp.ClientSession, dev_server: tuple[DevFace, str]) -> None:
    dev, base = dev_server
    failed = await dev.start(request_for("vx0000000001"))
    other = await dev.start(request_for("vx0000000002"))
    async with http.post(failed.url, data={"decision": "fail"}, allow_redirects=False) as response:
        assert response.status == 303
    async with http.post(other.url, data={"decision": "other"}, allow_redirects=False) as response:
        assert response.status == 303
    assert await dev.query(failed.provider_ref, request_for("vx0000000001")) == Outcome(False, reason="dev_failed")
    someone = await dev.query(other.provider_ref, request_for("vx0000000002"))
    assert someone.passed and someone.name == SUBJECT.name
    assert someone.id_number != SUBJECT.id_number and parse_id_number(someone.id_number).value == someone.id_number
    # Another attempt's result proves nothing; unknown links and decisions are refused.
    assert await dev.query(other.provider_ref, request_for("vx0000000001")) == Outcome(
        False, reason="dev_other_attempt"
    )
    assert await dev.query("nope", request_for()) == Outcome(False, reason="expired")
    async with http.get(f"{base}{MOUNT}/nope") as page:
        assert page.status == 404
    pending = await dev.start(request_for("vx0000000003"))
    async with http.post(pending.url, data={"decision": "maybe"}, allow_redirects=False) as response:
        assert response.status == 400
    assert dev.attempts[pending.provider_ref].decision is None


# --- configuration -----------------------------------------------------------------------------------------


def test_default_age_tiers_are_all_face() -> None:
    settings = plain_settings()
    assert [method_for_age(settings, age) for age in (0, 16, 17, 59, 60, 120)] == ["face"] * 6


def test_age_tiers_from_the_environment() -> None:
    settings = load_settings(
        environ={"VAXBOT_FACE_AGE_TIERS": "0-16:birth_certificate, 17-59:face, 60-:household"}, env_file=NO_ENV_FILE
    )
    methods = {age: method_for_age(settings, age) for age in (0, 16, 17, 59, 60, 99)}
    assert methods == {
        0: "birth_certificate",
        16: "birth_certificate",
        17: "face",
        59: "face",
        60: "household",
        99: "household",
    }
    with pytest.raises(ValueError):
        method_for_age(settings, -1)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "not low-high:method"),
        ("0-16:face;17-:face", "not low-high:method"),
        ("1-16:face,17-:face", "should start at 0"),
        ("0-16:face,18-:face", "should start at 17"),
        ("0-16:face,16-:face", "should start at 17"),
        ("0-16:face,17-59:face", "open-ended"),
        ("0-16:face,17-:face,60-:household", "follows the open-ended tier"),
        ("0-16:face,17-:passport", "unknown method"),
        ("0-16:face,30-17:face,18-:face", "ends before it starts"),
    ],
)
def test_malformed_age_tiers_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        AgeTiers.parse(text)
    with pytest.raises(ConfigError, match="VAXBOT_FACE_AGE_TIERS"):
        build_face_providers(plain_settings(face_age_tiers=text), None, None, None)  # type: ignore[arg-type]


PRODUCTION = {
    "env": "production",
    "public_url": "https://vaxbot.example.org",
    "tencent_faceid_endpoint": "https://faceid.tencentcloudapi.com",
}


def face_problems(**overrides: Any) -> list[str]:
    settings = plain_settings(**{**PRODUCTION, **overrides})
    return [
        problem for problem in settings.production_problems(dev_keys=False) if "FACE" in problem or "TENCENT" in problem
    ]


def test_production_refuses_dev_face_providers() -> None:
    problems = face_problems(face_provider_wechat="dev", face_provider_alipay="dev")
    assert any("VAXBOT_FACE_PROVIDER_WECHAT is dev" in problem for problem in problems)
    assert any("VAXBOT_FACE_PROVIDER_ALIPAY is dev" in problem for problem in problems)
    # With Alipay off its provider does not matter.
    problems = face_problems(face_provider_wechat="wechat_mini", face_provider_alipay="dev", alipay_appid="")
    assert problems == []


def test_production_refuses_tencent_without_credentials() -> None:
    problems = face_problems(face_provider_wechat="tencent", face_provider_alipay="alipay")
    assert len(problems) == 3
    assert all(name in " ".join(problems) for name in ("SECRET_ID", "SECRET_KEY", "RULE_ID"))
    complete = {"tencent_secret_id": "AKID1", "tencent_secret_key": "k", "tencent_faceid_rule_id": "1"}
    assert face_problems(face_provider_wechat="tencent", face_provider_alipay="alipay", **complete) == []
    insecure = face_problems(
        face_provider_wechat="tencent",
        face_provider_alipay="alipay",
        tencent_faceid_endpoint="http://faceid.tencentcloudapi.com",
        **complete,
    )
    assert insecure == ["VAXBOT_TENCENT_FACEID_ENDPOINT must be https in production"]


def test_unset_provider_is_dev_in_development_and_refused_in_production() -> None:
    assert provider_name_for(plain_settings(), "wechat") == "dev"
    assert provider_name_for(plain_settings(face_provider_alipay="alipay"), "alipay") == "alipay"
    production = plain_settings(**PRODUCTION, face_provider_alipay="alipay")
    with pytest.raises(ConfigError, match="VAXBOT_FACE_PROVIDER_WECHAT is not set"):
        provider_name_for(production, "wechat")
    with pytest.raises(ConfigError, match="VAXBOT_FACE_PROVIDER_WECHAT"):
        build_face_providers(production, None, None, None)  # type: ignore[arg-type]


def unbound_wechat_api(http: aiohttp.ClientSession, settings: Settings) -> WeChatAPI:
    return WeChatAPI(http, async_sessionmaker(), settings, Metrics())


async def test_build_face_providers(
    http: aiohttp.ClientSession, keys_dir: Path, fake_alipay: tuple[FakeAlipayGateway, str]
) -> None:
    settings = plain_settings(keys_dir=keys_dir)
    wechat_api = unbound_wechat_api(http, settings)
    alipay_api = AlipayAPI.from_settings(http, settings, Metrics())

    providers = build_face_providers(settings, http, wechat_api, alipay_api)
    assert set(providers) == {"wechat", "alipay"}
    assert providers["wechat"] is providers["alipay"] is dev_face(providers)  # one page, mounted once
    assert by_provider_name(providers) == {"dev": providers["wechat"]}

    configured = plain_settings(
        keys_dir=keys_dir,
        face_provider_wechat="tencent",
        face_provider_alipay="alipay",
        tencent_secret_id="AKID1",
        tencent_secret_key="k",
        tencent_faceid_rule_id="1",
    )
    providers = build_face_providers(configured, http, wechat_api, alipay_api)
    assert isinstance(providers["wechat"], TencentFaceID) and isinstance(providers["alipay"], AlipayCertify)
    assert dev_face(providers) is None
    assert set(by_provider_name(providers)) == {"tencent", "alipay"}

    mini_only = plain_settings(face_provider_wechat="wechat_mini", wechat_face_page="pages/x/y", alipay_appid="")
    providers = build_face_providers(mini_only, http, wechat_api, None)
    assert set(providers) == {"wechat"} and isinstance(providers["wechat"], WeChatMiniFace)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"face_provider_wechat": "alipay"}, "VAXBOT_FACE_PROVIDER_WECHAT must be one of tencent, wechat_mini, dev"),
        ({"face_provider_alipay": "tencent"}, "VAXBOT_FACE_PROVIDER_ALIPAY must be one of alipay, dev"),
        ({"face_provider_wechat": "tencent", "tencent_secret_id": "AKID1"}, "VAXBOT_TENCENT_SECRET_KEY"),
        ({"face_provider_alipay": "alipay"}, "no API client"),
        ({**PRODUCTION, "face_provider_wechat": "dev", "face_provider_alipay": "alipay"}, "refused in production"),
    ],
)
def test_build_face_providers_refusals(overrides: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        build_face_providers(plain_settings(**overrides), None, None, None)  # type: ignore[arg-type]


def test_face_settings_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "VAXBOT_FACE_PROVIDER_WECHAT": "tencent",
            "VAXBOT_FACE_PROVIDER_ALIPAY": "alipay",
            "VAXBOT_FACE_LINK_TTL_SECONDS": "600",
            "VAXBOT_TENCENT_REGION": "ap-shanghai",
            "VAXBOT_WECHAT_FACE_PAGE": "pages/id/face",
        },
        env_file=NO_ENV_FILE,
    )
    assert (settings.face_provider_wechat, settings.face_provider_alipay) == ("tencent", "alipay")
    assert settings.face_link_ttl_seconds == 600
    assert (settings.tencent_region, settings.wechat_face_page) == ("ap-shanghai", "pages/id/face")
    assert settings.tencent_faceid_endpoint == "https://faceid.tencentcloudapi.com"
    assert DEV_ALIPAY_APPID == settings.alipay_appid
