"""A desk world for the desk tests: a child's certificate, the family's accounts, a visit queued by a real scan."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from bot.certificates.rules import Grantee, add_grant
from bot.desk.notify import FamilyTeller
from bot.desk.queue import take_number
from bot.desk.steps import DeskActor, DosePlan, GivenDose, HealthAnswers
from bot.dev.demo import CHILD, GRANDMA, INFANT, PARENT
from bot.showcode.codes import issue_code
from bot.web.appkeys import SERVICES, SESSIONS
from models import Certificate, Identity, utcnow
from tests.helpers import Client
from tests.world import NANJING, NANTONG, clinic, registry_file, verified

NO_PROBLEMS = HealthAnswers(fever=False, allergies=False, recent_vaccines=False, contraindications=False)
GIVEN = GivenDose(site="left_deltoid", route="intramuscular", vaccinator="王护士")
# The child has only the birth dose of hepatitis B: the second one is late, so it is due at the desk.
PLAN_VACCINE = ("HepB", 2)


def plan(expires_in_days: int = 200, *, lot: str = "202611A03", today: datetime | None = None) -> DosePlan:
    """The hepatitis B second dose, with a lot expiring ``expires_in_days`` after today (China time)."""
    from bot.core.chinatime import china_date

    day = china_date(today or utcnow())
    return DosePlan(
        vaccine_code=PLAN_VACCINE[0],
        dose_number=PLAN_VACCINE[1],
        lot_number=lot,
        manufacturer="华北制药",
        expires_on=day + timedelta(days=expires_in_days),
    )


@dataclasses.dataclass(frozen=True)
class DeskWorld:
    """Ids of the desk world: the clinic (and another one), the child's file and certificate, the family."""

    clinic_id: int
    other_clinic_id: int
    vaccinee_id: int
    certificate_id: int
    parent_id: int  # holds the certificate
    grandma_id: int  # authorised by the parent
    parent_user: str
    grandma_user: str

    @property
    def actor(self) -> DeskActor:
        """A nurse of the child's clinic."""
        return DeskActor(clinic_id=self.clinic_id, staff_id=7)

    @property
    def stranger(self) -> DeskActor:
        """A nurse of another clinic."""
        return DeskActor(clinic_id=self.other_clinic_id, staff_id=8)


async def desk_world(client: Client, platform: str, app_id: str, *, tag: str = "") -> DeskWorld:
    """The child's file (birth dose only), the parent holding its certificate, the grandmother authorised."""
    services = client.app[SERVICES]
    vaccinee = await registry_file(
        client,
        ref="D-CHILD" + tag,
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, CHILD.birth)],
    )
    parent_user = f"o-desk-parent{tag}" if platform == "wechat" else f"20880000000009{tag or '01'}"
    grandma_user = f"o-desk-grandma{tag}" if platform == "wechat" else f"20880000000019{tag or '01'}"
    parent = await verified(client, platform, parent_user, PARENT.name, PARENT.id_number, app_id)
    grandma = await verified(client, platform, grandma_user, GRANDMA.name, GRANDMA.id_number, app_id)
    other = await clinic(client, *NANJING)
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(vaccinee_id=vaccinee, holder_identity_id=parent, kind="child", claimed_via=platform)
        session.add(certificate)
        await session.flush()
        holder = await session.get(Identity, parent)
        assert holder is not None
        grantee = Grantee(id_number=GRANDMA.id_number, name=GRANDMA.name, relationship="grandmother", phone="")
        grant, problem = await add_grant(
            session, services.vault, holder, certificate, grantee, services.settings, platform, utcnow()
        )
        assert grant is not None, problem
        certificate_id = certificate.id
    return DeskWorld(
        clinic_id=await clinic(client, *NANTONG),
        other_clinic_id=other,
        vaccinee_id=vaccinee,
        certificate_id=certificate_id,
        parent_id=parent,
        grandma_id=grandma,
        parent_user=parent_user,
        grandma_user=grandma_user,
    )


async def second_child(client: Client, world: DeskWorld, platform: str) -> int:
    """The parent's baby daughter, her certificate held by the parent too: returns the certificate id."""
    vaccinee = await registry_file(
        client,
        ref="D-INFANT",
        name=INFANT.name,
        id_number=INFANT.id_number,
        birth=INFANT.birth,
        sex=INFANT.sex,
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, INFANT.birth)],
    )
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(
            vaccinee_id=vaccinee, holder_identity_id=world.parent_id, kind="child", claimed_via=platform
        )
        session.add(certificate)
        await session.flush()
        return certificate.id


async def queue_visit(
    client: Client,
    world: DeskWorld,
    shown_by: int,
    *,
    now: datetime | None = None,
    certificate_id: int | None = None,
    family: FamilyTeller | None = None,
) -> int:
    """``shown_by`` shows a code and the clinic's desk scans it: returns the visit id."""
    services = client.app[SERVICES]
    moment = now or utcnow()
    async with client.app[SESSIONS]() as session, session.begin():
        issued = issue_code(
            session,
            services.vault,
            certificate_id=certificate_id or world.certificate_id,
            identity_id=shown_by,
            now=moment,
            ttl=timedelta(minutes=5),
        )
    async with client.app[SESSIONS]() as session, session.begin():
        ticket = await take_number(
            session,
            services.vault,
            services.catalogue,
            clinic_code=NANTONG[0],
            pilot_regions=services.settings.pilot_regions,
            payload=issued.payload,
            staff="nurse-1",
            now=moment,
            family=family,
        )
    return ticket.visit_id
