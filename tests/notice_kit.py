"""A notice world: a child's booking, its holder on WeChat, a grantee on Alipay, a grantee revoked yesterday."""

from __future__ import annotations

import dataclasses
from datetime import date, time, timedelta

from sqlalchemy import update

from bot.booking import bookings, slots
from bot.booking.slots import SlotSpec
from bot.certificates.rules import Grantee, add_grant
from bot.core.chinatime import china_date
from bot.dev.demo import CHILD, GRANDMA, PARENT, demo_id_number
from bot.notices.compose import Composer, Draft, Sent, send
from bot.web.appkeys import SERVICES, SESSIONS
from models import Certificate, Grant, Identity, utcnow
from tests.channels import Alipay, WeChat
from tests.helpers import Client
from tests.world import NANTONG, clinic, registry_file, verified

PARENT_USER = "o-notice-parent"
GRANDMA_USER = "2088000000000961"
UNCLE_USER = "o-notice-uncle"
UNCLE_ID = demo_id_number("320602", date(1988, 4, 9), 311)
UNCLE_NAME = "林大川"
SECRETS = [CHILD.name, CHILD.id_number, PARENT.name, PARENT.id_number, GRANDMA.name, GRANDMA.id_number, UNCLE_NAME]


@dataclasses.dataclass(frozen=True)
class NoticeWorld:
    """Ids of the notice world."""

    clinic_id: int
    vaccinee_id: int
    certificate_id: int
    parent_id: int
    day: date  # the booked day, three days ahead (China time)


async def _publish(client: Client, clinic_id: int, day: date, start: int, capacity: int = 5) -> int:
    async with client.app[SESSIONS]() as session, session.begin():
        spec = SlotSpec("HepB", day, time(start), time(start + 1), capacity)
        return (await slots.publish(session, clinic_id, spec)).id


async def publish(client: Client, clinic_id: int, day: date, start: int, capacity: int = 5) -> int:
    """A hepatitis B window of one hour at ``start`` o'clock; its slot id."""
    return await _publish(client, clinic_id, day, start, capacity)


async def book(client: Client, slot_id: int, vaccinee_id: int, identity_id: int, key: str) -> None:
    """Book a place (it must be booked)."""
    async with client.app[SESSIONS]() as session, session.begin():
        made = await bookings.book(session, slot_id, vaccinee_id, identity_id, key, utcnow())
        assert made.outcome == bookings.Outcome.BOOKED


async def notice_world(client: Client, parent: WeChat, grandma: Alipay, *, ref: str = "N-CHILD") -> NoticeWorld:
    """The child's certificate held by the parent (WeChat), the grandmother authorised (Alipay), the uncle
    authorised too but revoked yesterday (WeChat); the child booked on a morning three days ahead."""
    services = client.app[SERVICES]
    clinic_id = await clinic(client, *NANTONG)
    child = await registry_file(
        client,
        ref=ref,
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, CHILD.birth)],
    )
    await parent.do(PARENT_USER, ("follow", ""))
    await parent.do(UNCLE_USER, ("follow", ""))
    await grandma.do(GRANDMA_USER, ("follow", ""))
    holder = await verified(client, "wechat", PARENT_USER, PARENT.name, PARENT.id_number, parent.app_id)
    await verified(client, "alipay", GRANDMA_USER, GRANDMA.name, GRANDMA.id_number, grandma.app_id)
    await verified(client, "wechat", UNCLE_USER, UNCLE_NAME, UNCLE_ID, parent.app_id)
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=child, holder_identity_id=holder, kind="child", claimed_via="wechat")
        session.add(certificate)
        await session.flush()
        holder_row = await session.get(Identity, holder)
        assert holder_row is not None
        for person in (
            Grantee(GRANDMA.id_number, GRANDMA.name, "grandmother", ""),
            Grantee(UNCLE_ID, UNCLE_NAME, "other", ""),
        ):
            grant, problem = await add_grant(
                session, services.vault, holder_row, certificate, person, services.settings, "wechat", utcnow()
            )
            assert grant is not None, problem
        uncle_hash = services.vault.digest("id_number", UNCLE_ID)
        await session.execute(
            update(Grant)
            .where(Grant.grantee_id_number_hash == uncle_hash)
            .values(revoked_at=utcnow() - timedelta(days=1))
        )
        certificate_id = certificate.id
    day = china_date(utcnow()) + timedelta(days=3)
    slot_id = await _publish(client, clinic_id, day, 9)
    await book(client, slot_id, child, holder, "n-first")
    return NoticeWorld(clinic_id, child, certificate_id, holder, day)


async def send_notice(client: Client, clinic_id: int, draft: Draft, key: str) -> Sent:
    """Send a notice as a clinic system would (committed)."""
    services = client.app[SERVICES]
    composer = Composer(clinic_id=clinic_id, actor_kind="clinic_api", actor_ref="clinic_api:test")
    async with client.app[SESSIONS]() as session, session.begin():
        return await send(
            session, services.vault, services.catalogue, services.settings, composer, draft, key, utcnow()
        )
