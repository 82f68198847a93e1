"""The development front page, the sandbox's transcripts and its reset route, and template cards.

The app is the one ``vaxbot serve`` runs in development (the service with the platform fakes and the
sandbox beside it), served on loopback by pytest-aiohttp; the browser's side is in test_sandbox.py.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.cli import DEV_ALIPAY_PREFIX, DEV_API_PREFIX, build_serving_app
from bot.core.audit import record_access
from bot.core.catalogue import build_catalogue
from bot.core.config import Settings
from bot.dev.chat import describe, describe_alipay
from bot.dev.demo import PARENT, demo_registry_records, seed_demo
from bot.dev.sandbox import TOKEN_HEADER, Transcripts, alipay_view, wechat_view
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, PlatformAccount, Vaccinee
from tests.helpers import drain_outbox

PARENT_WECHAT = "o-demo-parent"


@pytest.fixture
async def sandbox(make_settings: Any, aiohttp_client: Any, unused_tcp_port: int) -> TestClient[Any, Any]:
    """The development app with its sandbox, on the port its settings name, with the demo world loaded."""
    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    settings = make_settings(
        env="development",
        port=port,
        public_url=base,
        wechat_api_base=f"{base}{DEV_API_PREFIX}",
        wechat_oauth_base=f"{base}{DEV_API_PREFIX}",
        alipay_gateway=f"{base}{DEV_ALIPAY_PREFIX}/gateway.do",
        alipay_oauth_base=f"{base}{DEV_ALIPAY_PREFIX}",
    )
    app = build_serving_app(settings)
    client: TestClient[Any, Any] = await aiohttp_client(app, server_kwargs={"host": "127.0.0.1", "port": port})
    assert await seed_demo(app[SESSIONS], app[SERVICES].vault)
    return client


def _origin(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("/")).rstrip("/")


async def _page_post(client: TestClient[Any, Any], path: str, payload: dict[str, Any]) -> ClientResponse:
    """A POST as the sandbox page makes it: same origin, JSON, and the token it read from /api/config."""
    token = (await (await client.get("/sandbox/api/config")).json())["token"]
    return await client.post(path, json=payload, headers={"Origin": _origin(client), TOKEN_HEADER: token})


async def _rows(client: TestClient[Any, Any], model: Any) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _transcript(client: TestClient[Any, Any], platform: str, user: str) -> dict[str, Any]:
    response = await client.get("/sandbox/api/transcript", params={"platform": platform, "user": user})
    assert response.status == 200
    data: dict[str, Any] = await response.json()
    return data


async def _follow(client: TestClient[Any, Any], user: str = PARENT_WECHAT) -> list[dict[str, Any]]:
    """Follow on WeChat through the sandbox; the conversation afterwards."""
    response = await _page_post(client, "/sandbox/api/send", {"platform": "wechat", "user": user, "action": "follow"})
    assert response.status == 200, await response.text()
    await drain_outbox(client)
    items: list[dict[str, Any]] = (await _transcript(client, "wechat", user))["items"]
    return items


# --- the front page ---------------------------------------------------------------------------


async def test_front_page_links_to_the_sandbox_in_development(sandbox: TestClient[Any, Any]) -> None:
    response = await sandbox.get("/")
    page = await response.text()
    assert response.status == 200
    catalogue = sandbox.app[SERVICES].catalogue
    link = re.search(r'<a href="([^"]+)">([^<]+)</a>', page)
    assert link is not None, page
    assert link.group(1) == "/sandbox" and link.group(2) == catalogue("page_home_sandbox")
    assert catalogue("page_home") in page
    assert (await sandbox.get(link.group(1))).status == 200  # the link leads somewhere


async def test_front_page_without_the_sandbox_is_unchanged(settings: Settings, aiohttp_client: Any) -> None:
    client = await aiohttp_client(create_app(settings, migrate_on_start=False))  # what production serves
    page = await (await client.get("/")).text()
    catalogue = build_catalogue(settings)
    assert catalogue("page_home") in page and catalogue("page_home_title") in page
    assert "<a " not in page and "sandbox" not in page
    assert (await client.get("/sandbox")).status == 404
    assert (await client.post("/sandbox/api/reset")).status == 404


# --- transcripts --------------------------------------------------------------------------------


async def test_the_transcript_outlives_the_page(sandbox: TestClient[Any, Any]) -> None:
    items = await _follow(sandbox)
    catalogue = sandbox.app[SERVICES].catalogue
    assert items[0]["who"] == "me" and items[0]["text"] == catalogue("sandbox_me_follow")
    assert any(item["who"] == "bot" and "欢迎关注" in item.get("text", "") for item in items[1:])
    # A reload asks again from the start and gets the same; a poll gets only what is new.
    again = await _transcript(sandbox, "wechat", PARENT_WECHAT)
    assert again["items"] == items
    newer = await sandbox.get(
        "/sandbox/api/transcript", params={"platform": "wechat", "user": PARENT_WECHAT, "after": items[-1]["id"]}
    )
    assert (await newer.json())["items"] == []
    # Each person's conversation is their own.
    assert (await _transcript(sandbox, "wechat", "o-demo-grandma"))["items"] == []
    assert (await _transcript(sandbox, "alipay", PARENT_WECHAT))["items"] == []


def test_transcripts_are_bounded() -> None:
    transcripts = Transcripts(per_conversation=3, conversations=2)
    for number in range(5):
        transcripts.add("wechat", "a", "me", {"kind": "text", "text": str(number)})
    assert [item["text"] for item in transcripts.since("wechat", "a", 0)] == ["2", "3", "4"]
    transcripts.add("wechat", "b", "me", {"kind": "text", "text": "b"})
    transcripts.add("alipay", "c", "me", {"kind": "text", "text": "c"})  # the least recently used goes
    assert transcripts.since("wechat", "a", 0) == []
    assert [item["text"] for item in transcripts.since("wechat", "b", 0)] == ["b"]
    epoch = transcripts.epoch
    transcripts.clear()
    assert transcripts.since("alipay", "c", 0) == [] and transcripts.epoch != epoch


# --- the reset route ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["no origin", "other origin", "null origin", "cross-site fetch", "form body", "no token", "wrong token"],
)
async def test_reset_refuses_what_is_not_the_pages_own_request(sandbox: TestClient[Any, Any], case: str) -> None:
    assert await _follow(sandbox)
    token = (await (await sandbox.get("/sandbox/api/config")).json())["token"]
    headers = {"Origin": _origin(sandbox), "Content-Type": "application/json", TOKEN_HEADER: token}
    body = "{}"
    if case == "no origin":
        del headers["Origin"]
    elif case == "other origin":
        headers["Origin"] = "http://vaxbot.example.org"
    elif case == "null origin":
        headers["Origin"] = "null"
    elif case == "cross-site fetch":
        headers["Sec-Fetch-Site"] = "cross-site"
    elif case == "form body":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        body = "confirm=1"
    elif case == "no token":
        del headers[TOKEN_HEADER]
    else:
        headers[TOKEN_HEADER] = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = await sandbox.post("/sandbox/api/reset", data=body, headers=headers)
    assert response.status == 403
    # Nothing was reset.
    assert await _rows(sandbox, PlatformAccount) == 1
    assert (await _transcript(sandbox, "wechat", PARENT_WECHAT))["items"]


@pytest.mark.parametrize("path", ["/sandbox/api/send", "/sandbox/api/reminders"])
async def test_the_pages_other_posts_refuse_other_sites(sandbox: TestClient[Any, Any], path: str) -> None:
    """Sending signs as any user and the fast-forward sends reminders: a cross-site page may do neither."""
    payload = {"platform": "wechat", "user": PARENT_WECHAT, "action": "follow"}
    token = (await (await sandbox.get("/sandbox/api/config")).json())["token"]
    for headers in ({}, {"Origin": "http://vaxbot.example.org", TOKEN_HEADER: token}, {"Origin": _origin(sandbox)}):
        assert (await sandbox.post(path, json=payload, headers=headers)).status == 403, headers
    # A text/plain "simple" request, as a form or fetch from another site would send it.
    plain = await sandbox.post(path, data=json.dumps(payload), headers={"Content-Type": "text/plain"})
    assert plain.status == 403
    assert await _rows(sandbox, PlatformAccount) == 0  # nothing reached the webhook


async def test_reset_is_a_post(sandbox: TestClient[Any, Any]) -> None:
    assert (await sandbox.get("/sandbox/api/reset", headers={"Origin": _origin(sandbox)})).status == 405


async def test_reset_puts_the_demo_world_back(sandbox: TestClient[Any, Any]) -> None:
    before = await _transcript(sandbox, "wechat", PARENT_WECHAT)
    assert await _follow(sandbox)
    assert await _rows(sandbox, PlatformAccount) == 1
    seeded = await _rows(sandbox, AuditEntry)  # loading the registry is audited
    async with sandbox.app[SESSIONS]() as session, session.begin():  # the append-only log is reset too
        vaccinee_id = await session.scalar(select(Vaccinee.id).limit(1))
        record_access(session, actor_kind="system", actor_ref="test", action="record_viewed", vaccinee_id=vaccinee_id)
    assert await _rows(sandbox, AuditEntry) == seeded + 1
    vaccinees = await _rows(sandbox, Vaccinee)
    assert vaccinees == len([record for record in demo_registry_records() if "registry_ref" in record])
    config = await (await sandbox.get("/sandbox/api/config")).json()
    response = await sandbox.post(
        "/sandbox/api/reset",
        json={},
        headers={"Origin": _origin(sandbox), TOKEN_HEADER: config["token"], "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status == 200, await response.text()
    data = await response.json()
    assert data["message"] == sandbox.app[SERVICES].catalogue("sandbox_reset_done")
    after = await _transcript(sandbox, "wechat", PARENT_WECHAT)
    assert after["items"] == [] and after["epoch"] == data["epoch"] != before["epoch"]
    # The database is the demo world again: nobody follows, the registry is back, the audit log is new.
    assert await _rows(sandbox, PlatformAccount) == 0
    assert await _rows(sandbox, Vaccinee) == vaccinees
    assert await _rows(sandbox, AuditEntry) == seeded
    inbox = await (await sandbox.get("/_dev/wechat/inbox", params={"touser": PARENT_WECHAT})).json()
    assert inbox == {"items": [], "next": 0}
    # …and the service works on the rebuilt schema: following again is welcomed again.
    items = await _follow(sandbox)
    assert any("欢迎关注" in item.get("text", "") for item in items)
    assert await _rows(sandbox, PlatformAccount) == 1


# --- template cards -----------------------------------------------------------------------------

REMINDER = {
    "first": "林*满有疫苗已经逾期，请尽快补种",
    "keyword1": "林*满",
    "keyword2": "百白破疫苗第4剂、麻腮风疫苗第2剂",
    "keyword3": "已逾期，请尽快接种",
    "remark": "请带孩子到接种门诊接种。",
}


def _rows_of(card: dict[str, Any]) -> list[tuple[str, str]]:
    return [(row["label"], row["value"]) for row in card["rows"]]


def test_a_wechat_reminder_is_a_card(settings: Settings) -> None:
    catalogue = build_catalogue(settings)
    body = {  # as WeChatAPI.send_template posts it
        "touser": PARENT_WECHAT,
        "template_id": settings.reminder_template_id("wechat"),
        "data": {key: {"value": value} for key, value in REMINDER.items()},
        "url": "http://127.0.0.1:8080/",
    }
    card = wechat_view(body, catalogue, settings)
    assert card["kind"] == "template" and card["title"] == catalogue("sandbox_template_reminder")
    assert card["first"] == REMINDER["first"] and card["remark"] == REMINDER["remark"]
    assert _rows_of(card) == [
        (catalogue("sandbox_template_keyword1"), "林*满"),
        (catalogue("sandbox_template_keyword2"), REMINDER["keyword2"]),
        (catalogue("sandbox_template_keyword3"), REMINDER["keyword3"]),
    ]
    assert card["url"] == "http://127.0.0.1:8080/" and card["action"] == catalogue("sandbox_template_link")
    lines = describe(body, settings=settings).split("\n")
    assert lines[0] == "[模板消息] " + catalogue("sandbox_template_reminder")
    assert f"    {catalogue('sandbox_template_keyword1')}：林*满" in lines
    assert lines[-1] == f"    {catalogue('sandbox_template_link')}：http://127.0.0.1:8080/"
    assert " / " not in describe(body, settings=settings)


def test_an_alipay_reminder_is_a_card(settings: Settings) -> None:
    catalogue = build_catalogue(settings)
    context: dict[str, Any] = {"head_color": "#000000", "url": "http://127.0.0.1:8080/", "action_name": "查看详情"}
    context.update({key: {"value": value} for key, value in REMINDER.items()})
    biz = {"to_user_id": "2088000000000001", "template": {"template_id": "other", "context": context}}
    method = "alipay.open.public.message.single.send"
    card = alipay_view(method, biz, catalogue, settings)
    assert card["title"] == catalogue("sandbox_template_other")  # not the configured reminder template
    assert _rows_of(card)[0] == (catalogue("sandbox_template_keyword1"), "林*满")
    assert card["action"] == "查看详情" and card["url"] == "http://127.0.0.1:8080/"
    assert "#000000" not in card["text"]
    biz["template"]["template_id"] = settings.reminder_template_id("alipay")
    text = describe_alipay(method, biz, settings)
    assert text.startswith("[模板消息] " + catalogue("sandbox_template_reminder"))
    assert "    查看详情：http://127.0.0.1:8080/" in text.split("\n")
    assert PARENT.name not in text


# --- the verification link opens as the person the page plays -------------------------------------------


async def _verification_link(client: TestClient[Any, Any], platform: str, user: str) -> str:
    """Ask for verification through the sandbox as the demo parent; the link the chat showed."""
    for action, value in (("click", "HELP_VERIFY"), ("text", PARENT.name), ("text", PARENT.id_number)):
        payload = {"platform": platform, "user": user, "action": action, "value": value}
        response = await _page_post(client, "/sandbox/api/send", payload)
        assert response.status == 200, await response.text()
        await drain_outbox(client)
    items = (await _transcript(client, platform, user))["items"]
    return str(next(item["url"] for item in reversed(items) if item.get("kind") == "link"))


@pytest.mark.parametrize(("platform", "user"), [("wechat", PARENT_WECHAT), ("alipay", "2088000000000001")])
async def test_the_sandbox_browser_is_the_person_it_plays(
    sandbox: TestClient[Any, Any], platform: str, user: str
) -> None:
    # The page plays the grandmother now: her phone opens the parent's link, and is refused.
    link = await _verification_link(sandbox, platform, user)
    other = "o-demo-grandma" if platform == "wechat" else "2088000000000002"
    await _transcript(sandbox, platform, other)
    refused = await sandbox.get(urlsplit(link).path)
    assert refused.status == 403 and "请在发起认证的" in await refused.text()

    # Back to the parent (a new link, the old one is spent): the fake's authorisation page knows it is her.
    link = await _verification_link(sandbox, platform, user)
    opened = await sandbox.get(urlsplit(link).path)
    assert opened.status == 200 and "/_dev/face/" in str(opened.url), await opened.text()
    decided = await sandbox.post(str(opened.url.relative()), data={"decision": "pass"})
    assert decided.status == 200 and "实名认证成功" in await decided.text()
