"""Who may have a self-paid vaccine on a day: age, sex, dose count and spacing, read from the table."""

from __future__ import annotations

from datetime import date

import pytest

from bot.immunization.eligibility import RULES, Refusal, may_have_on, next_dose, self_paid_now
from bot.immunization.forecast import GivenDose

GIRL = date(2016, 3, 1)  # ten in 2026
TODAY = date(2026, 12, 1)


def _codes(birth: date, sex: str, given: list[GivenDose] | None = None, on: date = TODAY) -> set[str]:
    return {dose.vaccine_code for dose in self_paid_now(birth, sex, given or [], on)}


def test_hpv9_only_for_women_and_girls_from_9_to_45() -> None:
    assert "HPV9" in _codes(GIRL, "F") and "HPV4" in _codes(GIRL, "F")
    assert "HPV9" not in _codes(GIRL, "M")
    assert "HPV9" not in _codes(date(2018, 3, 1), "F")  # eight
    assert "HPV9" in _codes(date(1981, 12, 2), "F")  # 44, her 45th birthday tomorrow: still 45 for a year
    assert "HPV9" not in _codes(date(1980, 12, 1), "F")  # 46 today
    assert may_have_on(GIRL, "M", [], "HPV9", TODAY).refusal == Refusal.SEX
    # The 46th birthday falls inside the booking horizon: a slot on that day is refused, the day before is not.
    woman = date(1980, 12, 20)
    assert may_have_on(woman, "F", [], "HPV9", date(2026, 12, 19)).allowed
    assert may_have_on(woman, "F", [], "HPV9", date(2026, 12, 20)).refusal == Refusal.TOO_OLD


def test_hpv9_spacing_and_three_doses() -> None:
    first = [GivenDose("HPV9", 1, date(2026, 11, 10))]
    dose = next_dose(GIRL, "F", first, "HPV9", TODAY)
    assert dose is not None and (dose.dose_number, dose.earliest) == (2, date(2026, 12, 10))
    refused = may_have_on(GIRL, "F", first, "HPV9", date(2026, 12, 9))
    assert (refused.allowed, refused.refusal, refused.earliest) == (False, Refusal.TOO_YOUNG, date(2026, 12, 10))
    assert may_have_on(GIRL, "F", first, "HPV9", date(2026, 12, 10)).allowed
    two = [*first, GivenDose("HPV9", 2, date(2026, 12, 10))]
    third = next_dose(GIRL, "F", two, "HPV9", date(2026, 12, 20))
    assert third is not None and (third.dose_number, third.earliest) == (3, date(2027, 3, 10))
    done = [*two, GivenDose("HPV9", 3, date(2027, 3, 10))]
    assert next_dose(GIRL, "F", done, "HPV9", date(2027, 4, 1)) is None
    assert may_have_on(GIRL, "F", done, "HPV9", date(2027, 4, 1)).refusal == Refusal.COMPLETE


def test_influenza_once_a_season_two_doses_for_a_young_child_first_time() -> None:
    baby = date(2026, 5, 1)
    assert "Flu" not in _codes(baby, "F", on=date(2026, 10, 31))  # under 6 months
    assert "Flu" in _codes(baby, "F", on=date(2026, 11, 1))
    once = [GivenDose("Flu", 1, date(2026, 11, 2))]
    second = next_dose(baby, "F", once, "Flu", date(2026, 11, 3))
    assert second is not None and second.earliest == date(2026, 11, 30)  # 4 weeks later, same season
    twice = [*once, GivenDose("Flu", 2, date(2026, 11, 30))]
    third = next_dose(baby, "F", twice, "Flu", TODAY)
    assert third is not None and third.earliest == date(2027, 9, 1)  # next season
    grandma = [GivenDose("Flu", 1, date(2025, 10, 15))]
    assert "Flu" in _codes(date(1963, 8, 2), "F", grandma)  # last season's dose: this season's is due
    adult = [GivenDose("Flu", 1, date(2026, 10, 15))]
    assert "Flu" not in _codes(date(1963, 8, 2), "F", adult)  # one a season for an adult


def test_varicella_two_doses_three_months_apart_and_live_spacing() -> None:
    toddler = date(2025, 5, 10)
    assert "VAR" not in _codes(toddler, "M", on=date(2026, 5, 9))
    assert "VAR" in _codes(toddler, "M", on=date(2026, 5, 10))
    one = [GivenDose("VAR", 1, date(2026, 6, 1))]
    dose = next_dose(toddler, "M", one, "VAR", date(2026, 7, 1))
    assert dose is not None and (dose.dose_number, dose.earliest) == (2, date(2026, 9, 1))
    # Another live injectable vaccine (MMR) a week ago: varicella waits 28 days after it.
    mmr = [GivenDose("MMR", 2, date(2026, 11, 24))]
    later = next_dose(toddler, "M", mmr, "VAR", TODAY)
    assert later is not None and later.earliest == date(2026, 12, 22)
    assert "VAR" not in _codes(toddler, "M", [*one, GivenDose("VAR", 2, date(2026, 9, 1))])


@pytest.mark.parametrize(
    ("code", "birth", "allowed"),
    [
        ("EV71", date(2026, 6, 1), True),  # six months today
        ("EV71", date(2026, 6, 2), False),
        ("EV71", date(2020, 12, 2), True),  # 5 years 11 months
        ("EV71", date(2020, 12, 1), False),  # six today
        ("Hib", date(2021, 12, 2), True),
        ("Hib", date(2021, 12, 1), False),  # five today
        ("PCV13", date(2026, 10, 20), True),  # 6 weeks
        ("RV", date(2026, 10, 1), True),  # 8 weeks: a first dose is still allowed
        ("RV", date(2026, 8, 1), False),  # 17 weeks: too late to start
        ("RZV", date(1976, 12, 1), True),
        ("RZV", date(1976, 12, 2), False),
    ],
)
def test_age_limits_from_the_table(code: str, birth: date, allowed: bool) -> None:
    assert code in RULES
    assert (code in _codes(birth, "F")) is allowed


def test_series_length_follows_the_age_at_the_first_dose() -> None:
    # Hib started at 14 months is one dose; started at 3 months it is four.
    late = [GivenDose("Hib", 1, date(2026, 2, 1))]
    assert next_dose(date(2024, 12, 1), "M", late, "Hib", TODAY) is None
    early = [GivenDose("Hib", 1, date(2026, 9, 1))]
    dose = next_dose(date(2026, 6, 1), "M", early, "Hib", TODAY)
    assert dose is not None and dose.dose_number == 2


def test_programme_doses_are_checked_by_the_forecaster() -> None:
    child = date(2022, 5, 20)
    record = [GivenDose("HepB", 1, child)]
    assert may_have_on(child, "M", record, "HepB", TODAY).allowed
    assert may_have_on(child, "M", record, "BCG", TODAY).refusal == Refusal.COMPLETE  # no catch-up from 4 years
    assert may_have_on(child, "M", record, "DTaP-IPV/Hib", TODAY).refusal == Refusal.UNKNOWN


def test_a_booster_waits_for_its_own_age_and_late_starters_space_wider() -> None:
    infant = date(2026, 2, 1)
    primary = [GivenDose("PCV13", n, date(2026, 3 + n, 20)) for n in (1, 2, 3)]  # at about 2, 3 and 4 months
    booster = next_dose(infant, "F", primary, "PCV13", TODAY)
    # At least 2 months after dose 3 (2026-08-20), but not before 12 months of age.
    assert booster is not None and (booster.dose_number, booster.earliest) == (4, date(2027, 2, 1))
    toddler = date(2025, 6, 1)  # started at 15 months: 2 doses at least 2 months apart
    first = [GivenDose("PCV13", 1, date(2026, 9, 1))]
    second = next_dose(toddler, "M", first, "PCV13", TODAY)
    assert second is not None and second.earliest == date(2026, 11, 1)
    assert next_dose(toddler, "M", [*first, GivenDose("PCV13", 2, date(2026, 11, 2))], "PCV13", TODAY) is None
    hib = [GivenDose("Hib", n, date(2026, 3 + n, 1)) for n in (1, 2, 3)]
    hib_booster = next_dose(infant, "F", hib, "Hib", TODAY)
    assert hib_booster is not None and hib_booster.earliest == date(2027, 8, 1)  # 18 months
