"""Alipay's inbound gateway protocol, without HTTP: charsets, RSA2 by the V2 rule, replies, parsing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from bot.core.keys import generate_key_pair
from bot.core.update import Platform, UpdateKind
from bot.dev.fakes.alipay import AlipayClientSim, ReplyError
from bot.platforms.alipay import sign as alipay_sign
from bot.platforms.alipay.inbound import AlipayGateway, Check, Notify, parse_form
from bot.platforms.common import Rejected

APP_ID = "2099000000000001"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    directory: Path = tmp_path_factory.mktemp("alipay-keys")
    generate_key_pair(directory, "app")
    generate_key_pair(directory, "platform")
    generate_key_pair(directory, "stranger")
    return {
        "app": alipay_sign.read_private_key(directory / "app_private.pem"),
        "platform": alipay_sign.read_private_key(directory / "platform_private.pem"),
        "stranger": alipay_sign.read_private_key(directory / "stranger_private.pem"),
    }


@pytest.fixture
def gateway(keys: dict[str, rsa.RSAPrivateKey]) -> AlipayGateway:
    return AlipayGateway(APP_ID, keys["app"], keys["platform"].public_key())


@pytest.fixture
def sim(keys: dict[str, rsa.RSAPrivateKey]) -> AlipayClientSim:
    return AlipayClientSim(APP_ID, keys["platform"], keys["app"].public_key())


@pytest.mark.parametrize("charset", ["GBK", "UTF-8", "utf-8", "gb2312"])
def test_text_in_each_charset_becomes_one_update(gateway: AlipayGateway, sim: AlipayClientSim, charset: str) -> None:
    body = sim.form(sim.text("2088000000000101", "你好，接种证怎么领？", msg_id="9001"), charset=charset)
    inbound = gateway.open(body)
    assert isinstance(inbound, Notify) and inbound.charset == charset
    update = inbound.update
    assert (update.platform, update.kind, update.user_id) == (Platform.ALIPAY, UpdateKind.TEXT, "2088000000000101")
    assert update.text == "你好，接种证怎么领？"
    assert update.dedupe_key == "msg:9001"


def test_gbk_body_is_not_utf8(sim: AlipayClientSim) -> None:
    gbk = sim.form(sim.text("2088000000000101", "疫苗"), charset="GBK")
    utf8 = sim.form(sim.text("2088000000000101", "疫苗"), charset="UTF-8")
    assert "%D2%DF%C3%E7" in gbk.decode()  # 疫苗 in GBK, percent-encoded
    assert "%E7%96%AB%E8%8B%97" in utf8.decode()


def test_sign_content_matches_the_official_sdk_rule() -> None:
    from alipay.aop.api.util.SignatureUtils import get_sign_content

    @given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=8))
    def check(params: dict[str, str]) -> None:
        params = {key: value for key, value in params.items() if key != "sign"}
        assert alipay_sign.sign_content({**params, "sign": "x"}) == get_sign_content(params)

    check()


def test_sign_content_v2_keeps_sign_type_and_v1_drops_it() -> None:
    params = {"sign": "s", "sign_type": "RSA2", "b": "2", "a": "1"}
    assert alipay_sign.sign_content(params) == "a=1&b=2&sign_type=RSA2"
    assert alipay_sign.sign_content(params, drop=("sign", "sign_type")) == "a=1&b=2"


def test_events(gateway: AlipayGateway, sim: AlipayClientSim) -> None:
    user = "2088000000000102"
    cases = [
        (sim.event(user, "follow"), UpdateKind.FOLLOW, ""),
        (sim.event(user, "unfollow"), UpdateKind.UNFOLLOW, ""),
        (sim.event(user, "click", "HELP_FAQ"), UpdateKind.MENU_CLICK, "HELP_FAQ"),
        (sim.event(user, "enter", sim.scene("CLINIC-NT-CC-01")), UpdateKind.ENTER, "CLINIC-NT-CC-01"),
        (sim.event(user, "enter", "not json"), UpdateKind.ENTER, ""),
        (sim.event(user, "follow", sim.scene("poster-7")), UpdateKind.FOLLOW, "poster-7"),
        (sim.event(user, "somethingnew"), UpdateKind.OTHER_EVENT, ""),
        (sim.image(user), UpdateKind.IMAGE, ""),
    ]
    for xml, kind, key in cases:
        inbound = gateway.open(sim.form(xml))
        assert isinstance(inbound, Notify)
        assert (inbound.update.kind, inbound.update.key) == (kind, key), xml


def test_event_dedupe_is_user_and_create_time_in_milliseconds(gateway: AlipayGateway, sim: AlipayClientSim) -> None:
    def key(create_time: int, param: str = "HELP_FAQ") -> str:
        inbound = gateway.open(sim.form(sim.event("2088000000000103", "click", param, create_time=create_time)))
        assert isinstance(inbound, Notify)
        return inbound.update.dedupe_key

    assert key(1_700_000_000_123) == key(1_700_000_000_123)  # a redelivery
    assert key(1_700_000_000_123) != key(1_700_000_000_456)  # two taps within one second
    assert key(1_700_000_000_123) != key(1_700_000_000_123, "HELP_CONTACT")


def _bodies(sim: AlipayClientSim, keys: dict[str, rsa.RSAPrivateKey]) -> dict[str, tuple[bytes, int]]:
    xml = sim.text("2088000000000104", "你好")

    def swap_content(fields: dict[str, str]) -> None:
        fields["biz_content"] = fields["biz_content"].replace("你好", "再见")

    def drop_sign_type(fields: dict[str, str]) -> None:
        fields["sign_type"] = "RSA"

    other_app = AlipayClientSim("2099000000009999", keys["platform"], keys["app"].public_key())
    good = sim.form(xml).decode()
    return {
        "stranger's key": (sim.form(xml, key=keys["stranger"]), 403),
        "content changed after signing": (sim.form(xml, tamper=swap_content), 403),
        "RSA (SHA1) sign_type": (sim.form(xml, tamper=drop_sign_type), 400),
        "other app": (other_app.form(other_app.text("2088000000000104", "你好")), 403),
        "unknown service": (sim.form(xml, service="alipay.something.else"), 400),
        "malformed xml": (sim.form("<XML><AppId>oops"), 400),
        "doctype": (sim.form('<!DOCTYPE x [<!ENTITY a "b">]><XML>&a;</XML>'), 400),
        "not a form": (b"\xff\xfe<xml/>", 400),
        "no charset": (urlencode({"service": "x", "sign": "y"}).encode(), 400),
        "unknown charset": (good.replace("charset=GBK", "charset=EBCDIC").encode(), 400),
        "repeated field": ((good + "&service=alipay.service.check").encode(), 400),
        "missing sign": ("&".join(p for p in good.split("&") if not p.startswith("sign=")).encode(), 400),
        "invalid GBK": (good.replace("charset=GBK", "charset=GBK&x=%FF%FF").encode(), 400),
    }


def test_rejections(gateway: AlipayGateway, sim: AlipayClientSim, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    for name, (body, status) in _bodies(sim, keys).items():
        with pytest.raises(Rejected) as caught:
            gateway.open(body)
        assert caught.value.status == status, name


def test_check_handshake_both_ways(
    gateway: AlipayGateway, sim: AlipayClientSim, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    ok = gateway.open(sim.check_form())
    assert ok == Check(charset="GBK", passed=True)
    reply = sim.open_reply(gateway.check_reply(ok))
    assert reply.inner["success"] == "true"
    assert reply.inner["biz_content"] == alipay_sign.public_key_body(keys["app"].public_key())
    assert reply.text == f"<success>true</success><biz_content>{reply.inner['biz_content']}</biz_content>"

    forged = gateway.open(sim.check_form(key=keys["stranger"]))
    assert forged == Check(charset="GBK", passed=False)
    failed = sim.open_reply(gateway.check_reply(forged))
    assert (failed.inner["success"], failed.inner["error_code"]) == ("false", "VERIFY_FAILED")

    utf8 = gateway.open(sim.check_form(charset="UTF-8"))
    assert isinstance(utf8, Check)
    assert sim.open_reply(gateway.check_reply(utf8), charset="UTF-8").inner["success"] == "true"


def test_reply_signed_by_someone_else_is_refused_by_alipay(
    sim: AlipayClientSim, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    impostor = AlipayGateway(APP_ID, keys["stranger"], keys["platform"].public_key())
    check = impostor.open(sim.check_form())
    with pytest.raises(ReplyError):
        sim.open_reply(impostor.check_reply(check))


def test_ack_is_signed_and_addressed(gateway: AlipayGateway, sim: AlipayClientSim) -> None:
    inbound = gateway.open(sim.form(sim.text("2088000000000105", "你好")))
    assert isinstance(inbound, Notify)
    reply = sim.open_reply(gateway.ack(inbound, now=1_700_000_000.5))
    xml = reply.inner["XML"]
    assert xml == {"ToUserId": "2088000000000105", "AppId": APP_ID, "CreateTime": "1700000000500", "MsgType": "ack"}


def test_parse_form_decodes_plus_and_percent() -> None:
    body = urlencode({"charset": "UTF-8", "service": "s", "sign": "a+b/c=", "sign_type": "RSA2", "biz_content": "x y"})
    fields, charset = parse_form(body.encode())
    assert charset == "UTF-8"
    assert fields["sign"] == "a+b/c=" and fields["biz_content"] == "x y"
    assert dict(parse_qsl(body))["sign"] == "a+b/c="


def test_keys_load_in_every_form_alipay_hands_out(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    private_path, public_path = generate_key_pair(tmp_path, "k")
    key = alipay_sign.read_private_key(private_path)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    pkcs1 = private_path.read_text()
    bare_pkcs1 = "".join(pkcs1.strip().splitlines()[1:-1])
    bare_pkcs8 = "".join(pkcs8.strip().splitlines()[1:-1])
    public_pem = public_path.read_text()
    bare_public = "".join(public_pem.strip().splitlines()[1:-1])
    signature = alipay_sign.sign(key, "a=1&b=中文", "GBK")
    for form in (pkcs1, pkcs8, bare_pkcs1, bare_pkcs8):
        assert alipay_sign.sign(alipay_sign.load_private_key(form), "a=1&b=中文", "GBK") == signature
    for form in (public_pem, bare_public):
        assert alipay_sign.verify(alipay_sign.load_public_key(form), "a=1&b=中文", signature, "GBK")
    assert not alipay_sign.verify(alipay_sign.load_public_key(public_pem), "a=1&b=中文", signature, "UTF-8")
    assert not alipay_sign.verify(alipay_sign.load_public_key(public_pem), "a=1", "not base64!", "GBK")
    with pytest.raises(alipay_sign.AlipayKeyError):
        alipay_sign.load_private_key("not a key")
    with pytest.raises(alipay_sign.AlipayKeyError):
        alipay_sign.read_public_key(tmp_path / "missing.pem")
