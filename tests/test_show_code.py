"""Show code (亮码接种): the code's format, the chat journey on both platforms, the code page, and 取号.

The QR images are read back with a real QR reader (zxing-cpp), as a clinic's scanner would read them;
what they hold goes to the desk through :func:`bot.desk.queue.take_number`.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import zxingcpp
from PIL import Image as PILImage
from sqlalchemy import select, update

from bot.certificates.rules import Grantee, add_grant, revoke_grant
from bot.core import qr as qr_drawing
from bot.core.pii import Vault
from bot.desk.queue import ClinicProblem, ClinicRefused, Ticket, take_number
from bot.dev.demo import CHILD, GRANDMA, PARENT
from bot.outbox.queue import SCRUBBED
from bot.showcode.codes import (
    CodeProblem,
    CodeRejected,
    issue_code,
    make_payload,
    parse_payload,
    qr,
    qr_png,
    redeem_code,
)
from bot.showcode.page import MIN_CODE_GAP
from bot.web.appkeys import ENGINE, SERVICES, SESSIONS
from models import (
    AuditEntry,
    Certificate,
    CodePage,
    CodeToken,
    Grant,
    Identity,
    PlatformAccount,
    QueueCounter,
    Visit,
    utcnow,
)
from tests.channels import Alipay, Channel, WeChat, link_in
from tests.helpers import Client, drain_outbox, outbox_rows, post, post_alipay
from tests.world import NANJING, clinic, registry_file, verified

SECRETS = [PARENT.name, PARENT.id_number, CHILD.name, CHILD.id_number, GRANDMA.name, GRANDMA.id_number]
CODE_SHAPE = re.compile(r"^VX1:[A-Z2-7]{24}:\d{10}:[A-Z2-7]{24}$")


def read_qr(png: bytes) -> str:
    """What a scanner reads from a PNG."""
    result = zxingcpp.read_barcode(PILImage.open(io.BytesIO(png)).convert("L"))
    assert result is not None, "no QR code found in the image"
    return str(result.text)


# --- the code itself ------------------------------------------------------------------------------------


def _vault(client: Client) -> Vault:
    return client.app[SERVICES].vault


def test_a_code_is_small_alphanumeric_and_reads_back() -> None:
    from bot.core.keys import Keyring

    vault = Vault(Keyring(data_keys={1: b"k" * 32}, active_kid=1, hash_key=b"h" * 32, dev=True))
    expires = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    payload = make_payload(vault, "A" * 24, expires)
    assert CODE_SHAPE.match(payload)
    symbol = qr(payload)
    assert symbol.mode == "alphanumeric" and symbol.error == "Q" and symbol.version <= 5
    assert read_qr(qr_png(payload)) == payload
    assert parse_payload(vault, payload, expires - timedelta(seconds=1)) == "A" * 24


def test_codes_that_are_refused_before_the_database() -> None:
    from bot.core.keys import Keyring

    vault = Vault(Keyring(data_keys={1: b"k" * 32}, active_kid=1, hash_key=b"h" * 32, dev=True))
    other = Vault(Keyring(data_keys={1: b"k" * 32}, active_kid=1, hash_key=b"x" * 32, dev=True))
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    payload = make_payload(vault, "B" * 24, now + timedelta(minutes=5))
    prefix, handle, expires, signature = payload.split(":")
    cases = {
        "": CodeProblem.MALFORMED,
        "hello": CodeProblem.MALFORMED,
        "https://example.com/code": CodeProblem.MALFORMED,
        payload + ":X": CodeProblem.MALFORMED,
        payload + "A" * 80: CodeProblem.MALFORMED,
        f"{prefix}:{handle}:x{expires[1:]}:{signature}": CodeProblem.MALFORMED,
        f"{prefix}:{handle}:{expires}\u00b2:{signature}": CodeProblem.MALFORMED,  # "²" passes str.isdigit
        f"{prefix}:{'C' * 24}:{expires}:{signature}": CodeProblem.FORGED,  # another handle, same signature
        f"{prefix}:{handle}:{int(expires) + 3600}:{signature}": CodeProblem.FORGED,  # a longer life
        f"{prefix}:{handle}:{expires}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}": CodeProblem.FORGED,
        f"{prefix}:{handle}:{expires}:{signature.lower()}": CodeProblem.FORGED,
        f"{prefix}:{handle}:{expires}:签名": CodeProblem.FORGED,
        make_payload(other, "B" * 24, now + timedelta(minutes=5)): CodeProblem.FORGED,  # another deployment
        make_payload(vault, "B" * 24, now): CodeProblem.EXPIRED,
    }
    for text, problem in cases.items():
        with pytest.raises(CodeRejected) as caught:
            parse_payload(vault, text, now)
        assert caught.value.problem is problem, text
    assert parse_payload(vault, f"  {payload}\n", now) == "B" * 24  # a scanner's trailing newline is fine


# --- a world with one child's certificate -----------------------------------------------------------------


async def _world(client: Client, channel: Channel, user: str) -> tuple[int, int]:
    """The child's file and certificate held by the parent, who is verified on ``channel``; returns ids."""
    vaccinee = await registry_file(
        client,
        ref="T-CHILD",
        name=CHILD.name,
        id_number=CHILD.id_number,
        birth=CHILD.birth,
        sex=CHILD.sex,
        guardians=[PARENT.id_number],
        doses=[("HepB", 1, CHILD.birth)],
    )
    identity = await verified(client, channel.platform, user, PARENT.name, PARENT.id_number, channel.app_id)
    async with client.app[SESSIONS]() as session, session.begin():
        certificate = Certificate(
            vaccinee_id=vaccinee, holder_identity_id=identity, kind="child", claimed_via=channel.platform
        )
        session.add(certificate)
        await session.flush()
        return identity, certificate.id


async def _scan(
    client: Client, payload: str, staff: str = "nurse-1", now: datetime | None = None, clinic: str = "T-NT-01"
) -> Ticket:
    services = client.app[SERVICES]
    async with client.app[SESSIONS]() as session, session.begin():
        try:
            return await take_number(
                session,
                services.vault,
                services.catalogue,
                clinic_code=clinic,
                pilot_regions=services.settings.pilot_regions,
                payload=payload,
                staff=staff,
                now=now or utcnow(),
            )
        except (CodeRejected, ClinicRefused) as exc:
            refused = exc  # committed all the same, as the desk does: the refusal is on record
    raise refused


async def _show(client: Client, channel: Channel, user: str) -> tuple[list[str], str, str]:
    """Tap 「亮码接种」: what the user read, the code in the image, and the code page's path."""
    before = len(channel.images(user))
    answers = await channel.do(user, ("click", "CODE_SHOW"))
    images = channel.images(user)[before:]
    assert len(images) == 1, answers
    pages = [
        urlsplit(link_in([answer])).path for answer in answers if answer.startswith("[链接]") and "/code/" in answer
    ]
    assert len(pages) == 1, answers
    return answers, read_qr(images[0]), pages[0]


# --- the journey ------------------------------------------------------------------------------------------


async def test_show_code_then_the_desk_takes_a_number(app_client: Client, channel: Channel, database_url: str) -> None:
    user = "o-code-parent" if channel.platform == "wechat" else "2088000000000801"
    identity, certificate = await _world(app_client, channel, user)
    answers, payload, page = await _show(app_client, channel, user)
    read = "\n".join(answers)
    assert "林*满的接种码" in read and "3206**********" in read and "30分钟内有效" in read
    assert CODE_SHAPE.match(payload)
    for secret in SECRETS:
        assert secret not in read and secret not in payload

    credentials = [row for row in await outbox_rows(app_client) if row.kind in ("image", "news")]
    assert len(credentials) == 2 and all(row.payload == SCRUBBED for row in credentials)  # delivered, not kept
    handle = page.rsplit("/", 1)[1]
    async with app_client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(CodePage.handle_hash))).all()
    assert handle not in str(stored) and len(stored) == 1  # the page's handle is stored hashed only

    ticket = await _scan(app_client, payload)
    assert (ticket.queue_number, ticket.already_queued, ticket.role) == (1, False, "holder")
    assert ticket.masked_name == "林*满" and ticket.certificate_id == certificate
    assert ticket.birth_year_month == f"{CHILD.birth.year:04d}-{CHILD.birth.month:02d}"
    await drain_outbox(app_client)
    told = channel.inbox(user)[-1]
    assert "排队号：1号" in told and "林*满" in told and CHILD.name not in told

    with pytest.raises(CodeRejected) as used:
        await _scan(app_client, payload)
    assert used.value.problem is CodeProblem.USED

    _, second, _ = await _show(app_client, channel, user)  # a new code the same day keeps the number
    again = await _scan(app_client, second)
    assert (again.queue_number, again.already_queued, again.visit_id) == (1, True, ticket.visit_id)

    async with app_client.app[SESSIONS]() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.certificate_id == certificate).order_by(AuditEntry.id)
            )
        ).all()
        tokens = (await session.scalars(select(CodeToken).where(CodeToken.certificate_id == certificate))).all()
    assert actions == ["code_show", "desk_queue", "desk_refused", "code_show", "desk_queue"]  # the used one too
    assert all(token.shown_by_identity_id == identity and token.used_at is not None for token in tokens)
    assert all(timedelta(minutes=29) < token.expires_at - token.created_at <= timedelta(minutes=30) for token in tokens)


async def _refusals(client: Client) -> list[tuple[str, int | None, int | None, str, dict[str, object]]]:
    """The desk's refusals on record, oldest first: (reason, certificate, file, actor, detail)."""
    async with client.app[SESSIONS]() as session:
        rows = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_refused").order_by(AuditEntry.id))
        ).all()
    return [(row.reason, row.certificate_id, row.vaccinee_id, row.actor_ref, row.detail) for row in rows]


async def test_the_desk_refuses_expired_and_unknown_codes(app_client: Client, channel: Channel) -> None:
    user = "o-code-late" if channel.platform == "wechat" else "2088000000000802"
    identity, certificate = await _world(app_client, channel, user)
    _, payload, _ = await _show(app_client, channel, user)
    with pytest.raises(CodeRejected) as late:
        await _scan(app_client, payload, now=utcnow() + timedelta(minutes=31))
    assert late.value.problem is CodeProblem.EXPIRED
    # Signed by us but never issued (the row is gone): unknown, and nothing is queued.
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(CodeToken).values(handle_hash="gone"))
    with pytest.raises(CodeRejected) as unknown:
        await _scan(app_client, payload)
    assert unknown.value.problem is CodeProblem.UNKNOWN
    async with app_client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Visit))).all() == []
        file = (await session.get(Certificate, certificate)) or pytest.fail("no certificate")
    # The late one is recorded against its certificate (its row said whose it was); the unknown one has none.
    assert await _refusals(app_client) == [
        ("expired", certificate, file.vaccinee_id, "clinic:T-NT-01:nurse-1", {"shown_by": f"identity:{identity}"}),
        ("unknown", None, None, "clinic:T-NT-01:nurse-1", {}),
    ]


async def test_every_desk_refusal_is_audited_with_its_reason(app_client: Client, channel: Channel) -> None:
    user = "o-code-refusals" if channel.platform == "wechat" else "2088000000000814"
    identity, certificate = await _world(app_client, channel, user)
    _, payload, _ = await _show(app_client, channel, user)
    prefix, handle, expires, signature = payload.split(":")
    forged = f"{prefix}:{handle}:{int(expires) + 3600}:{signature}"  # a longer life than it was signed for
    scans = {
        forged: CodeProblem.FORGED,
        "https://example.com/不是接种码": CodeProblem.MALFORMED,
    }
    for text, problem in scans.items():
        with pytest.raises(CodeRejected) as refused:
            await _scan(app_client, text, staff="nurse-2")
        assert refused.value.problem is problem
    await _scan(app_client, payload, staff="nurse-2")
    with pytest.raises(CodeRejected) as used:
        await _scan(app_client, payload, staff="nurse-3")
    assert used.value.problem is CodeProblem.USED
    refusals = await _refusals(app_client)
    assert [(reason, cert, actor) for reason, cert, _, actor, _ in refusals] == [
        ("forged", None, "clinic:T-NT-01:nurse-2"),  # no certificate: a forged code names none we can trust
        ("malformed", None, "clinic:T-NT-01:nurse-2"),
        ("used", certificate, "clinic:T-NT-01:nurse-3"),
    ]
    assert refusals[0][4] == refusals[1][4] == {} and refusals[2][4] == {"shown_by": f"identity:{identity}"}
    async with app_client.app[SESSIONS]() as session:
        recorded = str([(row.actor_ref, row.reason, row.detail) for row in (await session.scalars(select(AuditEntry)))])
    assert handle not in recorded and "example.com" not in recorded  # what was scanned is never recorded


async def test_a_desk_outside_the_registry_or_the_pilot_regions_is_refused_and_the_code_kept(
    app_client: Client, channel: Channel
) -> None:
    user = "o-code-far" if channel.platform == "wechat" else "2088000000000806"
    await _world(app_client, channel, user)
    _, payload, _ = await _show(app_client, channel, user)
    await clinic(app_client, *NANJING)  # a real clinic, in 3201: not a pilot region here
    for code, problem in (("NT-XX-99", ClinicProblem.UNKNOWN), (NANJING[0], ClinicProblem.NOT_PILOT)):
        with pytest.raises(ClinicRefused) as refused:
            await _scan(app_client, payload, clinic=code)
        assert refused.value.problem is problem
    async with app_client.app[SESSIONS]() as session:
        assert (await session.scalars(select(CodeToken.used_at))).all() == [None]  # the code is unspent
        assert (await session.scalars(select(Visit))).all() == []
        refusals = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_refused"))).all()
    assert sorted((row.reason, row.actor_ref) for row in refusals) == [
        ("clinic_not_pilot", "clinic:T-NJ-01:nurse-1"),
        ("clinic_unknown", "clinic:NT-XX-99:nurse-1"),
    ]
    message = app_client.app[SERVICES].catalogue("desk_clinic_not_pilot", clinic=NANJING[0])
    assert "不在电子预防接种证的试点地区" in message and "南通市" in message
    # The same code then takes a number at a pilot clinic.
    ticket = await _scan(app_client, payload)
    assert (ticket.queue_number, ticket.already_queued) == (1, False)


async def test_a_grantee_shows_the_code_until_the_grant_is_revoked(app_client: Client, channel: Channel) -> None:
    parent = "o-code-holder" if channel.platform == "wechat" else "2088000000000803"
    grandma = "o-code-grandma" if channel.platform == "wechat" else "2088000000000804"
    holder, certificate = await _world(app_client, channel, parent)
    await verified(app_client, channel.platform, grandma, GRANDMA.name, GRANDMA.id_number, channel.app_id)
    vault = _vault(app_client)
    settings = app_client.app[SERVICES].settings
    async with app_client.app[SESSIONS]() as session, session.begin():
        holder_row = await session.get(Identity, holder)
        certificate_row = await session.get(Certificate, certificate)
        assert holder_row is not None and certificate_row is not None
        grantee = Grantee(GRANDMA.id_number, GRANDMA.name, "grandmother", "13912345678")
        grant, refusal = await add_grant(
            session, vault, holder_row, certificate_row, grantee, settings, channel.platform, utcnow()
        )
        assert grant is not None, refusal
    await channel.do(parent, ("follow", ""))  # the holder talked to the account lately (the platforms' windows)
    _, first, _ = await _show(app_client, channel, grandma)
    assert (await _scan(app_client, first)).role == "grantee"
    await drain_outbox(app_client)
    assert "排队号：1号" in channel.inbox(grandma)[-1] and "排队号：1号" in channel.inbox(parent)[-1]
    answers, payload, page = await _show(app_client, channel, grandma)
    assert "林*满的接种码" in "\n".join(answers)
    async with app_client.app[SESSIONS]() as session, session.begin():
        holder_row = await session.get(Identity, holder)
        certificate_row = await session.get(Certificate, certificate)
        grant_row = await session.get(Grant, grant.id)
        assert holder_row is not None and certificate_row is not None and grant_row is not None
        assert await revoke_grant(session, holder_row, certificate_row, grant_row, channel.platform, utcnow())
    with pytest.raises(CodeRejected) as refused:
        await _scan(app_client, payload)
    assert refused.value.problem is CodeProblem.NO_ACCESS
    async with app_client.app[SESSIONS]() as session:
        refusal = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "desk_refused"))).one()
    assert refusal.certificate_id == certificate and refusal.actor_ref == "clinic:T-NT-01:nurse-1"
    response = await app_client.get(page)
    assert response.status == 403 and "授权可能已被取消" in await response.text()
    poll = await app_client.get(page + "/qr")
    assert poll.status == 403 and (await poll.json())["final"] is True
    grandma_id = refusal.detail["shown_by"]
    async with app_client.app[SESSIONS]() as session:
        pages = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "code_page_refused").order_by(AuditEntry.id)
            )
        ).all()
    assert [(row.reason, row.certificate_id, row.actor_ref, row.detail["endpoint"]) for row in pages] == [
        ("revoked", certificate, grandma_id, "page"),
        ("revoked", certificate, grandma_id, "qr"),
    ]
    assert "没有可以出示接种码" in "\n".join(await channel.do(grandma, ("click", "CODE_SHOW")))


async def test_show_code_needs_verification_and_a_certificate(app_client: Client, channel: Channel) -> None:
    stranger = "o-code-stranger" if channel.platform == "wechat" else "2088000000000805"
    assert "先完成实名认证" in "\n".join(await channel.do(stranger, ("click", "CODE_SHOW")))
    await verified(app_client, channel.platform, stranger, GRANDMA.name, GRANDMA.id_number, channel.app_id)
    assert "申领接种证" in "\n".join(await channel.do(stranger, ("text", "亮码")))
    assert channel.images(stranger) == []


async def test_choosing_among_several_certificates(app_client: Client, channel: Channel) -> None:
    user = "o-code-two" if channel.platform == "wechat" else "2088000000000806"
    identity, _ = await _world(app_client, channel, user)
    sibling = await registry_file(
        app_client, ref="T-SIB", name="林小禾", id_number=None, birth=date(2025, 2, 3), guardians=[PARENT.id_number]
    )
    async with app_client.app[SESSIONS]() as session, session.begin():
        session.add(Certificate(vaccinee_id=sibling, holder_identity_id=identity, kind="child", claimed_via="wechat"))
    listing = "\n".join(await channel.do(user, ("click", "CODE_SHOW")))
    assert "1. 林*满（子女）" in listing and "2. 林*禾（子女）" in listing
    assert "请回复列表中的序号" in await channel.say(user, "9")
    before = len(channel.images(user))
    answer = "\n".join(await channel.do(user, ("text", "2")))
    assert "林*禾的接种码" in answer and "暂无身份证号" in answer
    assert len(channel.images(user)) == before + 1

    # Child 2's certificate passes to someone else while the list is open: choosing it says so and lists
    # what is left, without acting on the one remaining certificate.
    await channel.do(user, ("click", "CODE_SHOW"))
    other = await verified(app_client, channel.platform, "someone-else", GRANDMA.name, GRANDMA.id_number, "x")
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(
            update(Certificate).where(Certificate.vaccinee_id == sibling).values(holder_identity_id=other)
        )
    before = len(channel.images(user))
    answer = "\n".join(await channel.do(user, ("text", "2")))
    assert "已无法查看" in answer and "1. 林*满（子女）" in answer and "林*禾" not in answer
    assert len(channel.images(user)) == before
    async with app_client.app[SESSIONS]() as session:
        lost = await session.scalar(select(Certificate.id).where(Certificate.vaccinee_id == sibling))
        refused = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "pick_refused"))).one()
    assert (refused.reason, refused.certificate_id, refused.vaccinee_id) == ("not_visible", lost, sibling)
    assert refused.actor_ref == f"identity:{identity}" and refused.platform == channel.platform
    assert refused.detail == {"journey": "ShowCodeSteps:choosing"}


async def test_a_choice_after_the_account_lost_its_verification_is_refused_and_audited(
    app_client: Client, channel: Channel
) -> None:
    user = "o-code-unbound" if channel.platform == "wechat" else "2088000000000815"
    identity, first = await _world(app_client, channel, user)
    sibling = await registry_file(
        app_client, ref="T-SIB2", name="林小禾", id_number=None, birth=date(2025, 2, 3), guardians=[PARENT.id_number]
    )
    async with app_client.app[SESSIONS]() as session, session.begin():
        session.add(Certificate(vaccinee_id=sibling, holder_identity_id=identity, kind="child", claimed_via="wechat"))
    assert "2. 林*禾（子女）" in "\n".join(await channel.do(user, ("click", "CODE_SHOW")))
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(PlatformAccount).where(PlatformAccount.user_id == user).values(identity_id=None))
    before = len(channel.images(user))
    assert "先完成实名认证" in "\n".join(await channel.do(user, ("text", "1")))
    assert len(channel.images(user)) == before
    async with app_client.app[SESSIONS]() as session:
        refused = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "pick_refused"))).one()
    assert (refused.reason, refused.certificate_id, refused.actor_kind) == ("not_verified", first, "account")
    assert refused.actor_ref.startswith(f"{channel.platform}:") and user not in refused.actor_ref


async def test_the_handler_queues_the_codes_text_and_the_sender_draws_it_off_the_event_loop(
    app_client: Client, channel: Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "o-code-drawn" if channel.platform == "wechat" else "2088000000000811"
    await _world(app_client, channel, user)
    drawn_on: list[int] = []
    draw = qr_drawing.qr_png

    def recording(text: str) -> bytes:
        drawn_on.append(threading.get_ident())
        return draw(text)

    monkeypatch.setattr(qr_drawing, "qr_png", recording)
    # The tap, answered and committed, but the outbox not yet run: nothing has been drawn.
    if isinstance(channel, WeChat):
        event = channel.sim.event(user, "CLICK", EventKey="CODE_SHOW")
        assert (await post(app_client, channel.sim.sign(event)))[0] == 200
        await app_client.app[ENGINE].drain(grace=5)
    else:
        assert isinstance(channel, Alipay)
        status, _, _ = await post_alipay(app_client, channel.sim.form(channel.sim.event(user, "click", "CODE_SHOW")))
        assert status == 200
    [queued] = await outbox_rows(app_client, kind="image", recipient=user)
    assert drawn_on == [] and set(queued.payload) == {"qr_text", "credential"}
    assert CODE_SHAPE.match(queued.payload["qr_text"]) and queued.payload["credential"] is True

    await drain_outbox(app_client)
    [image] = channel.images(user)
    assert read_qr(image) == queued.payload["qr_text"]
    assert len(drawn_on) == 1 and drawn_on[0] != threading.get_ident()  # in a worker thread, not the loop's
    [delivered] = await outbox_rows(app_client, kind="image", recipient=user)
    assert delivered.payload == SCRUBBED


# --- the code page ------------------------------------------------------------------------------------------


async def test_the_code_page_keeps_a_fresh_code(app_client: Client, channel: Channel) -> None:
    user = "o-code-page" if channel.platform == "wechat" else "2088000000000807"
    _, certificate = await _world(app_client, channel, user)
    _, _, page = await _show(app_client, channel, user)
    response = await app_client.get(page)
    body = await response.text()
    assert response.status == 200 and "林*满" in body and CHILD.name not in body and CHILD.id_number not in body
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src 'nonce-" in response.headers["Content-Security-Policy"]

    first = await app_client.get(page + "/qr")
    code = await first.json()
    assert first.status == 200 and code["svg"].startswith("<svg") and code["refresh_in"] == 60
    assert 170 <= code["expires_at"] - utcnow().timestamp() <= 180
    too_soon = await app_client.get(page + "/qr")
    assert too_soon.status == 429 and (await too_soon.json())["retry_in"] == MIN_CODE_GAP.total_seconds()

    async with app_client.app[SESSIONS]() as session, session.begin():  # the page's timer comes round
        await session.execute(update(CodePage).values(last_code_at=utcnow() - timedelta(minutes=1)))
    assert (await app_client.get(page + "/qr")).status == 200
    async with app_client.app[SESSIONS]() as session:
        issued = (await session.scalars(select(CodeToken).where(CodeToken.certificate_id == certificate))).all()
        views = (await session.scalars(select(AuditEntry).where(AuditEntry.action == "code_page_view"))).all()
    assert len(issued) == 3 and len(views) == 1  # the chat's code and two from the page; the page view audited

    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(CodePage).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = await app_client.get(page)
    assert expired.status == 410 and "已过期" in await expired.text()
    gone = await app_client.get(page + "/qr")
    assert gone.status == 410 and (await gone.json())["final"] is True
    unknown = await app_client.get("/code/not-a-real-handle")
    assert unknown.status == 404 and "链接无效" in await unknown.text()
    async with app_client.app[SESSIONS]() as session:
        refused = (
            await session.scalars(
                select(AuditEntry).where(AuditEntry.action == "code_page_refused").order_by(AuditEntry.id)
            )
        ).all()
    # The expired page, under its owner's name, against its certificate; the handle that matches no page
    # touches no certificate and leaves no row (anyone can type a URL).
    assert [(row.reason, row.certificate_id, row.actor_ref) for row in refused] == [
        ("expired", certificate, views[0].actor_ref),
        ("expired", certificate, views[0].actor_ref),
    ]


async def test_no_code_outlives_its_page(app_client: Client, channel: Channel) -> None:
    user = "o-code-end" if channel.platform == "wechat" else "2088000000000808"
    await _world(app_client, channel, user)
    _, _, page = await _show(app_client, channel, user)
    ends = utcnow() + timedelta(seconds=40)
    async with app_client.app[SESSIONS]() as session, session.begin():
        await session.execute(update(CodePage).values(expires_at=ends))
    code = await (await app_client.get(page + "/qr")).json()
    assert code["expires_at"] <= ends.timestamp()


# --- races --------------------------------------------------------------------------------------------------


async def test_two_desks_scanning_one_code_queue_it_once(app_client: Client, channel: Channel) -> None:
    user = "o-code-race" if channel.platform == "wechat" else "2088000000000809"
    await _world(app_client, channel, user)
    _, payload, _ = await _show(app_client, channel, user)
    results = await asyncio.gather(*(_scan(app_client, payload, f"desk-{n}") for n in range(4)), return_exceptions=True)
    tickets = [result for result in results if isinstance(result, Ticket)]
    refusals = [result for result in results if isinstance(result, CodeRejected)]
    assert len(tickets) == 1 and len(refusals) == 3, results
    assert all(refusal.problem is CodeProblem.USED for refusal in refusals)
    audited = await _refusals(app_client)
    assert sorted(actor for _, _, _, actor, _ in audited) == sorted(
        f"clinic:T-NT-01:desk-{n}" for n, result in enumerate(results) if isinstance(result, CodeRejected)
    )
    assert {reason for reason, *_ in audited} == {"used"}


async def test_children_scanned_at_once_get_distinct_numbers(app_client: Client, channel: Channel) -> None:
    user = "o-code-many" if channel.platform == "wechat" else "2088000000000810"
    identity, _ = await _world(app_client, channel, user)
    files = [
        await registry_file(app_client, ref=f"T-MANY-{n}", name=f"林{n}", id_number=None, birth=date(2024, 1, 1 + n))
        for n in range(6)
    ]
    payloads = []
    vault = _vault(app_client)
    async with app_client.app[SESSIONS]() as session, session.begin():
        for file in files:
            certificate = Certificate(vaccinee_id=file, holder_identity_id=identity, kind="child", claimed_via="t")
            session.add(certificate)
            await session.flush()
            issued = issue_code(
                session,
                vault,
                certificate_id=certificate.id,
                identity_id=identity,
                now=utcnow(),
                ttl=timedelta(minutes=5),
            )
            payloads.append(issued.payload)
    tickets = await asyncio.gather(*(_scan(app_client, payload) for payload in payloads))
    assert sorted(ticket.queue_number for ticket in tickets) == [1, 2, 3, 4, 5, 6]


async def test_redeem_is_single_use_even_inside_one_session(app_client: Client, channel: Channel) -> None:
    user = "o-code-once" if channel.platform == "wechat" else "2088000000000811"
    await _world(app_client, channel, user)
    _, payload, _ = await _show(app_client, channel, user)
    vault = _vault(app_client)
    async with app_client.app[SESSIONS]() as session, session.begin():
        token = await redeem_code(session, vault, payload, utcnow())
        assert token.used_at is not None
        with pytest.raises(CodeRejected):
            await redeem_code(session, vault, payload, utcnow())


async def test_two_codes_for_one_child_scanned_at_once_queue_it_once(app_client: Client, channel: Channel) -> None:
    user = "o-code-twice" if channel.platform == "wechat" else "2088000000000812"
    await _world(app_client, channel, user)
    _, first, _ = await _show(app_client, channel, user)
    _, second, _ = await _show(app_client, channel, user)
    tickets = await asyncio.gather(_scan(app_client, first, "desk-1"), _scan(app_client, second, "desk-2"))
    assert {ticket.queue_number for ticket in tickets} == {1}
    assert sorted(ticket.already_queued for ticket in tickets) == [False, True]
    async with app_client.app[SESSIONS]() as session:
        counter = await session.scalar(select(QueueCounter.last_number))
    assert counter == 1  # no number drawn for nothing


async def test_expired_codes_and_pages_are_pruned(app_client: Client, channel: Channel) -> None:
    from bot.core.scheduler import prune

    user = "o-code-prune" if channel.platform == "wechat" else "2088000000000813"
    await _world(app_client, channel, user)
    await _show(app_client, channel, user)
    await _show(app_client, channel, user)
    sessions = app_client.app[SESSIONS]
    async with sessions() as session, session.begin():
        first = await session.scalar(select(CodeToken.id).order_by(CodeToken.id))
        await session.execute(
            update(CodeToken).where(CodeToken.id == first).values(expires_at=utcnow() - timedelta(days=2))
        )
        page = await session.scalar(select(CodePage.id).order_by(CodePage.id))
        await session.execute(
            update(CodePage).where(CodePage.id == page).values(expires_at=utcnow() - timedelta(days=2))
        )
    await prune(sessions, timedelta(days=3), timedelta(days=30))
    async with sessions() as session:
        assert len((await session.scalars(select(CodeToken))).all()) == 1  # the live one stays
        assert len((await session.scalars(select(CodePage))).all()) == 1
