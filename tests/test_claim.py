"""Journeys 3–4 on both platforms: the pending list, its explanations, claiming, and the claim race."""

from __future__ import annotations

import asyncio
from datetime import date

from sqlalchemy import select, text

from bot.certificates.rules import FileView, claim
from bot.dev.demo import demo_id_number
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, Certificate, Consent, Identity
from tests.channels import Channel
from tests.helpers import Client, count, drain_outbox, eventually
from tests.world import NANJING, registry_file, verified

MOTHER = ("林晓雨", demo_id_number("320602", date(1992, 3, 14), 122))
FATHER = ("陈建国", demo_id_number("320602", date(1990, 7, 1), 171))
CHILD = ("陈小满", demo_id_number("320602", date(2023, 5, 20), 131))
OLD_CHILD = ("陈大川", demo_id_number("320602", date(2015, 9, 9), 153))
NANJING_CHILD = ("陈小宁", demo_id_number("320102", date(2022, 2, 2), 162))


async def family(client: Client) -> dict[str, int]:
    """A Nantong family: the mother's own adult file, and children in every standing."""
    parents = [MOTHER[1], FATHER[1]]
    return {
        "mother": await registry_file(
            client,
            ref="F-M",
            name=MOTHER[0],
            id_number=MOTHER[1],
            birth=date(1992, 3, 14),
            stage="adult",
            doses=[("HPV9", 1, date(2024, 4, 8))],
        ),
        "child": await registry_file(
            client,
            ref="F-C",
            name=CHILD[0],
            id_number=CHILD[1],
            birth=date(2023, 5, 20),
            sex="M",
            guardians=parents,
            doses=[("HepB", 1, date(2023, 5, 20))],
        ),
        "old": await registry_file(
            client,
            ref="F-O",
            name=OLD_CHILD[0],
            id_number=OLD_CHILD[1],
            birth=date(2015, 9, 9),
            sex="M",
            guardians=parents,
        ),
        "nanjing": await registry_file(
            client,
            ref="F-N",
            name=NANJING_CHILD[0],
            id_number=NANJING_CHILD[1],
            birth=date(2022, 2, 2),
            guardians=parents,
            at=NANJING,
        ),
        "newborn": await registry_file(
            client,
            ref="F-B",
            name="陈小禾",
            id_number=None,
            birth=date(2026, 11, 20),
            guardians=parents,
            stage="obstetrics",
        ),
    }


def _no_plain_data(text: str) -> None:
    for secret in (MOTHER[0], MOTHER[1], CHILD[0], CHILD[1], "1992-03-14", "2023-05-20"):
        assert secret not in text, secret


async def test_unverified_users_are_told_how_to_start(channel: Channel) -> None:
    answers = await channel.do("u-unverified", ("click", "CERT_CLAIM"))
    assert len(answers) == 1 and "需要先完成实名认证" in answers[0] and "实名认证" in answers[0]


async def test_pending_list_claim_and_explanations(channel: Channel, app_client: Client) -> None:
    await family(app_client)
    user = f"mother-{channel.platform}"
    await verified(app_client, channel.platform, user, *MOTHER, app_id=channel.app_id)

    listing = "\n".join(await channel.do(user, ("click", "CERT_CLAIM")))
    _no_plain_data(listing)
    assert "1. 林*雨（本人，3206**********" in listing
    assert "2. 陈*满（子女，3206**********" in listing
    assert "陈*川（子女）：暂不能申领，2017年1月1日之前出生的儿童暂不能申领" in listing
    assert "陈*宁（子女）：暂不能申领，建档单位不在试点城市" in listing
    assert "陈*禾（子女）：暂不能申领，档案还在产科" in listing

    assert "请回复列表中的序号" in await channel.say(user, "9")
    confirm = await channel.say(user, "2")
    _no_plain_data(confirm)
    assert "姓名：陈*满" in confirm and "出生年月：2023年5月" in confirm and "监护人" in confirm
    assert "同意并申领" in await channel.say(user, "好的")  # anything else: how to agree
    success = await channel.say(user, "同意并申领")
    assert "电子预防接种证申领成功" in success and "证照授权" in success

    again = await channel.do(user, ("click", "CERT_CLAIM"))
    assert "陈*满（子女）：已申领" in "\n".join(again)
    async with app_client.app[SESSIONS]() as session:
        certificates = (await session.scalars(select(Certificate))).all()
        assert [(c.kind, c.claimed_via) for c in certificates] == [("child", channel.platform)]
        consents = (await session.scalars(select(Consent))).all()
        assert [(c.purpose, c.text_version) for c in consents] == [("certificate_child", "2026-11")]
        audit = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "claim"))).all()
        assert len(audit) == 1 and audit[0].certificate_id == certificates[0].id
    assert await count(app_client, AuditEntry) > 5  # every pending view is recorded too


async def test_own_adult_certificate(channel: Channel, app_client: Client) -> None:
    await family(app_client)
    user = f"mother-adult-{channel.platform}"
    await verified(app_client, channel.platform, user, *MOTHER, app_id=channel.app_id)
    await channel.do(user, ("click", "CERT_CLAIM"))
    confirm = await channel.say(user, "1")
    assert "姓名：林*雨" in confirm and "监护人" not in confirm
    success = await channel.say(user, "同意并申领")
    assert "申领成功" in success and "证照授权" not in success  # adult certificates cannot be shared


async def test_a_child_claimed_by_one_parent_is_explained_to_the_other(channel: Channel, app_client: Client) -> None:
    await family(app_client)
    await verified(app_client, "wechat", "o-mother", *MOTHER, app_id="wx")
    file = await _child_view(app_client)
    async with app_client.app[SESSIONS]() as session, session.begin():
        mother = (await session.scalars(select(Identity))).one()
        assert await claim(session, mother, file, "wechat", mother.verified_at) is not None
    user = f"father-{channel.platform}"
    await verified(app_client, channel.platform, user, *FATHER, app_id=channel.app_id)
    listing = "\n".join(await channel.do(user, ("click", "CERT_CLAIM")))
    assert "陈*满（子女）：已由其他家人申领" in listing and "证照授权" in listing
    assert "您可以申领的" not in listing  # nothing else is claimable for the father


async def _child_view(client: Client) -> FileView:
    return FileView(
        vaccinee_id=(await _vaccinee_id(client, "F-C")),
        relation="child",
        name=CHILD[0],
        id_number=CHILD[1],
        birth_date=date(2023, 5, 20),
        sex="M",
        clinic_name="",
        region="3206",
    )


async def _vaccinee_id(client: Client, ref: str) -> int:
    from models import Vaccinee

    async with client.app[SESSIONS]() as session:
        return int((await session.scalars(select(Vaccinee.id).where(Vaccinee.registry_ref == ref))).one())


async def test_nothing_found_explains_the_likely_reasons(channel: Channel, app_client: Client) -> None:
    user = f"stranger-{channel.platform}"
    await verified(
        app_client,
        channel.platform,
        user,
        "王五",
        demo_id_number("320602", date(1980, 1, 1), 11),
        app_id=channel.app_id,
    )
    answers = await channel.do(user, ("click", "CERT_CLAIM"))
    assert len(answers) == 2
    assert "没有找到与您身份证号关联的接种档案" in answers[0]
    assert "2017年1月1日" in answers[1] and "南通市、无锡市" in answers[1]


async def test_the_race_between_two_parents_has_one_winner(app_client: Client, backend: str) -> None:
    """Two guardians agree at the same moment, each in their own transaction: the index decides."""
    await family(app_client)
    await verified(app_client, "wechat", "o-m", *MOTHER, app_id="wx")
    await verified(app_client, "alipay", "2088-f", *FATHER, app_id="ali")
    file = await _child_view(app_client)

    async def the_loser_waits_on_the_index() -> bool:
        async with app_client.app[SESSIONS]() as session:
            waiting = await session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            )
            return bool(waiting)

    async def attempt(index: int) -> bool:
        async with app_client.app[SESSIONS]() as session, session.begin():
            identities = (await session.scalars(select(Identity).order_by(Identity.id))).all()
            won = await claim(session, identities[index], file, "wechat", identities[index].verified_at)
            if won is not None and backend == "postgres":
                # Hold the transaction open until the other one's claim waits for it, so the two overlap.
                # (SQLite's single connection takes the two transactions in turn.)
                await eventually(the_loser_waits_on_the_index, "the other claim waits for this one")
            return won is not None

    results = await asyncio.gather(attempt(0), attempt(1))
    assert sorted(results) == [False, True]
    assert await count(app_client, Certificate) == 1


async def test_the_race_through_the_webhook(app_client: Client, channel: Channel) -> None:
    await family(app_client)
    mother, father = f"m-{channel.platform}", f"f-{channel.platform}"
    await verified(app_client, channel.platform, mother, *MOTHER, app_id=channel.app_id)
    await verified(app_client, channel.platform, father, *FATHER, app_id=channel.app_id)
    for user in (mother, father):
        listing = "\n".join(await channel.do(user, ("click", "CERT_CLAIM")))
        number = "2" if user == mother else "1"
        assert f"{number}. 陈*满" in listing
        assert "同意并申领" in await channel.say(user, number)
    before = {user: len(channel.inbox(user)) for user in (mother, father)}
    said = await asyncio.gather(channel.say(mother, "同意并申领"), channel.say(father, "同意并申领"))
    # Each user's own worker pass may find the other's lease on a reply: one more pass, then read both.
    await drain_outbox(app_client)
    answers = [
        said[index] + "\n" + "\n".join(channel.inbox(user)[before[user] :])
        for index, user in enumerate((mother, father))
    ]
    assert sum("申领成功" in answer for answer in answers) == 1
    assert sum("刚刚已被其他家人申领" in answer for answer in answers) == 1
    assert await count(app_client, Certificate) == 1
    vault = app_client.app[SERVICES].vault
    assert vault  # the app's vault sealed every file above
