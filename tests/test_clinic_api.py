"""The clinic API (/clinic/api/v1): the whole desk flow, every rejection of a signed request, another clinic.

The requests are signed as a clinic's system would sign them (docs/clinic-api.md), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import secrets
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import bot.cli
from bot.core.chinatime import china_date
from bot.desk.clinics import (
    HEADER_KEY,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    IssuedKey,
    add_api_key,
    sign,
)
from bot.desk.filing import FilingDetails, issue_filing_code, request_filing
from bot.dev.demo import CHILD
from bot.showcode.codes import issue_code
from bot.web.appkeys import SERVICES, SESSIONS
from models import AuditEntry, ClinicApiKey, Dose, DoseSource, Identity, Visit, VisitStatus, utcnow
from tests.desk_kit import DeskWorld, desk_world, plan
from tests.helpers import Client
from tests.world import NANJING, NANTONG

WECHAT_APP = "wx0000000000de0001"
HEALTHY = {"fever": False, "allergies": False, "recent_vaccines": False, "contraindications": False}
GIVEN = {"site": "left_deltoid", "route": "intramuscular", "vaccinator": "王护士"}


class ClinicSystem:
    """A clinic information system: signs every request with its key."""

    def __init__(self, client: Client, key: IssuedKey) -> None:
        self.client, self.key = client, key
        self.clock_offset = timedelta(0)

    def headers(self, method: str, path_qs: str, body: bytes, *, nonce: str | None = None) -> dict[str, str]:
        """The signing headers for one request."""
        timestamp = str(int((utcnow() + self.clock_offset).timestamp()))
        nonce = nonce or secrets.token_urlsafe(16)
        return {
            HEADER_KEY: self.key.key_id,
            HEADER_TIMESTAMP: timestamp,
            HEADER_NONCE: nonce,
            HEADER_SIGNATURE: sign(self.key.secret, method, path_qs, timestamp, nonce, body),
            "Content-Type": "application/json",
        }

    async def call(self, method: str, path_qs: str, data: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One signed request; (status, JSON answer)."""
        body = json.dumps(data, ensure_ascii=False).encode() if data is not None else b""
        response = await self.client.request(method, path_qs, data=body, headers=self.headers(method, path_qs, body))
        return response.status, await response.json()


async def _key(client: Client, clinic_code: str) -> IssuedKey:
    async with client.app[SESSIONS]() as session, session.begin():
        return await add_api_key(session, client.app[SERVICES].vault, clinic_code, label="HIS")


async def _code(client: Client, world: DeskWorld, shown_by: int) -> str:
    async with client.app[SESSIONS]() as session, session.begin():
        issued = issue_code(
            session,
            client.app[SERVICES].vault,
            certificate_id=world.certificate_id,
            identity_id=shown_by,
            now=utcnow(),
            ttl=timedelta(minutes=5),
        )
    return issued.payload


API = "/clinic/api/v1"


async def test_the_whole_desk_flow_through_the_api(app_client: Client) -> None:
    client = app_client
    world = await desk_world(client, "wechat", WECHAT_APP)
    system = ClinicSystem(client, await _key(client, NANTONG[0]))
    status, ticket = await system.call("POST", f"{API}/scan", {"code": await _code(client, world, world.grandma_id)})
    assert status == 200, ticket
    assert ticket["masked_name"] == "林*满" and ticket["role"] == "grantee"
    visit = ticket["visit_id"]
    day = china_date(utcnow()).isoformat()
    status, queue = await system.call("GET", f"{API}/visits?date={day}")
    assert status == 200 and [line["visit_id"] for line in queue["visits"]] == [visit]
    status, called = await system.call("POST", f"{API}/visits/next")
    assert status == 200 and called["visit"]["visit_id"] == visit
    status, detail = await system.call("GET", f"{API}/visits/{visit}")
    assert status == 200 and detail["name"] == CHILD.name and detail["birth_date"] == CHILD.birth.isoformat()
    assert {"vaccine_code": "HepB", "dose_number": 2} in [
        {"vaccine_code": due["vaccine_code"], "dose_number": due["dose_number"]} for due in detail["due"]
    ]
    status, compared = await system.call("GET", f"{API}/visits/{visit}/compare")
    assert status == 200 and compared == {"mismatches": []}  # the holder is the file's guardian
    status, resolved = await system.call("POST", f"{API}/visits/{visit}/resolve", {"resolutions": {"name": "merge"}})
    assert status == 400 and resolved["error"] == "bad_request"
    # No 接种 before 登记 and 一验证: refused with its reason, in Chinese, and nothing recorded.
    status, refused = await system.call("POST", f"{API}/visits/{visit}/vaccinate", GIVEN)
    assert status == 409 and refused["error"] == "out_of_order" and "登记" in refused["message"]
    status, registered = await system.call("POST", f"{API}/visits/{visit}/register", {**HEALTHY, "desk": "2号接种台"})
    assert status == 200 and registered["status"] == "registered"
    dose_plan = plan()
    body = {
        "vaccine_code": dose_plan.vaccine_code,
        "dose_number": dose_plan.dose_number,
        "lot_number": dose_plan.lot_number,
        "manufacturer": dose_plan.manufacturer,
        "expires_on": dose_plan.expires_on.isoformat(),
    }
    expired = {**body, "expires_on": (china_date(utcnow()) - timedelta(days=1)).isoformat()}
    status, refused = await system.call("POST", f"{API}/visits/{visit}/confirmation", expired)
    assert status == 422 and refused["error"] == "expired_lot" and "过期" in refused["message"]
    status, asked = await system.call("POST", f"{API}/visits/{visit}/confirmation", body)
    assert status == 200 and asked["confirmation_requested"] is True
    status, verified = await system.call("POST", f"{API}/visits/{visit}/confirm-in-person", {"reason": "奶奶当面核对"})
    assert status == 200 and verified["status"] == "verified"
    status, observing = await system.call("POST", f"{API}/visits/{visit}/vaccinate", GIVEN)
    assert status == 200 and observing["status"] == "observing" and observing["observation_ends_at"]
    status, again = await system.call("POST", f"{API}/visits/{visit}/vaccinate", GIVEN)  # a retried request
    assert status == 200 and again["status"] == "observing"
    status, watching = await system.call("GET", f"{API}/observing")
    assert status == 200 and [line["visit_id"] for line in watching["visits"]] == [visit]
    status, refused = await system.call("POST", f"{API}/visits/{visit}/finish", {})
    assert status == 409 and refused["error"] == "observation_not_over"
    status, done = await system.call(
        "POST", f"{API}/visits/{visit}/finish", {"early_reason": "家长坚持离开，已告知风险"}
    )
    assert status == 200 and done["status"] == "done"
    status, summary = await system.call("GET", f"{API}/summary?date={day}")
    assert status == 200 and summary["doses_given"] == 1 and summary["by_vaccine"] == {"HepB": 1}
    async with client.app[SESSIONS]() as session:
        doses = (await session.scalars(select(Dose).where(Dose.vaccinee_id == world.vaccinee_id))).all()
        details = [dose.detail(client.app[SERVICES].vault) for dose in doses]
        actors = {
            entry.actor_ref
            for entry in (await session.scalars(select(AuditEntry))).all()
            if entry.action in ("desk_register", "desk_vaccinate", "desk_detail_viewed")
        }
    assert [(d.vaccine_code, d.dose_number, d.source) for d in details if d.source == DoseSource.CLINIC] == [
        ("HepB", 2, DoseSource.CLINIC)
    ]
    key_row = system.key
    assert (
        len(actors) == 1
        and next(iter(actors)).startswith("clinic-api:")
        and actors.pop().endswith(f"@clinic:{key_row.clinic_id}")
    )


async def test_every_rejection_of_a_signed_request(app_client: Client) -> None:
    client = app_client
    await desk_world(client, "wechat", WECHAT_APP)
    system = ClinicSystem(client, await _key(client, NANTONG[0]))
    path = f"{API}/visits"

    async def status_of(headers: dict[str, str], method: str = "GET", url: str = path, body: bytes = b"") -> str:
        response = await client.request(method, url, data=body, headers=headers)
        answer = await response.json()
        return f"{response.status} {answer.get('error', 'ok') if isinstance(answer, dict) else 'ok'}"

    assert await status_of(system.headers("GET", path, b"")) == "200 ok"
    # Unsigned, or a header missing.
    assert await status_of({}) == "401 unsigned"
    for missing in (HEADER_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE):
        headers = system.headers("GET", path, b"")
        del headers[missing]
        assert await status_of(headers) == "401 unsigned", missing
    # An unknown key; a key of the right shape signed with another secret.
    assert await status_of({**system.headers("GET", path, b""), HEADER_KEY: "ck_0000000000000000"}) == (
        "401 unknown_key"
    )
    forged = ClinicSystem(client, IssuedKey(system.key.key_id, secrets.token_urlsafe(32), system.key.clinic_id))
    assert await status_of(forged.headers("GET", path, b"")) == "401 bad_signature"
    # What was signed is not what was sent: another path, query, method or body.
    assert await status_of(system.headers("GET", f"{API}/observing", b"")) == "401 bad_signature"
    assert await status_of(system.headers("GET", path, b""), url=f"{path}?date=2026-01-01") == "401 bad_signature"
    body = json.dumps(HEALTHY).encode()
    signed = system.headers("POST", f"{API}/visits/1/register", body)
    tampered = json.dumps({**HEALTHY, "fever": True}).encode()
    assert await status_of(signed, "POST", f"{API}/visits/1/register", tampered) == "401 bad_signature"
    # A stale or future timestamp.
    system.clock_offset = timedelta(minutes=-6)
    assert await status_of(system.headers("GET", path, b"")) == "401 stale"
    system.clock_offset = timedelta(minutes=6)
    assert await status_of(system.headers("GET", path, b"")) == "401 stale"
    system.clock_offset = timedelta(minutes=4)
    assert await status_of(system.headers("GET", path, b"")) == "200 ok"
    system.clock_offset = timedelta(0)
    # A replay: the same request again, byte for byte.
    headers = system.headers("GET", path, b"")
    assert await status_of(headers) == "200 ok"
    assert await status_of(headers) == "401 replay"
    # A revoked key.
    async with client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(ClinicApiKey).where(ClinicApiKey.key_id == system.key.key_id).values(revoked_at=utcnow())
        )
    assert await status_of(system.headers("GET", path, b"")) == "401 unknown_key"
    # The correctly signed refusals are on record under the key (bad signatures and unknown keys are only
    # logged: a key's public id alone must not be able to fill the audit log).
    async with client.app[SESSIONS]() as session:
        refused = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "clinic_api_refused"))).all()
    assert sorted({entry.reason for entry in refused}) == ["replay", "stale"]
    assert all(
        entry.actor_ref.startswith("clinic-api:") and entry.actor_ref.endswith(f"@clinic:{system.key.clinic_id}")
        for entry in refused
    )


async def test_another_clinics_key_sees_and_does_nothing(app_client: Client) -> None:
    client = app_client
    world = await desk_world(client, "wechat", WECHAT_APP)
    ours = ClinicSystem(client, await _key(client, NANTONG[0]))
    theirs = ClinicSystem(client, await _key(client, NANJING[0]))
    status, ticket = await ours.call("POST", f"{API}/scan", {"code": await _code(client, world, world.parent_id)})
    assert status == 200
    visit = ticket["visit_id"]
    status, queue = await theirs.call("GET", f"{API}/visits")
    assert status == 200 and queue == {"visits": []}
    status, called = await theirs.call("POST", f"{API}/visits/next")
    assert status == 200 and called == {"visit": None}
    for method, path, data in (
        ("GET", f"{API}/visits/{visit}", None),
        ("POST", f"{API}/visits/{visit}/register", HEALTHY),
        ("POST", f"{API}/visits/{visit}/confirm-in-person", {"reason": "当面核对"}),
        ("POST", f"{API}/visits/{visit}/vaccinate", GIVEN),
        ("POST", f"{API}/visits/{visit}/finish", {}),
    ):
        status, answer = await theirs.call(method, path, data)
        assert status == 404 and answer["error"] == "not_found", (path, answer)
        assert CHILD.name not in json.dumps(answer, ensure_ascii=False)
    # Their key cannot spend our family's code at their desk either: outside the pilot regions it is refused
    # before the code is read.
    status, answer = await theirs.call("POST", f"{API}/scan", {"code": await _code(client, world, world.parent_id)})
    assert status == 422 and answer["error"] == "clinic_not_pilot"
    async with client.app[SESSIONS]() as session:
        row = await session.get(Visit, visit)
    assert row is not None and row.status == VisitStatus.QUEUED


async def test_bad_bodies_are_refused_plainly(app_client: Client) -> None:
    client = app_client
    await desk_world(client, "wechat", WECHAT_APP)
    system = ClinicSystem(client, await _key(client, NANTONG[0]))
    status, answer = await system.call("POST", f"{API}/visits/1/register", {"fever": "no"})
    assert status == 400 and answer["error"] == "bad_request"
    status, answer = await system.call("GET", f"{API}/visits?date=tomorrow")
    assert status == 400 and answer["error"] == "bad_request"
    status, answer = await system.call("POST", f"{API}/scan", {"code": "not a code"})
    assert status == 422 and answer["error"] == "malformed"


def test_cli_adds_a_clinic_and_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from tests.test_cli import cli_env

    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bot.cli, "configure_logging", lambda *args, **kwargs: None)
    assert bot.cli.main(["init"]) == 0
    add = ["clinic", "add", "--code", "NT-GZ-02", "--name", "南通市港闸区测试门诊", "--region", "320611"]
    assert bot.cli.main(add) == 0
    assert "NT-GZ-02" in capsys.readouterr().out
    assert bot.cli.main(add) == 1  # the same code again
    assert "exists already" in capsys.readouterr().err
    assert bot.cli.main(["clinic", "add", "--code", "X", "--name", "门诊", "--region", "32"]) == 1
    capsys.readouterr()
    assert bot.cli.main(["clinic", "key", "add", "--clinic", "NT-GZ-02", "--label", "HIS"]) == 0
    out = capsys.readouterr().out
    assert "key id:  ck_" in out and "secret:  " in out
    secret = out.split("secret:  ", 1)[1].split()[0]
    assert len(secret) >= 40
    assert secret.encode() not in (tmp_path / "vaxbot.db").read_bytes()  # sealed, never stored in the clear
    assert bot.cli.main(["clinic", "key", "add", "--clinic", "NT-NO-00"]) == 1
    key_id = out.split("key id:  ", 1)[1].split()[0]
    assert bot.cli.main(["clinic", "key", "revoke", key_id]) == 0
    assert bot.cli.main(["clinic", "key", "revoke", key_id]) == 1  # revoked already


async def test_auto_filing_through_the_api(app_client: Client) -> None:
    client = app_client
    services = client.app[SERVICES]
    world = await desk_world(client, "wechat", WECHAT_APP)
    system = ClinicSystem(client, await _key(client, NANTONG[0]))
    baby = FilingDetails(name="林小安", sex="F", birth_date=date(2026, 11, 2), birth_cert_no="Q320261202")
    async with client.app[SESSIONS]() as session, session.begin():
        parent = await session.get(Identity, world.parent_id)
        assert parent is not None
        request = await request_filing(session, services.vault, parent, baby, "child", utcnow())
        code = issue_filing_code(
            session, services.vault, request, identity_id=parent.id, now=utcnow(), ttl=timedelta(minutes=5)
        ).payload
    status, ticket = await system.call("POST", f"{API}/scan", {"code": code})
    assert status == 200 and ticket["role"] == "filing" and ticket["certificate_id"] is None
    visit = ticket["visit_id"]
    status, refused = await system.call("GET", f"{API}/visits/{visit}")
    assert status == 409 and refused["error"] == "not_filed"
    status, view = await system.call("GET", f"{API}/visits/{visit}/filing")
    assert status == 200 and view["details"]["name"] == "林小安" and view["existing_vaccinee_id"] is None
    status, bad = await system.call("POST", f"{API}/visits/{visit}/file", {"resolutions": {"name": "overwrite"}})
    assert status == 400 and bad["error"] == "bad_request"
    status, filed = await system.call("POST", f"{API}/visits/{visit}/file", {})
    assert status == 200 and filed["visit_id"] == visit
    status, detail = await system.call("GET", f"{API}/visits/{visit}")
    assert status == 200 and detail["name"] == "林小安" and detail["sex"] == "F"
