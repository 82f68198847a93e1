"""The Alipay gateway client and sender against the fake Alipay gateway on loopback.

Signatures both ways (ours checked by the fake with the SDK's own sign-content rule, the fake's checked
by us over the raw response text), every call, the customer-service windows, error mapping, and the
outbox worker delivering end to end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from alembic import command
from alipay.aop.api.request.AlipayOpenAppMiniTemplatemessageSendRequest import (
    AlipayOpenAppMiniTemplatemessageSendRequest,
)
from alipay.aop.api.request.AlipayOpenPublicMessageCustomSendRequest import AlipayOpenPublicMessageCustomSendRequest
from alipay.aop.api.request.AlipayUserCertifyOpenCertifyRequest import AlipayUserCertifyOpenCertifyRequest
from alipay.aop.api.util.SignatureUtils import get_sign_content, sign_with_rsa2, verify_with_rsa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pytest_aiohttp import AiohttpServer
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from yarl import URL

from bot.chat.menu import MENU, alipay_menu
from bot.core.chinatime import CHINA, china_today
from bot.core.config import DEV_ALIPAY_APPID, Settings, load_settings
from bot.core.db import alembic_config, create_engine, sessionmaker
from bot.core.metrics import Metrics
from bot.dev.fakes.alipay_gateway import (
    CUSTOM_SEND,
    IMAGE_UPLOAD,
    MINI_SEND,
    SINGLE_SEND,
    FakeAlipayGateway,
)
from bot.outbox.queue import OutboxWorker, SendError, enqueue
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.client import TIMESTAMP_FORMAT, AlipayAPI, AlipayAPIError, raw_members, response_key
from bot.platforms.alipay.sender import AlipaySender, classify
from models import OutboxMessage, PlatformAccount, utcnow
from tests.helpers import STALL_SECONDS
from tests.test_show_code import read_qr

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
USER = "2088000000000001"
Sessions = async_sessionmaker[AsyncSession]


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture
async def gateway(keys_dir: Path, aiohttp_server: AiohttpServer) -> tuple[FakeAlipayGateway, str]:
    """The fake Alipay gateway on loopback: (fake, gateway URL)."""
    fake = FakeAlipayGateway(
        DEV_ALIPAY_APPID,
        alipay_sign.read_public_key(keys_dir / "alipay_app_public.pem"),
        alipay_sign.read_private_key(keys_dir / "alipay_platform_private.pem"),
    )
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/gateway.do"))


@pytest.fixture
def fake(gateway: tuple[FakeAlipayGateway, str]) -> FakeAlipayGateway:
    return gateway[0]


@pytest.fixture
def gateway_url(gateway: tuple[FakeAlipayGateway, str]) -> str:
    return gateway[1]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def plain_settings(keys_dir: Path, gateway_url: str, **overrides: Any) -> Settings:
    """Settings without a database, for the tests that only talk to the gateway."""
    return load_settings(
        environ={},
        env_file=Path("/nonexistent/.env"),
        env="test",
        keys_dir=keys_dir,
        alipay_gateway=gateway_url,
        **overrides,
    )


@pytest.fixture
def api(http: aiohttp.ClientSession, keys_dir: Path, gateway_url: str) -> AlipayAPI:
    return AlipayAPI.from_settings(http, plain_settings(keys_dir, gateway_url), Metrics())


@pytest.fixture
async def db_settings(make_settings: Callable[..., Settings], gateway_url: str) -> Settings:
    return make_settings(alipay_gateway=gateway_url)


@pytest.fixture
async def sessions(db_settings: Settings) -> AsyncIterator[Sessions]:
    engine = create_engine(db_settings)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def db_api(http: aiohttp.ClientSession, db_settings: Settings) -> AlipayAPI:
    return AlipayAPI.from_settings(http, db_settings, Metrics())


@pytest.fixture
def sender(db_api: AlipayAPI, sessions: Sessions) -> AlipaySender:
    return AlipaySender(db_api, sessions)


# --- helpers ------------------------------------------------------------------------------------------


def row(kind: str, payload: dict[str, Any], recipient: str = USER) -> OutboxMessage:
    """An outbox row as the worker hands it to the sender (not stored: the sender only reads it)."""
    return OutboxMessage(
        id=1, platform="alipay", app_id=DEV_ALIPAY_APPID, recipient=recipient, kind=kind, payload=payload
    )


async def add_account(
    sessions: Sessions,
    kind: str | None,
    ago: timedelta = timedelta(minutes=1),
    *,
    user: str = USER,
    enter_sent_on: date | None = None,
) -> None:
    """The user's account row, as the inbound side leaves it after their last interaction."""
    async with sessions() as session, session.begin():
        session.add(
            PlatformAccount(
                platform="alipay",
                app_id=DEV_ALIPAY_APPID,
                user_id=user,
                following=True,
                last_inbound_at=utcnow() - ago,
                last_interaction_kind=kind,
                enter_sent_on=enter_sent_on,
            )
        )


async def account(sessions: Sessions, user: str = USER) -> PlatformAccount:
    async with sessions() as session:
        found = (await session.scalars(select(PlatformAccount).where(PlatformAccount.user_id == user))).first()
    assert found is not None
    return found


def pkcs1_body(keys_dir: Path) -> str:
    """Our private key as the SDK wants it: the PKCS#1 base64 body without markers."""
    pem = (keys_dir / "alipay_app_private.pem").read_text(encoding="ascii")
    assert "BEGIN RSA PRIVATE KEY" in pem
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def platform_key(keys_dir: Path) -> rsa.RSAPrivateKey:
    return alipay_sign.read_private_key(keys_dir / "alipay_platform_private.pem")


def answer(body: bytes) -> tuple[str, dict[str, Any]]:
    """(the envelope's key, the response object) of a gateway answer."""
    document = json.loads(body)
    [key] = [name for name in document if name.endswith("_response")]
    return key, document[key]


async def post_params(http: aiohttp.ClientSession, url: str, params: dict[str, str]) -> bytes:
    """POST parameters as our client does: biz_content in the form body, the rest in the query string."""
    body = {key: value for key, value in params.items() if key == "biz_content"}
    query = {key: value for key, value in params.items() if key != "biz_content"}
    async with http.post(
        URL(f"{url}?{urlencode(query)}", encoded=True),
        data=urlencode(body).encode("ascii"),
        headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
    ) as response:
        assert response.status == 200
        return await response.read()


def text_request(to_user_id: str = USER, content: str = "你好") -> AlipayOpenPublicMessageCustomSendRequest:
    request = AlipayOpenPublicMessageCustomSendRequest()
    request.biz_content = {"to_user_id": to_user_id, "msg_type": "text", "text": {"content": content}, "chat": "1"}
    return request


def signed(api: AlipayAPI, request: Any, now: datetime | None = None) -> dict[str, str]:
    common, business, _ = api.signed_params(request, now)
    return {**common, **business}


def resign(params: dict[str, str], key: rsa.RSAPrivateKey) -> dict[str, str]:
    unsigned = {name: value for name, value in params.items() if name != "sign"}
    return {**unsigned, "sign": alipay_sign.sign(key, get_sign_content(unsigned))}


# --- signing: the SDK's rule and signature, key forms ------------------------------------------------

param_values = st.one_of(st.text(), st.integers(), st.lists(st.text(), max_size=3))


@given(st.dictionaries(st.text(min_size=1), param_values, max_size=12))
def test_sign_content_equals_the_sdk_rule(params: dict[str, Any]) -> None:
    without_sign = {key: value for key, value in params.items() if key != "sign"}
    assert alipay_sign.sign_content(params) == get_sign_content(without_sign)


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.text(max_size=200))
def test_signature_is_byte_identical_to_the_sdk(keys_dir: Path, content: str) -> None:
    key = alipay_sign.read_private_key(keys_dir / "alipay_app_private.pem")
    assert alipay_sign.sign(key, content) == sign_with_rsa2(pkcs1_body(keys_dir), content, "utf-8")


def test_private_key_forms_all_load_and_sign_alike(keys_dir: Path) -> None:
    key = alipay_sign.read_private_key(keys_dir / "alipay_app_private.pem")
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert "BEGIN RSA PRIVATE KEY" in pkcs1 and "BEGIN PRIVATE KEY" in pkcs8

    def bare(pem: str) -> str:
        return "".join(line for line in pem.splitlines() if not line.startswith("-----"))

    expected = alipay_sign.sign(key, "a=1&b=支付宝")
    for form in (pkcs1, pkcs8, bare(pkcs1), bare(pkcs8)):
        assert alipay_sign.sign(alipay_sign.load_private_key(form), "a=1&b=支付宝") == expected
    public_pem = (keys_dir / "alipay_app_public.pem").read_text(encoding="ascii")
    for form in (public_pem, bare(public_pem)):
        assert alipay_sign.verify(alipay_sign.load_public_key(form), "a=1&b=支付宝", expected)
    with pytest.raises(alipay_sign.AlipayKeyError):
        alipay_sign.load_private_key("bm90IGEga2V5")


def test_signed_params_follow_the_sdk_and_china_time(api: AlipayAPI, keys_dir: Path) -> None:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/Los_Angeles"  # the machine's zone must not matter
    time.tzset()
    try:
        common, business, files = api.signed_params(text_request())
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    assert files == {}
    assert set(business) == {"biz_content"}
    assert {key: common[key] for key in ("app_id", "method", "format", "charset", "sign_type", "version")} == {
        "app_id": DEV_ALIPAY_APPID,
        "method": CUSTOM_SEND,
        "format": "JSON",
        "charset": "utf-8",
        "sign_type": "RSA2",
        "version": "1.0",
    }
    stamp = datetime.strptime(common["timestamp"], TIMESTAMP_FORMAT).replace(tzinfo=CHINA)
    assert abs((stamp - utcnow()).total_seconds()) < 5
    # The signature is over the SDK's sign content of everything but sign, and verifies with the SDK.
    everything = {**common, **business}
    content = get_sign_content({key: value for key, value in everything.items() if key != "sign"})
    public_body = alipay_sign.public_key_body(alipay_sign.read_public_key(keys_dir / "alipay_app_public.pem"))
    assert verify_with_rsa(public_body, content.encode("utf-8"), common["sign"])


# --- our requests, checked by the fake -----------------------------------------------------------------


async def test_a_good_call(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    fake.note_interaction(USER, "chat")
    result = await api.custom_send(USER, text="您的接种证已生成", event_type=None, chat=True)
    assert result["code"] == "10000" and result["msg"] == "Success"
    assert fake.texts_to(USER) == ["您的接种证已生成"]
    [call] = fake.sent_to(USER)
    assert call.biz == {"to_user_id": USER, "msg_type": "text", "text": {"content": "您的接种证已生成"}, "chat": "1"}
    assert call.params["app_id"] == DEV_ALIPAY_APPID and call.params["sign_type"] == "RSA2"


async def test_inbox_lists_what_a_user_received(
    api: AlipayAPI, fake: FakeAlipayGateway, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    fake.note_interaction(USER, "chat")
    await api.custom_send(USER, text="给这位用户", event_type=None, chat=True)
    fake.note_interaction("2088000000000002", "chat")
    await api.custom_send("2088000000000002", text="给另一位", event_type=None, chat=True)
    inbox = gateway_url.removesuffix("/gateway.do") + "/inbox"
    async with http.get(inbox, params={"user": USER}) as response:
        listing = await response.json()
    assert [item["biz"]["text"]["content"] for item in listing["items"]] == ["给这位用户"]
    assert listing["next"] == 2
    async with http.get(inbox, params={"user": USER, "after": "1"}) as response:
        assert (await response.json())["items"] == []
    with pytest.raises(ValueError):
        fake.note_interaction(USER, "enter")  # Alipay's window kinds only: follow, click, chat, enter_ppchat


async def test_signature_by_another_key_is_refused(
    http: aiohttp.ClientSession, keys_dir: Path, gateway_url: str, fake: FakeAlipayGateway
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    impostor = AlipayAPI(
        http,
        plain_settings(keys_dir, gateway_url),
        Metrics(),
        other,
        alipay_sign.read_public_key(keys_dir / "alipay_platform_public.pem"),
    )
    fake.note_interaction(USER, "chat")
    with pytest.raises(AlipayAPIError) as caught:
        await impostor.custom_send(USER, text="hello", event_type=None, chat=True)
    assert caught.value.code == "40002" and caught.value.sub_code == "isv.invalid-signature"
    # Alipay tells what it signed: the sign content, so a mismatch can be found.
    assert f"method={CUSTOM_SEND}" in caught.value.sub_msg
    assert fake.received == []
    assert not classify(caught.value).retryable


async def test_tampered_request_is_refused(
    api: AlipayAPI, http: aiohttp.ClientSession, gateway_url: str, fake: FakeAlipayGateway
) -> None:
    fake.note_interaction(USER, "chat")
    params = signed(api, text_request(content="原文"))
    params["biz_content"] = params["biz_content"].replace("原文", "篡改")
    _, content = answer(await post_params(http, gateway_url, params))
    assert (content["code"], content["sub_code"]) == ("40002", "isv.invalid-signature")
    untouched = signed(api, text_request(content="原文"))
    _, content = answer(await post_params(http, gateway_url, untouched))
    assert content["code"] == "10000"
    assert fake.texts_to(USER) == ["原文"]


STALE = "stale"


@pytest.mark.parametrize(
    ("change", "code", "sub_code", "envelope"),
    [
        ({"app_id": "2099000000000002"}, "40002", "isv.invalid-app-id", "error_response"),
        ({"app_id": None}, "40001", "isv.missing-app-id", "error_response"),
        ({"method": "alipay.no.such.method"}, "40002", "isv.invalid-method", "error_response"),
        ({"sign_type": "RSA"}, "40002", "isv.invalid-signature-type", response_key(CUSTOM_SEND)),
        ({"charset": "latin-1"}, "40002", "isv.invalid-charset", response_key(CUSTOM_SEND)),
        ({"version": "2.0"}, "40002", "isv.invalid-parameter", response_key(CUSTOM_SEND)),
        ({"format": "XML"}, "40002", "isv.invalid-format", response_key(CUSTOM_SEND)),
        ({"timestamp": "2026/01/01 08:00:00"}, "40002", "isv.invalid-timestamp", response_key(CUSTOM_SEND)),
        ({"timestamp": STALE}, "40002", "isv.invalid-timestamp", response_key(CUSTOM_SEND)),
        ({"timestamp": None}, "40001", "isv.missing-timestamp", response_key(CUSTOM_SEND)),
    ],
)
async def test_fake_checks_the_common_parameters(
    api: AlipayAPI,
    http: aiohttp.ClientSession,
    gateway_url: str,
    fake: FakeAlipayGateway,
    keys_dir: Path,
    change: dict[str, str | None],
    code: str,
    sub_code: str,
    envelope: str,
) -> None:
    fake.note_interaction(USER, "chat")
    params = signed(api, text_request())
    for name, value in change.items():
        if value is None:
            params.pop(name)
        elif value == STALE:
            params[name] = (datetime.now(CHINA) - timedelta(minutes=20)).strftime(TIMESTAMP_FORMAT)
        else:
            params[name] = value
    # Re-signed with our real key: only the changed parameter is wrong.
    params = resign(params, alipay_sign.read_private_key(keys_dir / "alipay_app_private.pem"))
    key, content = answer(await post_params(http, gateway_url, params))
    assert (content["code"], content["sub_code"], key) == (code, sub_code, envelope)
    assert fake.received == []


async def test_a_request_without_sign_is_refused(
    api: AlipayAPI, http: aiohttp.ClientSession, gateway_url: str, fake: FakeAlipayGateway
) -> None:
    params = signed(api, text_request())
    del params["sign"]
    _, content = answer(await post_params(http, gateway_url, params))
    assert (content["code"], content["sub_code"]) == ("40001", "isv.missing-signature")


async def test_timestamp_within_15_minutes_is_accepted(
    api: AlipayAPI, http: aiohttp.ClientSession, gateway_url: str, fake: FakeAlipayGateway
) -> None:
    fake.note_interaction(USER, "chat")
    params = signed(api, text_request(), now=datetime.now(CHINA) - timedelta(minutes=14))
    _, content = answer(await post_params(http, gateway_url, params))
    assert content["code"] == "10000"


# --- the fake's answers, checked by us -----------------------------------------------------------------


async def test_response_verified_over_the_raw_text(api: AlipayAPI, fake: FakeAlipayGateway, keys_dir: Path) -> None:
    tricky = {
        "note": 'quote " backslash \\ braces {}} 中文 slash / end',
        "nested": {"a": {"b": ["}", "{", {"c": '"}"'}]}, "empty": {}},
    }
    fake.response_fields[CUSTOM_SEND] = tricky
    fake.indent = 2  # whitespace and newlines inside the signed object
    fake.note_interaction(USER, "chat")
    result = await api.custom_send(USER, text="hi", event_type=None, chat=True)
    assert result["note"] == tricky["note"] and result["nested"] == tricky["nested"]
    # A re-serialised copy would not verify: only the exact text does.
    compact = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
    platform_public = alipay_sign.read_public_key(keys_dir / "alipay_platform_public.pem")
    signature = alipay_sign.sign(platform_key(keys_dir), compact)
    assert alipay_sign.verify(platform_public, compact, signature)
    assert not alipay_sign.verify(platform_public, json.dumps(result, ensure_ascii=False, indent=2), signature)


async def test_tampered_response_is_refused_and_not_retried(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    fake.note_interaction(USER, "chat")
    fake.tamper(CUSTOM_SEND)
    with pytest.raises(AlipayAPIError) as caught:
        await api.custom_send(USER, text="hi", event_type=None, chat=True)
    assert caught.value.code == "response_signature_invalid"
    assert len(fake.sent_to(USER)) == 1  # the call went through: retrying could send it twice
    error = classify(caught.value)
    assert not error.retryable and error.code == "alipay_response_signature_invalid"
    assert api._metrics.api_errors.labels("alipay", "response_signature_invalid")._value.get() == 1


async def test_unsigned_success_is_refused(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    fake.note_interaction(USER, "chat")
    fake.leave_unsigned(CUSTOM_SEND)
    with pytest.raises(AlipayAPIError) as caught:
        await api.custom_send(USER, text="hi", event_type=None, chat=True)
    assert caught.value.code == "response_signature_invalid"


async def test_unsigned_error_is_read_as_an_error(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    fake.fail(CUSTOM_SEND, "20000", "isp.unknow-error")
    fake.leave_unsigned(CUSTOM_SEND)
    with pytest.raises(AlipayAPIError) as caught:
        await api.custom_send(USER, text="hi", event_type=None, chat=True)
    assert (caught.value.code, caught.value.sub_code) == ("20000", "isp.unknow-error")


async def test_unknown_method_gets_the_unsigned_error_response(api: AlipayAPI) -> None:
    class NoSuchMethod:
        def get_params(self) -> dict[str, Any]:
            return {"method": "alipay.no.such.method", "version": "1.0", "biz_content": "{}"}

        def get_multipart_params(self) -> dict[str, Any]:
            return {}

    with pytest.raises(AlipayAPIError) as caught:
        await api.execute(NoSuchMethod())
    assert (caught.value.code, caught.value.sub_code) == ("40002", "isv.invalid-method")


def test_open_response_reads_only_the_top_level_object(api: AlipayAPI, keys_dir: Path) -> None:
    key = platform_key(keys_dir)
    inner = '{"code":"10000","msg":"Success","text":"a \\"}\\" \\\\","list":[{"x":"]"}]}'
    decoy = '{"alipay_a_b_response":{"code":"10000","msg":"forged"}}'
    body = '{"decoy":' + decoy + ',"alipay_a_b_response":' + inner + ',"sign":"' + alipay_sign.sign(key, inner) + '"}'
    assert api.open_response("alipay.a.b", body.encode()) == json.loads(inner)
    # The same signature over anything else fails.
    forged = body.replace('"msg":"Success"', '"msg":"Succes5"')
    with pytest.raises(AlipayAPIError) as caught:
        api.open_response("alipay.a.b", forged.encode())
    assert caught.value.code == "response_signature_invalid"
    with pytest.raises(AlipayAPIError) as bad:
        api.open_response("alipay.a.b", b"<html>busy</html>")
    assert bad.value.code == "bad_response" and classify(bad.value).retryable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a":1}', {"a": "1"}),
        (
            ' { "a" : { "b" : "}" } , "c" : [1, {"d": "\\\\"}] , "e":"\\"{"} ',
            {"a": '{ "b" : "}" }', "c": '[1, {"d": "\\\\"}]', "e": '"\\"{"'},
        ),
        ("{}", {}),
    ],
)
def test_raw_members(text: str, expected: dict[str, str]) -> None:
    assert raw_members(text) == expected


@pytest.mark.parametrize("text", ['{"a":1', '{"a":"1}', "[1]", '{"a" 1}', '{"a":{"b":1}', '{"a":1} x', ""])
def test_raw_members_refuses_what_is_not_one_object(text: str) -> None:
    with pytest.raises(ValueError):
        raw_members(text)


# --- the calls ---------------------------------------------------------------------------------------------


async def test_template_keywords_beyond_two_arrive(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    data = {
        "first": "您有一条接种提醒",
        "keyword1": "张**",
        "keyword2": "百白破疫苗",
        "keyword3": "2026-12-01",
        "keyword4": {"value": "南通市崇川区接种门诊", "color": "#173177"},
        "remark": "请携带接种证",
    }
    payload = {"template_id": "tpl-remind", "data": data, "url": "https://vax.example.cn/r/1", "head_color": "#85be53"}
    await sender.send(row("template", payload))
    [call] = fake.calls(SINGLE_SEND)
    assert call.biz["to_user_id"] == USER
    template = call.biz["template"]
    assert template["template_id"] == "tpl-remind"
    assert template["context"] == {
        "head_color": "#85be53",
        "url": "https://vax.example.cn/r/1",
        "action_name": "查看详情",
        "first": {"value": "您有一条接种提醒"},
        "keyword1": {"value": "张**"},
        "keyword2": {"value": "百白破疫苗"},
        "keyword3": {"value": "2026-12-01"},
        "keyword4": {"value": "南通市崇川区接种门诊", "color": "#173177"},
        "remark": {"value": "请携带接种证"},
    }


async def test_template_needs_no_window(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    await sender.send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}, recipient="2088-nobody"))
    assert len(fake.calls(SINGLE_SEND)) == 1


async def test_mini_template_message(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    limit = "一" * 50
    payload = {"user_template_id": "ut-1", "page": "pages/index?id=1", "data": {"keyword1": limit, "keyword2": "x"}}
    await sender.send(row("mini_template", payload))
    [call] = fake.calls(MINI_SEND)
    assert call.biz["user_template_id"] == "ut-1" and call.biz["page"] == "pages/index?id=1"
    assert isinstance(call.biz["data"], str)
    assert json.loads(call.biz["data"]) == {"keyword1": {"value": limit}, "keyword2": {"value": "x"}}


async def test_mini_template_over_50_characters_is_refused_locally(
    sender: AlipaySender, fake: FakeAlipayGateway
) -> None:
    payload = {"user_template_id": "ut-1", "page": "pages/index", "data": {"keyword1": "一" * 51}}
    with pytest.raises(SendError) as caught:
        await sender.send(row("mini_template", payload))
    assert caught.value.code == "alipay_40004" and not caught.value.retryable
    assert "USER_KEYWORD_LENGTH_ERROR" in str(caught.value)
    assert fake.received == []


async def test_fake_refuses_mini_template_over_50_characters(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    request = AlipayOpenAppMiniTemplatemessageSendRequest()
    request.biz_content = {
        "to_user_id": USER,
        "user_template_id": "ut-1",
        "page": "pages/index",
        "data": json.dumps({"keyword1": {"value": "一" * 51}}, ensure_ascii=False),
    }
    with pytest.raises(AlipayAPIError) as caught:
        await api.execute(request)
    assert (caught.value.code, caught.value.sub_code) == ("40004", "USER_KEYWORD_LENGTH_ERROR")
    assert fake.received == []


async def test_image_upload_is_multipart_and_signed(
    api: AlipayAPI, fake: FakeAlipayGateway, http: aiohttp.ClientSession, gateway_url: str
) -> None:
    image_url = await api.upload_image(PNG, "code.png")
    [call] = fake.calls(IMAGE_UPLOAD)
    assert call.files == {"image_content": PNG}
    assert call.params["image_type"] == "png" and call.params["image_name"] == "code"
    assert "image_content" not in call.params
    assert image_url.startswith(gateway_url.removesuffix("/gateway.do") + "/images/")
    async with http.get(image_url) as response:
        assert await response.read() == PNG


async def test_upload_of_what_is_not_an_image_is_refused(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    with pytest.raises(AlipayAPIError) as caught:
        await api.upload_image(b"GIF89a not a png", "code.png")
    assert (caught.value.code, caught.value.sub_code) == ("40002", "isv.invalid-file-extension")
    assert fake.images == {}


async def test_create_menu(api: AlipayAPI, fake: FakeAlipayGateway) -> None:
    menu = alipay_menu()
    await api.create_menu(menu)
    assert fake.menu == menu
    keys = [sub["action_param"] for button in menu["button"] for sub in button["sub_button"]]
    assert keys == [key.value for _, items in MENU for _, key in items]
    assert {sub["action_type"] for button in menu["button"] for sub in button["sub_button"]} == {"out"}


async def test_page_url_is_signed(api: AlipayAPI, http: aiohttp.ClientSession, fake: FakeAlipayGateway) -> None:
    request = AlipayUserCertifyOpenCertifyRequest()
    request.biz_content = {"certify_id": "ZM201612013000000242400404124269"}
    url = api.page_url(request)
    async with http.get(URL(url, encoded=True)) as response:
        assert response.status == 200
        assert "ZM201612013000000242400404124269" in await response.text()
    [page] = fake.pages
    assert page.biz == {"certify_id": "ZM201612013000000242400404124269"}
    forged = url.replace("ZM2016120130", "ZM2099120130")
    async with http.get(URL(forged, encoded=True)) as response:
        assert response.status == 400
        assert "isv.invalid-signature" in await response.text()
    assert len(fake.pages) == 1


# --- the sender: kinds and windows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "event_type", "note"), [("follow", "follow", "follow"), ("menu_click", "click", "click")]
)
async def test_follow_and_click_windows(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway, kind: str, event_type: str, note: str
) -> None:
    await add_account(sessions, kind, timedelta(minutes=4))
    fake.note_interaction(USER, note, at=utcnow() - timedelta(minutes=4))
    await sender.send(row("text", {"content": "欢迎关注"}))
    [call] = fake.sent_to(USER)
    assert call.biz["event_type"] == event_type and call.biz["chat"] == "0"


@pytest.mark.parametrize("kind", ["follow", "menu_click", "text"])
async def test_window_closed_after_5_minutes_is_refused_locally(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway, kind: str
) -> None:
    await add_account(sessions, kind, timedelta(minutes=5, seconds=30))
    fake.note_interaction(USER, {"menu_click": "click", "text": "chat"}.get(kind, kind))
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "迟到的回复"}))
    assert caught.value.code == "alipay_window" and not caught.value.retryable
    assert "outside_service_window" in str(caught.value)
    assert fake.received == []


async def test_chat_window(sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway) -> None:
    await add_account(sessions, "text", timedelta(minutes=2))
    fake.note_interaction(USER, "chat")
    await sender.send(row("text", {"content": "客服电话 400-101-6588"}))
    [call] = fake.sent_to(USER)
    assert call.biz["chat"] == "1" and "event_type" not in call.biz


async def test_no_account_no_window(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "hello"}))
    assert caught.value.code == "alipay_window"
    assert fake.received == []


async def test_enter_allows_one_message_a_day(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "enter", timedelta(hours=3))
    fake.note_interaction(USER, "enter_ppchat")
    await sender.send(row("text", {"content": "今天的第一条"}))
    assert (await account(sessions)).enter_sent_on == china_today()
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "今天的第二条"}))
    assert caught.value.code == "alipay_window"
    [call] = fake.sent_to(USER)
    assert call.biz["event_type"] == "enter_ppchat" and call.biz["text"]["content"] == "今天的第一条"


async def test_enter_used_yesterday_is_available_today(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "enter", enter_sent_on=china_today() - timedelta(days=1))
    fake.note_interaction(USER, "enter_ppchat")
    await sender.send(row("text", {"content": "新的一天"}))
    assert fake.texts_to(USER) == ["新的一天"]
    assert (await account(sessions)).enter_sent_on == china_today()


async def test_enter_claimed_once_by_concurrent_sends(
    sender: AlipaySender, db_api: AlipayAPI, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "enter")
    fake.note_interaction(USER, "enter_ppchat")
    other = AlipaySender(db_api, sessions)
    results = await asyncio.gather(
        sender.send(row("text", {"content": "一"})), other.send(row("text", {"content": "二"})), return_exceptions=True
    )
    assert sum(result is None for result in results) == 1
    [refused] = [result for result in results if isinstance(result, SendError)]
    assert refused.code == "alipay_window"
    assert len(fake.sent_to(USER)) == 1


async def test_enter_given_back_when_alipay_refuses(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "enter")
    fake.note_interaction(USER, "enter_ppchat")
    fake.fail(CUSTOM_SEND, "20000")
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "稍后重试"}))
    assert caught.value.retryable
    assert (await account(sessions)).enter_sent_on is None
    await sender.send(row("text", {"content": "稍后重试"}))  # the retry still has the day's message
    assert fake.texts_to(USER) == ["稍后重试"]


async def test_news_is_one_image_text_article(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "menu_click")
    fake.note_interaction(USER, "click")
    payload = {
        "title": "预约成功",
        "description": "请按时接种",
        "url": "https://vax.example.cn/b/1",
        "image_url": "https://vax.example.cn/p.png",
    }
    await sender.send(row("news", payload))
    [call] = fake.sent_to(USER)
    assert call.biz["msg_type"] == "image-text"
    assert call.biz["articles"] == [
        {
            "title": "预约成功",
            "desc": "请按时接种",
            "url": "https://vax.example.cn/b/1",
            "image_url": "https://vax.example.cn/p.png",
            "action_name": "查看详情",
        }
    ]


async def test_image_is_uploaded_then_sent_as_an_article(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "text")
    fake.note_interaction(USER, "chat")
    await sender.send(row("image", {"png_base64": base64.b64encode(PNG).decode()}))
    [upload] = fake.calls(IMAGE_UPLOAD)
    assert upload.files["image_content"] == PNG
    [call] = fake.sent_to(USER)
    [article] = call.biz["articles"]
    [image_id] = fake.images
    assert article["image_url"].endswith(f"/images/{image_id}.png") and article["url"] == article["image_url"]


async def test_a_qr_text_is_drawn_then_uploaded_and_sent_as_an_article(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    code = "VX1:ABCDEFGHIJKLMNOPQRSTUVWX:1795424400:ABCDEFGHIJKLMNOPQRSTUVWX"
    await add_account(sessions, "text")
    fake.note_interaction(USER, "chat")
    await sender.send(row("image", {"qr_text": code, "credential": True}))
    [upload] = fake.calls(IMAGE_UPLOAD)
    assert read_qr(upload.files["image_content"]) == code
    [call] = fake.sent_to(USER)
    [article] = call.biz["articles"]
    assert article["image_url"].startswith("http") and article["url"] == article["image_url"]
    assert code not in json.dumps(call.biz)  # the code travels as the uploaded picture only


async def test_a_qr_text_that_cannot_be_drawn_is_permanent_and_not_repeated(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "text")
    with pytest.raises(SendError) as caught:
        await sender.send(row("image", {"qr_text": "vx1:lower-case:1", "credential": True}))
    assert not caught.value.retryable and caught.value.code == "alipay_image"
    assert "vx1" not in str(caught.value) and fake.received == []


async def test_wechat_media_id_is_permanent(sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway) -> None:
    await add_account(sessions, "text")
    with pytest.raises(SendError) as caught:
        await sender.send(row("image", {"media_id": "wechat-media"}))
    assert not caught.value.retryable and caught.value.code == "alipay_image"
    assert fake.received == []


async def test_unknown_kind_is_permanent(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    with pytest.raises(SendError) as caught:
        await sender.send(row("subscribe", {}))
    assert caught.value.code == "unknown_kind" and not caught.value.retryable


# --- error mapping --------------------------------------------------------------------------------------


async def test_service_unavailable_is_retried_soon(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    fake.fail(SINGLE_SEND, "20000", "isp.unknow-error")
    with pytest.raises(SendError) as caught:
        await sender.send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}))
    assert caught.value.code == "alipay_20000" and caught.value.retryable and caught.value.retry_after == 5.0


async def test_auth_trouble_is_retried_late_and_logged(
    sender: AlipaySender, fake: FakeAlipayGateway, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(SINGLE_SEND, "20001", "aop.invalid-auth-token")
    with caplog.at_level(logging.ERROR, logger="vaxbot.alipay.api"), pytest.raises(SendError) as caught:
        await sender.send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}))
    assert caught.value.code == "alipay_20001" and caught.value.retryable and caught.value.retry_after == 600.0
    assert any(record.levelno == logging.ERROR for record in caplog.records)


async def test_not_following_is_permanent_and_marks_the_account(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "text")
    fake.unfollow(USER)
    with pytest.raises(SendError) as caught:
        await sender.send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}))
    assert caught.value.code == "alipay_40004" and not caught.value.retryable
    assert "user_not_following" in str(caught.value)
    assert (await account(sessions)).following is False


async def test_alipay_over_time_is_permanent(sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway) -> None:
    # Our record says the user wrote a minute ago; Alipay knows of no such message.
    await add_account(sessions, "text")
    with pytest.raises(SendError) as caught:
        await sender.send(row("text", {"content": "hello"}))
    assert caught.value.code == "alipay_40004" and not caught.value.retryable
    assert "outside_service_window" in str(caught.value)


async def test_unknown_code_is_retried(sender: AlipaySender, fake: FakeAlipayGateway) -> None:
    fake.fail(SINGLE_SEND, "40099", "isp.something-new")
    with pytest.raises(SendError) as caught:
        await sender.send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}))
    assert caught.value.code == "alipay_40099" and caught.value.retryable


def test_classify_table() -> None:
    for code in ("40001", "40002", "40006"):
        error = classify(AlipayAPIError(code, "Invalid Arguments", "isv.some-reason"))
        assert not error.retryable and error.code == f"alipay_{code}" and "isv.some-reason" in str(error)
    other = classify(AlipayAPIError("40004", "Business Failed", "PUB.SOMETHING_ELSE"))
    assert not other.retryable and "PUB.SOMETHING_ELSE" in str(other)
    nofollow = classify(AlipayAPIError("40004", "Business Failed", "PUB.MSG_SD_NOFOLLOW"))
    assert not nofollow.retryable and "user_not_following" in str(nofollow)
    transport = classify(AlipayAPIError("transport", "ClientConnectorError"))
    assert transport.retryable and transport.code == "alipay_transport"


async def test_stall_beyond_the_timeout_is_retryable(
    http: aiohttp.ClientSession,
    make_settings: Callable[..., Settings],
    gateway_url: str,
    sessions: Sessions,
    fake: FakeAlipayGateway,
) -> None:
    quick = AlipayAPI.from_settings(http, make_settings(alipay_gateway=gateway_url, api_timeout_seconds=0.3), Metrics())
    fake.stall(SINGLE_SEND, STALL_SECONDS)  # only the configured timeout can end the call
    with pytest.raises(SendError) as caught:
        await AlipaySender(quick, sessions).send(row("template", {"template_id": "tpl", "data": {"keyword1": "x"}}))
    assert caught.value.code == "alipay_transport" and caught.value.retryable


async def test_unreachable_gateway_is_retryable(
    http: aiohttp.ClientSession, keys_dir: Path, unused_tcp_port: int
) -> None:
    closed = AlipayAPI.from_settings(
        http, plain_settings(keys_dir, f"http://127.0.0.1:{unused_tcp_port}/gateway.do"), Metrics()
    )
    with pytest.raises(AlipayAPIError) as caught:
        await closed.create_menu(alipay_menu())
    assert caught.value.code == "transport" and classify(caught.value).retryable


# --- the outbox, end to end -----------------------------------------------------------------------------


async def test_outbox_worker_delivers_through_alipay(
    sender: AlipaySender, sessions: Sessions, fake: FakeAlipayGateway
) -> None:
    await add_account(sessions, "text")
    await add_account(sessions, "text", timedelta(hours=1), user="2088000000000002")
    fake.note_interaction(USER, "chat")
    async with sessions() as session, session.begin():
        for recipient, content in ((USER, "第一条"), (USER, "第二条"), ("2088000000000002", "过期")):
            enqueue(
                session,
                platform="alipay",
                app_id=DEV_ALIPAY_APPID,
                recipient=recipient,
                kind="text",
                payload={"content": content},
            )
    worker = OutboxWorker(sessions, {"alipay": sender}, Metrics())
    assert await worker.run_once() == 3
    assert fake.texts_to(USER) == ["第一条", "第二条"]
    async with sessions() as session:
        rows = list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())
    assert [item.status for item in rows] == ["sent", "sent", "dead"]
    assert rows[2].last_error is not None and "outside_service_window" in rows[2].last_error


# --- the migration ---------------------------------------------------------------------------------------


async def test_migration_0002_up_and_down(make_settings: Callable[..., Settings]) -> None:
    engine = create_engine(make_settings())

    def columns(sync: Any) -> set[str]:
        return {column["name"] for column in inspect(sync).get_columns("platform_accounts")}

    try:
        async with engine.connect() as connection:
            assert "enter_sent_on" in await connection.run_sync(columns)
            await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0001"))
            assert "enter_sent_on" not in await connection.run_sync(columns)
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
            assert "enter_sent_on" in await connection.run_sync(columns)
            await connection.commit()
    finally:
        await engine.dispose()
