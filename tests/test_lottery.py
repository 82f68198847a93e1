"""Lotteries (摇号): the draw reproduced from published data alone, entering once, drawing once, offers passed
down in draw order, no-shows and the penalty (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import bot.cli
from bot.booking import bookings, draw, lottery
from bot.booking.lottery import ConfirmOutcome, EntryOutcome
from bot.booking.slots import SlotSpec
from bot.core.chinatime import CHINA
from bot.core.config import Settings
from bot.core.db import create_engine, sessionmaker
from bot.core.keys import load_keyring
from bot.core.pii import Vault
from bot.dev.demo import CLINICS, seed_demo_lottery
from models import Appointment, AppointmentStatus, Clinic, EntryStatus, Identity, Lottery, LotteryEntry, Slot, Vaccinee
from tests.test_cli import cli_env

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=CHINA)
CLOSES = datetime(2026, 12, 3, 10, 0, tzinfo=CHINA)
DAY = date(2026, 12, 10)


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, **({} if settings.database_url.startswith("sqlite") else {"pool_size": 8}))
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def vault(settings: Settings) -> Vault:
    return Vault(load_keyring(settings.keys_dir))


def _hashes(count: int, salt: str = "") -> list[str]:
    import hashlib

    return sorted(hashlib.sha256(f"{salt}{n}".encode()).hexdigest() for n in range(count))


# --- the pure draw -----------------------------------------------------------------------------


def test_the_draw_is_reproducible_and_one_bit_reorders_it() -> None:
    seed = "5" * 64
    entries = _hashes(2000)
    ranking = draw.rank(seed, entries)
    assert sorted(ranking) == entries and ranking != entries
    assert draw.rank(seed, list(entries)) == ranking  # the same published data, the same draw
    flipped = list(entries)
    flipped[700] = f"{int(flipped[700], 16) ^ 1:064x}"  # one bit of one entry hash
    flipped.sort()
    changed = draw.rank(seed, flipped)
    untouched = set(entries) & set(flipped)
    # Not only the changed entry moves: the list digest is in every key, so the others are reordered too.
    assert [value for value in changed if value in untouched] != [value for value in ranking if value in untouched]
    assert changed[:10] != ranking[:10]
    assert draw.rank("6" * 64, entries) != ranking  # another seed, another draw


def test_verify_refuses_a_seed_not_committed_and_a_tampered_record() -> None:
    seed, entries = draw.new_seed(), _hashes(50)
    record = draw.published(
        lottery="LT1",
        vaccine="HPV9",
        clinic="C1",
        places=5,
        registration_opens_at="2026-12-01T10:00:00+08:00",
        registration_closes_at="2026-12-03T10:00:00+08:00",
        seed_sha256=draw.commitment(seed),
        entries=entries,
        seed=seed,
        ranking=draw.rank(seed, entries),
    )
    assert draw.verify(json.loads(draw.dumps(record))) == []
    other = draw.new_seed()
    forged = {**record, "seed": other, "ranking": draw.rank(other, entries)}  # a consistent draw, wrong seed
    assert any("commitment" in problem for problem in draw.verify(forged))
    swapped = {**record, "ranking": [record["ranking"][1], record["ranking"][0], *record["ranking"][2:]]}
    assert any("ranking" in problem for problem in draw.verify(swapped))
    unsorted = {**record, "entries": list(reversed(entries))}
    assert draw.verify(unsorted) == ["the entry hashes must be sorted ascending with no repeats"]
    assert draw.verify({**record, "seed": None}) == ["not drawn yet: no seed or no ranking published"]


# --- stored lotteries ---------------------------------------------------------------------------


async def _world(
    sessions: async_sessionmaker[AsyncSession], vault: Vault, people: int, places: int
) -> tuple[int, int, list[int]]:
    """A clinic with one HPV9 lottery slot, one identity entering for everyone, ``people`` files; their ids."""
    async with sessions() as session, session.begin():
        clinic = Clinic(code="T-LT-01", name="测试预防接种门诊", region_code="320602")
        identity = Identity(
            id_number_hash="h-parent", id_number_enc=b"x", name_enc=b"x", verified_at=NOW, verification_method="face"
        )
        files = [
            Vaccinee(
                registry_ref=f"R{n}",
                id_number_hash=f"{n:064x}",
                name_enc=b"x",
                birth_date_enc=b"x",
                profile_enc=b"x",
                effective_from=DAY,
            )
            for n in range(people)
        ]
        session.add_all([clinic, identity, *files])
        await session.flush()
        spec = SlotSpec("HPV9", DAY, time(9), time(11), places)
        _, made = await lottery.publish_lottery(
            session, vault, clinic.id, spec, opens_at=NOW, closes_at=CLOSES, confirm_hours=24
        )
        return made.id, identity.id, [file.id for file in files]


async def _enter(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    lottery_id: int,
    file_id: int,
    identity_id: int,
    **kw: object,
) -> lottery.EntryResult:
    when = kw.pop("now", NOW + timedelta(hours=1))
    async with sessions() as session, session.begin():
        return await lottery.enter(
            session,
            vault,
            lottery_id,
            file_id,
            identity_id,
            when,
            penalty_days=180,  # type: ignore[arg-type]
        )


async def _draw(sessions: async_sessionmaker[AsyncSession], vault: Vault, lottery_id: int, now: datetime) -> bool:
    async with sessions() as session, session.begin():
        return await lottery.draw_lottery(session, vault, lottery_id, now)


async def _entries(sessions: async_sessionmaker[AsyncSession], lottery_id: int) -> list[LotteryEntry]:
    async with sessions() as session:
        query = select(LotteryEntry).where(LotteryEntry.lottery_id == lottery_id).order_by(LotteryEntry.rank)
        return list((await session.scalars(query)).all())


async def test_one_entry_per_person_even_at_once_and_only_in_the_window(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    lottery_id, identity_id, files = await _world(sessions, vault, 3, 1)
    early = await _enter(sessions, vault, lottery_id, files[0], identity_id, now=NOW - timedelta(minutes=1))
    assert early.outcome == EntryOutcome.NOT_OPEN
    first = await _enter(sessions, vault, lottery_id, files[0], identity_id)
    again = await _enter(sessions, vault, lottery_id, files[0], identity_id)  # a retry: the same entry
    assert first.outcome == EntryOutcome.ENTERED and again.outcome == EntryOutcome.ALREADY
    assert first.entry is not None and again.entry is not None and again.entry.id == first.entry.id
    both = await asyncio.gather(*(_enter(sessions, vault, lottery_id, files[1], identity_id) for _ in range(2)))
    assert sorted(result.outcome for result in both) == [EntryOutcome.ALREADY, EntryOutcome.ENTERED]
    late = await _enter(sessions, vault, lottery_id, files[2], identity_id, now=CLOSES)
    assert late.outcome == EntryOutcome.CLOSED
    entries = await _entries(sessions, lottery_id)
    assert len(entries) == 2 and len({entry.entry_hash for entry in entries}) == 2
    async with sessions() as session:
        stored = await session.get(Lottery, lottery_id)
        assert stored is not None and stored.entry_count == 2 and stored.seed is None
        # The entry hash is keyed per lottery: no ID hash is published as it is.
        person = await session.get(Vaccinee, files[0])
        assert person is not None and person.id_number_hash not in {entry.entry_hash for entry in entries}


async def test_drawn_once_exported_and_verified_from_the_file_alone(
    sessions: async_sessionmaker[AsyncSession],
    vault: Vault,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lottery_id, identity_id, files = await _world(sessions, vault, 12, 3)
    for file_id in files:
        assert (await _enter(sessions, vault, lottery_id, file_id, identity_id)).outcome == EntryOutcome.ENTERED
    assert not await _draw(sessions, vault, lottery_id, CLOSES - timedelta(seconds=1))  # registration still open
    attempts = await asyncio.gather(*(_draw(sessions, vault, lottery_id, CLOSES) for _ in range(2)))
    assert sorted(attempts) == [False, True]  # two processes at once: drawn once
    entries = await _entries(sessions, lottery_id)
    assert [entry.rank for entry in entries] == list(range(1, 13))
    assert [entry.status for entry in entries] == [EntryStatus.OFFERED] * 3 + [EntryStatus.WAITING] * 9
    async with sessions() as session:
        record = await lottery.published_record(session, lottery_id)
    assert record is not None and record["ranking"] == [entry.entry_hash for entry in entries]
    text = draw.dumps(record)
    assert "h-parent" not in text and all(f"{n:064x}" not in text for n in range(12))  # no ID hash published
    path = tmp_path / "published.json"
    path.write_text(text, encoding="utf-8")
    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert bot.cli.main(["lottery", "verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("OK: lottery LT")
    tampered = dict(record)
    tampered["entries"] = sorted([*record["entries"][:-1], f"{int(record['entries'][-1], 16) ^ 1:064x}"])
    path.write_text(draw.dumps(tampered), encoding="utf-8")
    assert bot.cli.main(["lottery", "verify", str(path)]) == 1
    assert capsys.readouterr().out.startswith("MISMATCH")


async def test_confirmation_and_pass_down_in_draw_order(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    lottery_id, identity_id, files = await _world(sessions, vault, 5, 2)
    for file_id in files:
        await _enter(sessions, vault, lottery_id, file_id, identity_id)
    assert await _draw(sessions, vault, lottery_id, CLOSES)
    first, second, third, fourth, _ = await _entries(sessions, lottery_id)
    async with sessions() as session:
        stored = await session.get(Lottery, lottery_id)
        assert stored is not None
        slot_id = stored.slot_id
    # The lottery's places are never booked first come.
    async with sessions() as session, session.begin():
        refused = await bookings.book(session, slot_id, fourth.vaccinee_id, identity_id, "first-come", CLOSES)
        assert refused.outcome == bookings.Outcome.CLOSED
        waiting = await lottery.confirm(session, fourth.id, identity_id, CLOSES)
        assert waiting.outcome == ConfirmOutcome.NOT_OFFERED
    async with sessions() as session, session.begin():
        done = await lottery.confirm(session, first.id, identity_id, CLOSES + timedelta(hours=1))
        assert done.outcome == ConfirmOutcome.CONFIRMED and done.appointment is not None
    async with sessions() as session, session.begin():
        again = await lottery.confirm(session, first.id, identity_id, CLOSES + timedelta(hours=2))
        assert again.outcome == ConfirmOutcome.ALREADY and again.appointment is not None
        assert again.appointment.id == done.appointment.id
    deadline = CLOSES + timedelta(hours=24)
    async with sessions() as session, session.begin():
        assert await lottery.pass_down(session, lottery_id, deadline - timedelta(minutes=1)) == []
    async with sessions() as session, session.begin():
        late = await lottery.confirm(session, second.id, identity_id, deadline)
        assert late.outcome == ConfirmOutcome.LAPSED
    passes = []
    for _ in range(2):  # two processes in turn: the place goes down once
        async with sessions() as session, session.begin():
            passes.append(await lottery.pass_down(session, lottery_id, deadline))
    assert passes == [[third.id], []]  # the next in draw order, not the fourth
    async with sessions() as session, session.begin():
        lapsed = await session.get(LotteryEntry, second.id)
        assert lapsed is not None and lapsed.status == EntryStatus.LAPSED
        taken = await lottery.confirm(session, third.id, identity_id, deadline + timedelta(hours=1))
        assert taken.outcome == ConfirmOutcome.CONFIRMED
    async with sessions() as session:
        slot = await session.get(Slot, slot_id)
        assert slot is not None and slot.booked == 2 == await bookings.count_active(session, slot_id)
        counted = await lottery.counts(session, lottery_id)
    assert counted == {"confirmed": 2, "lapsed": 1, "waiting": 2, "entries": 5}
    # A winner cancels: the place goes to the next on the waiting list.
    async with sessions() as session, session.begin():
        assert await bookings.cancel(session, done.appointment.id, deadline + timedelta(hours=2))
    async with sessions() as session, session.begin():
        assert await lottery.pass_down(session, lottery_id, deadline + timedelta(hours=3)) == [fourth.id]


async def test_no_shows_marked_once_and_the_penalty_refuses_a_later_entry(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    lottery_id, identity_id, files = await _world(sessions, vault, 2, 2)
    for file_id in files:
        await _enter(sessions, vault, lottery_id, file_id, identity_id)
    await _draw(sessions, vault, lottery_id, CLOSES)
    entries = await _entries(sessions, lottery_id)
    for entry in entries:
        async with sessions() as session, session.begin():
            assert (await lottery.confirm(session, entry.id, identity_id, CLOSES)).outcome == ConfirmOutcome.CONFIRMED
    came, missed = entries
    async with sessions() as session, session.begin():
        slot = await session.scalar(select(Slot).where(Slot.mode == "lottery"))
        assert slot is not None
        day_start = datetime.combine(DAY, time(0), tzinfo=CHINA)
        assert await bookings.mark_attended(session, came.vaccinee_id, slot.clinic_id, day_start) == 1
        assert await lottery.mark_no_shows(session, datetime.combine(DAY, time(23, 59), tzinfo=CHINA)) == 0
    after = datetime.combine(DAY + timedelta(days=1), time(0, 5), tzinfo=CHINA)
    for expected in (1, 0):  # once
        async with sessions() as session, session.begin():
            assert await lottery.mark_no_shows(session, after) == expected
    async with sessions() as session:
        statuses = {
            row[0]: row[1] for row in await session.execute(select(Appointment.vaccinee_id, Appointment.status))
        }
    assert statuses == {came.vaccinee_id: AppointmentStatus.ATTENDED, missed.vaccinee_id: AppointmentStatus.NO_SHOW}
    # The next HPV9 lottery: the one who did not come cannot enter for 180 days; the other can.
    async with sessions() as session, session.begin():
        clinic_id = slot.clinic_id
        spec = SlotSpec("HPV9", DAY + timedelta(days=40), time(9), time(11), 2)
        _, later = await lottery.publish_lottery(
            session, vault, clinic_id, spec, opens_at=after, closes_at=after + timedelta(days=7), confirm_hours=24
        )
    refused = await _enter(sessions, vault, later.id, missed.vaccinee_id, identity_id, now=after + timedelta(hours=1))
    assert refused.outcome == EntryOutcome.PENALISED
    assert refused.penalty_until == datetime.combine(DAY, time(9), tzinfo=CHINA) + timedelta(days=180)
    entered = await _enter(sessions, vault, later.id, came.vaccinee_id, identity_id, now=after + timedelta(hours=1))
    assert entered.outcome == EntryOutcome.ENTERED
    async with sessions() as session:
        assert await lottery.penalty_until(session, missed.vaccinee_id, "HPV9", after, 0) is None  # 0: no penalty


def test_lottery_published_and_drawn_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in cli_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert bot.cli.main(["init"]) == 0
    assert bot.cli.main(["clinic", "add", "--code", "T-LT-CLI", "--name", "测试门诊", "--region", "320602"]) == 0
    capsys.readouterr()
    add = ["clinic", "slot", "add", "--clinic", "T-LT-CLI", "--vaccine", "HPV9", "--day", "2030-03-01"]
    window = ["--start", "09:00", "--end", "10:30", "--capacity", "30", "--price", "1318"]
    registration = ["--lottery-opens", "2020-01-01T08:00", "--lottery-closes", "2020-01-02T08:00"]
    assert bot.cli.main([*add, *window, *registration]) == 0
    published = capsys.readouterr().out
    assert "by lottery LT" in published
    public_id = published.split("by lottery ")[1].split()[0]
    assert bot.cli.main(["lottery", "draw", public_id]) == 0
    assert bot.cli.main(["lottery", "draw", public_id]) == 1  # drawn already
    out = tmp_path / "out.json"
    assert bot.cli.main(["lottery", "export", public_id, "--out", str(out)]) == 0
    assert bot.cli.main(["lottery", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out
    assert bot.cli.main(["lottery", "export", "LT-NOPE"]) == 1


async def test_the_demo_world_gets_an_hpv9_lottery_once(
    sessions: async_sessionmaker[AsyncSession], vault: Vault
) -> None:
    async with sessions() as session, session.begin():
        for code, name, region in CLINICS:
            session.add(Clinic(code=code, name=name, region_code=region))
    today = date(2026, 12, 7)
    assert await seed_demo_lottery(sessions, vault, today) == 1
    assert await seed_demo_lottery(sessions, vault, today) == 0  # once
    async with sessions() as session:
        ((made, slot),) = (await session.execute(select(Lottery, Slot).join(Slot, Slot.id == Lottery.slot_id))).all()
    assert made.vaccine_code == slot.vaccine_code == "HPV9" and slot.mode == "lottery" and made.places == 30
    assert made.registration_closes_at < slot.starts_at - timedelta(hours=made.confirm_hours)
