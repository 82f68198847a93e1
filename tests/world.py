"""Building registry files and verified users directly in a test's database (no face round trip)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy import select

from bot.dev.demo import demo_id_number
from bot.identity.accounts import bind_verified
from bot.web.appkeys import SERVICES, SESSIONS
from models import (
    Clinic,
    Dose,
    DoseDetail,
    FileProfile,
    Guardian,
    Identity,
    PlatformAccount,
    Stage,
    Vaccinee,
    utcnow,
)
from tests.helpers import Client

NANTONG = ("T-NT-01", "南通市测试社区卫生服务中心预防接种门诊", "320602")
NANJING = ("T-NJ-01", "南京市测试社区卫生服务中心预防接种门诊", "320102")


async def clinic(client: Client, code: str, name: str, region: str) -> int:
    """A clinic, created once."""
    async with client.app[SESSIONS]() as session, session.begin():
        found = (await session.scalars(select(Clinic).where(Clinic.code == code))).first()
        if found is not None:
            return found.id
        row = Clinic(code=code, name=name, region_code=region)
        session.add(row)
        await session.flush()
        return row.id


async def registry_file(
    client: Client,
    *,
    ref: str,
    name: str,
    id_number: str | None,
    birth: date,
    sex: str = "F",
    at: tuple[str, str, str] = NANTONG,
    guardians: Sequence[str] = (),
    doses: Sequence[tuple[str, int, date]] = (),
    stage: str = "child_clinic",
) -> int:
    """A registry file as the import would leave it; returns the vaccinee id."""
    vault = client.app[SERVICES].vault
    clinic_id = await clinic(client, *at)
    async with client.app[SESSIONS]() as session, session.begin():
        file = Vaccinee(
            registry_ref=ref,
            id_number_hash=vault.digest("id_number", id_number) if id_number else None,
            id_number_enc=vault.seal("id_number", id_number) if id_number else None,
            name_enc=vault.seal("name", name),
            birth_date_enc=vault.seal("birth_date", birth.isoformat()),
            effective_from=date(2020, 1, 1),
        )
        file.set_profile(vault, FileProfile(sex=sex, region_code=at[2], clinic_id=clinic_id, stage=Stage(stage)))
        session.add(file)
        await session.flush()
        for guardian in guardians:
            session.add(
                Guardian(
                    vaccinee_id=file.id,
                    id_number_hash=vault.digest("id_number", guardian),
                    id_number_enc=vault.seal("id_number", guardian),
                    relationship="guardian",
                )
            )
        for code, number, given in doses:
            session.add(Dose.sealed(vault, file.id, DoseDetail(code, number, given, clinic_id), effective_from=given))
        return file.id


async def verified(client: Client, platform: str, user_id: str, name: str, id_number: str, app_id: str) -> int:
    """A chat account bound to a verified identity, as a passed face verification leaves it."""
    vault = client.app[SERVICES].vault
    async with client.app[SESSIONS]() as session, session.begin():
        account = (
            await session.scalars(
                select(PlatformAccount).where(PlatformAccount.platform == platform, PlatformAccount.user_id == user_id)
            )
        ).first()
        if account is None:
            account = PlatformAccount(platform=platform, app_id=app_id, user_id=user_id, following=True)
            session.add(account)
            await session.flush()
        identity: Identity = await bind_verified(
            session, vault, account, id_number=id_number, name=name, method="face:test", now=utcnow()
        )
        return identity.id


__all__ = ["NANJING", "NANTONG", "clinic", "demo_id_number", "registry_file", "verified"]
