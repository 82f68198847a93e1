"""WeChat's inbound protocol: official test vectors, every message type, every rejection path."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from wechatpy.crypto import PrpCrypto

from bot.core.config import load_settings
from bot.core.update import Platform, Text, UpdateKind
from bot.dev.fakes.wechat import WeChatClientSim
from bot.platforms.wechat.inbound import Rejected, WeChatGateway, sha1_signature

# Official Python sample (see the protocol reference).
SAMPLE_TOKEN = "spamtest"
SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SAMPLE_APPID = "wx2c2769f8efd9abc2"
SAMPLE_TS = "1409735669"
SAMPLE_NONCE = "1320562132"
SAMPLE_MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
SAMPLE_SIGNATURE = "16120ec1b8dbb870f510d87ce6bc2463eae6ca1a"
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpb"
    "UAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6N"
    "PhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0"
    "CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)
SAMPLE_BODY = (
    f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{SAMPLE_ENCRYPT}]]></Encrypt></xml>"
).encode()


def gateway(
    token: str = "vaxbotdevtoken", key: str = "", appid: str = "wx0000000000de0001", **extra: object
) -> WeChatGateway:
    settings = load_settings(
        environ={},
        env_file=Path("/nonexistent/.env"),
        wechat_token=token,
        wechat_aes_key=key,
        wechat_appid=appid,
        **extra,
    )
    return WeChatGateway(settings)


def sample_query(**overrides: str) -> dict[str, str]:
    query = {
        "signature": SAMPLE_SIGNATURE,
        "timestamp": SAMPLE_TS,
        "nonce": SAMPLE_NONCE,
        "encrypt_type": "aes",
        "msg_signature": SAMPLE_MSG_SIGNATURE,
    }
    query.update(overrides)
    return query


# --- official vectors ------------------------------------------------------------------------


def test_official_signatures_reproduce() -> None:
    assert sha1_signature(SAMPLE_TOKEN, SAMPLE_TS, SAMPLE_NONCE) == SAMPLE_SIGNATURE
    assert sha1_signature(SAMPLE_TOKEN, SAMPLE_TS, SAMPLE_NONCE, SAMPLE_ENCRYPT) == SAMPLE_MSG_SIGNATURE


def test_official_sample_decrypts_to_the_documented_text_message() -> None:
    update, encrypted = gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(
        sample_query(), SAMPLE_BODY, now=int(SAMPLE_TS)
    )
    assert encrypted is True
    assert update.platform is Platform.WECHAT
    assert update.kind is UpdateKind.TEXT
    assert update.user_id == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert update.extra["to"] == "gh_10f6c3c3ac5a"
    assert update.text == "abcdteT"
    assert update.message_id == "6054768590064713728"
    assert int(update.created_at.timestamp()) == 1409735668


def test_official_fixed_random_encryption_vector() -> None:
    class FixedRandom(PrpCrypto):  # type: ignore[misc]
        def get_random_string(self) -> str:
            return "aaaabbbbccccdddd"

    key = base64.b64decode(SAMPLE_KEY + "=")
    cipher = FixedRandom(key).encrypt("我是中文abcd123", "wxb11529c136998cb6")
    assert cipher.decode() == (
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
    )


def test_current_doc_example_signature_shape() -> None:
    # Token AAAAA, key "A"*43 (32 zero bytes): our signer and key decoding accept the documented values.
    assert base64.b64decode("A" * 43 + "=") == bytes(32)
    gw = gateway("AAAAA", "A" * 43, "wx134c8103faa5a59e")
    sim = WeChatClientSim("AAAAA", "wx134c8103faa5a59e", "A" * 43)
    request = sim.sign(sim.text("o-doc", "hello"), timestamp=1715943329, nonce="1590219412")
    update, _ = gw.open(request.query, request.body, now=1715943329)
    assert update.text == "hello"


# --- rejections ------------------------------------------------------------------------------


def test_wrong_appid_in_ciphertext_is_rejected() -> None:
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, "wx_someone_else").open(sample_query(), SAMPLE_BODY, now=int(SAMPLE_TS))
    assert info.value.status == 403 and info.value.reason == "wrong app id"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"signature": "0" * 40}, "bad signature"),
        ({"msg_signature": "0" * 40}, "bad msg_signature"),
        ({"signature": SAMPLE_MSG_SIGNATURE}, "bad signature"),  # the classic mix-up
        ({"nonce": "1320562133"}, "bad signature"),
    ],
)
def test_tampered_signatures_are_rejected(overrides: dict[str, str], reason: str) -> None:
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(sample_query(**overrides), SAMPLE_BODY, now=int(SAMPLE_TS))
    assert info.value.status == 403
    assert info.value.reason == reason


def test_stale_timestamp_is_rejected_even_when_signed() -> None:
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(sample_query(), SAMPLE_BODY, now=int(SAMPLE_TS) + 3600)
    assert info.value.reason == "stale timestamp"


@pytest.mark.parametrize("missing", ["signature", "timestamp", "nonce", "msg_signature"])
def test_missing_parameters_are_rejected(missing: str) -> None:
    query = sample_query()
    del query[missing]
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(query, SAMPLE_BODY, now=int(SAMPLE_TS))
    assert info.value.status == 400
    assert missing in info.value.reason


def test_encrypted_message_without_configured_key_is_rejected() -> None:
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, "", SAMPLE_APPID).open(sample_query(), SAMPLE_BODY, now=int(SAMPLE_TS))
    assert "no EncodingAESKey" in info.value.reason


def test_garbage_ciphertext_is_rejected_cleanly() -> None:
    sim = WeChatClientSim(SAMPLE_TOKEN, SAMPLE_APPID, SAMPLE_KEY)
    now = int(time.time())
    for encrypt in ("not base64 at all!!", base64.b64encode(b"short").decode(), base64.b64encode(bytes(64)).decode()):
        nonce = "42"
        query = {
            "signature": sha1_signature(SAMPLE_TOKEN, str(now), nonce),
            "timestamp": str(now),
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": sha1_signature(SAMPLE_TOKEN, str(now), nonce, encrypt),
        }
        body = f"<xml><ToUserName>gh</ToUserName><Encrypt>{encrypt}</Encrypt></xml>".encode()
        with pytest.raises(Rejected) as info:
            gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(query, body, now=now)
        assert info.value.status in (400, 403)
    assert sim.app_id == SAMPLE_APPID


HOSTILE_BODIES = [
    b"",
    b"not xml",
    b"<xml><ToUserName>a</ToUserName>",  # truncated
    b"<root><a>1</a></root>",  # wrong root
    b"<xml>just text</xml>",
    b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Content>&xxe;</Content></xml>',
    b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>',
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>x</CreateTime>"
    b"<MsgType>text</MsgType></xml>",
    b"<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>1</CreateTime></xml>",
    "<xml><ToUserName>a</ToUserName></xml>".encode("utf-16"),
]


@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_malformed_and_hostile_xml_is_rejected(body: bytes) -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001")
    request = sim.sign("<xml/>", mode="plain")
    with pytest.raises(Rejected) as info:
        gateway().open(request.query, body)
    assert info.value.status == 400


def test_plain_request_is_refused_in_safe_mode() -> None:
    sim = WeChatClientSim(SAMPLE_TOKEN, SAMPLE_APPID, SAMPLE_KEY)
    request = sim.sign(sim.text("o1", "hi"), mode="plain")
    with pytest.raises(Rejected) as info:
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(request.query, request.body)
    assert info.value.status == 403


def test_unknown_events_are_not_conversation() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    for event in ("LOCATION", "MASSSENDJOBFINISH", "pic_sysphoto", "location_select"):
        assert _open(sim.event("o1", event)).kind is UpdateKind.OTHER_EVENT  # type: ignore[attr-defined]


def test_two_menu_taps_in_one_second_are_two_events() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    a = _open(sim.event("o1", "CLICK", EventKey="HELP_FAQ", create_time=1700000000))
    b = _open(sim.event("o1", "CLICK", EventKey="HELP_CONTACT", create_time=1700000000))
    assert a.dedupe_key != b.dedupe_key  # type: ignore[attr-defined]


def test_encrypted_envelope_sent_as_plain_is_rejected() -> None:
    with pytest.raises(Rejected):
        gateway(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID).open(
            {k: v for k, v in sample_query().items() if k not in ("encrypt_type", "msg_signature")},
            SAMPLE_BODY,
            now=int(SAMPLE_TS),
        )


def test_url_check_echoes_and_rejects() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001")
    gw = gateway()
    assert gw.check_url(sim.url_check("echo-123")) == "echo-123"
    bad = sim.url_check("echo-123")
    bad["signature"] = bad["signature"][::-1]
    with pytest.raises(Rejected):
        gw.check_url(bad)
    missing = sim.url_check("x")
    del missing["echostr"]
    with pytest.raises(Rejected):
        gw.check_url(missing)


# --- every message and event type ------------------------------------------------------------

KEY = "dmF4Ym90LWRldi1lbmNvZGluZy1hZXMta2V5LTAwMDE"


def _open(xml: str) -> object:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    request = sim.sign(xml)
    update, _ = gateway(key=KEY).open(request.query, request.body)
    return update


def test_every_documented_type_becomes_one_update() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    u = "o-user"
    cases = [
        (sim.text(u, "你好"), UpdateKind.TEXT, "", "你好"),
        (
            sim.event(u, "subscribe"),
            UpdateKind.FOLLOW,
            "",
            "",
        ),
        (sim.event(u, "subscribe", EventKey="qrscene_clinic42", Ticket="t"), UpdateKind.FOLLOW, "clinic42", ""),
        (sim.event(u, "unsubscribe"), UpdateKind.UNFOLLOW, "", ""),
        (sim.event(u, "SCAN", EventKey="clinic42", Ticket="t"), UpdateKind.SCAN, "clinic42", ""),
        (sim.event(u, "CLICK", EventKey="HELP_FAQ"), UpdateKind.MENU_CLICK, "HELP_FAQ", ""),
        (sim.event(u, "VIEW", EventKey="https://example.org/x"), UpdateKind.MENU_VIEW, "https://example.org/x", ""),
        (
            sim.event(
                u,
                "scancode_push",
                EventKey="SCAN",
                ScanCodeInfo="<ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[VX1:abc]]></ScanResult>",
            ),
            UpdateKind.SCAN_CODE,
            "SCAN",
            "VX1:abc",
        ),
        (
            sim.event(
                u,
                "scancode_waitmsg",
                EventKey="SCAN2",
                ScanCodeInfo="<ScanType><![CDATA[qrcode]]></ScanType><ScanResult><![CDATA[VX1:def]]></ScanResult>",
            ),
            UpdateKind.SCAN_CODE,
            "SCAN2",
            "VX1:def",
        ),
        (
            sim.event(u, "TEMPLATESENDJOBFINISH", MsgID=200163836, Status="failed:user block"),
            UpdateKind.TEMPLATE_RESULT,
            "",
            "",
        ),
        (sim.event(u, "subscribe_msg_popup_event"), UpdateKind.SUBSCRIPTION, "", ""),
        (sim.event(u, "subscribe_msg_change_event"), UpdateKind.SUBSCRIPTION, "", ""),
        (sim.event(u, "subscribe_msg_sent_event"), UpdateKind.SUBSCRIPTION, "", ""),
        (sim.event(u, "LOCATION", Latitude="23.1", Longitude="113.3", Precision="50"), UpdateKind.OTHER_EVENT, "", ""),
    ]
    for xml, kind, key, text in cases:
        update = _open(xml)
        assert update.kind is kind, xml  # type: ignore[attr-defined]
        assert update.key == key, xml  # type: ignore[attr-defined]
        assert update.text == text, xml  # type: ignore[attr-defined]
        assert update.user_id == u  # type: ignore[attr-defined]


def test_image_and_unknown_message_types() -> None:
    from bot.dev.fakes.wechat import message_xml

    image = _open(message_xml("gh", "o1", "image", {"PicUrl": "http://x/y.jpg", "MediaId": "m1", "MsgId": 7}, 1))
    assert image.kind is UpdateKind.IMAGE and image.extra["media_id"] == "m1"  # type: ignore[attr-defined]
    voice = _open(message_xml("gh", "o1", "voice", {"MediaId": "m", "Format": "amr", "MsgId": 8}, 1))
    assert voice.kind is UpdateKind.UNKNOWN and voice.raw_type == "voice"  # type: ignore[attr-defined]


def test_template_result_keeps_status() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    update = _open(sim.event("o1", "TEMPLATESENDJOBFINISH", MsgID=5, Status="success"))
    assert update.extra["status"] == "success"  # type: ignore[attr-defined]
    assert update.message_id == "5"  # type: ignore[attr-defined]


def test_dedupe_keys_messages_by_id_and_events_by_sender_and_time() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    a = _open(sim.text("o1", "hi", msg_id=99, create_time=1700000000))
    b = _open(sim.text("o1", "hi again", msg_id=99, create_time=1700000001))
    assert a.dedupe_key == b.dedupe_key == "msg:99"  # type: ignore[attr-defined]
    e1 = _open(sim.event("o1", "subscribe", create_time=1700000000))
    e2 = _open(sim.event("o1", "subscribe", create_time=1700000000))
    e3 = _open(sim.event("o2", "subscribe", create_time=1700000000))
    assert e1.dedupe_key == e2.dedupe_key != e3.dedupe_key  # type: ignore[attr-defined]


def test_rendered_reply_round_trips_through_wechat() -> None:
    sim = WeChatClientSim("vaxbotdevtoken", "wx0000000000de0001", KEY)
    gw = gateway(key=KEY)
    request = sim.sign(sim.text("o1", "hi"))
    update, encrypted = gw.open(request.query, request.body)
    body = gw.render(update, Text("你好，<b>&</b>"), encrypted)
    reply = sim.open_reply(body)
    assert reply is not None
    assert reply["Content"] == "你好，<b>&</b>"
    assert reply["FromUserName"] == sim.original_id and reply["ToUserName"] == "o1"
    assert gw.render(update, None, encrypted) == "success"
