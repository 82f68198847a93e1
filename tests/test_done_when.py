"""Issue 4's acceptance, end to end through both platforms' protocols, with the demo world:

a parent on WeChat and a grandparent on Alipay each verify by face; the parent sees the pending list,
claims the child and authorises the grandparent; the grandparent then sees the child's certificate and
records. Along the way no plain ID number, name or phone may appear in any outbound message, in the
logs, or (on SQLite) anywhere in the database file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.dev.demo import CHILD, GRANDMA, PARENT, seed_demo
from bot.dev.fakes.alipay import AlipayClientSim
from bot.dev.fakes.alipay_gateway import FakeAlipayGateway
from bot.dev.fakes.wechat import FakeWeChatAPI, WeChatClientSim
from bot.web.appkeys import SERVICES, SESSIONS
from models import OutboxMessage
from tests.channels import Alipay, Channel, WeChat, authorise, link_in
from tests.helpers import Client, drain_outbox, outbox_rows

GRANDMA_PHONE = "13912345678"
SECRETS = [PARENT.name, PARENT.id_number, GRANDMA.name, GRANDMA.id_number, CHILD.name, CHILD.id_number, GRANDMA_PHONE]


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def _verify(client: Client, channel: Channel, user: str, name: str, id_number: str) -> None:
    await channel.do(user, ("click", "HELP_VERIFY"))
    await channel.say(user, name)
    link = link_in(await channel.do(user, ("text", id_number)))
    started = await authorise(client, link, channel.platform, user)
    page = started.headers["Location"]
    decided = await client.post(_path(page), data={"decision": "pass"}, allow_redirects=False)
    back = await client.get(_path(decided.headers["Location"]))
    assert "实名认证成功" in await back.text()
    await drain_outbox(client)


async def test_parent_on_wechat_and_grandparent_on_alipay(
    app_client: Client,
    wechat: WeChatClientSim,
    fake: FakeWeChatAPI,
    alipay: AlipayClientSim,
    fake_alipay: tuple[FakeAlipayGateway, str],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    assert await seed_demo(app_client.app[SESSIONS], app_client.app[SERVICES].vault)
    parent, grandma = WeChat(app_client, wechat, fake), Alipay(app_client, alipay, fake_alipay[0])
    read: list[str] = []

    await _verify(app_client, parent, "o-parent", PARENT.name, PARENT.id_number)
    await _verify(app_client, grandma, "2088000000000701", GRANDMA.name, GRANDMA.id_number)

    listing = "\n".join(await parent.do("o-parent", ("click", "CERT_CLAIM")))
    read.append(listing)
    number = next(line.split(".")[0] for line in listing.splitlines() if "林*满" in line and "." in line)
    read.append(await parent.say("o-parent", number))
    success = await parent.say("o-parent", "同意并申领")
    read.append(success)
    assert "电子预防接种证申领成功" in success

    read += await parent.do("o-parent", ("click", "CERT_GRANT"))
    for step in ("添加", GRANDMA.name, GRANDMA.id_number, "祖母", GRANDMA_PHONE):
        read.append(await parent.say("o-parent", step))
    done = await parent.say("o-parent", "确认授权")
    read.append(done)
    assert "周*兰" in done

    told = grandma.inbox("2088000000000701")
    read += told
    assert any("林*满" in message for message in told)  # the grandparent is told on Alipay
    records = "\n".join(await grandma.do("2088000000000701", ("click", "CERT_RECORDS")))
    read.append(records)
    if "林*满" in records and "第1剂" not in records:  # a list to choose from first
        number = next(line.split(".")[0] for line in records.splitlines() if "林*满" in line and "." in line)
        records = await grandma.say("2088000000000701", number)
        read.append(records)
    assert "林*满" in records and "乙肝疫苗" in records and "第1剂" in records
    refused = "\n".join(await grandma.do("2088000000000701", ("click", "CERT_GRANT")))
    read.append(refused)
    assert "授权" in refused and "添加" not in refused  # a grantee cannot authorise others

    everything = "\n".join(read) + "\n".join(str(row.payload) for row in await outbox_rows(app_client))
    for secret in SECRETS:
        assert secret not in everything, secret
        assert secret not in caplog.text, secret
    assert len(await outbox_rows(app_client)) == len(await _delivered(app_client))
    if database_url.startswith("sqlite"):
        raw = Path(database_url.split("///", 1)[1]).read_bytes()
        wal = Path(database_url.split("///", 1)[1] + "-wal")
        raw += wal.read_bytes() if wal.exists() else b""
        for secret in SECRETS:
            assert secret.encode() not in raw, secret


async def _delivered(client: Client) -> list[OutboxMessage]:
    return [row for row in await outbox_rows(client) if row.status in ("sent", "passive")]
