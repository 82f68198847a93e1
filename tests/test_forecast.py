"""The dose forecaster against hand-computed China cases, in the columns of the public CDSi test cases.

Each case: date of birth, sex, doses given (vaccine, date), assessment date, and the expected forecast
of the affected series (vaccine, dose number, earliest, recommended, past due, status, note). Every
expected date below was worked out by hand from the schedule, not from the code under test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.immunization.forecast import Forecast, GivenDose, add_months, forecast_next_doses

D = date


@dataclass(frozen=True)
class Expect:
    """One expected forecast row."""

    vaccine: str
    dose: int
    earliest: date
    recommended: date
    past_due: date | None
    status: str
    note: str = ""


@dataclass(frozen=True)
class Case:
    """One test case: the child, the record, the assessment date and what must (not) be forecast."""

    name: str
    born: date
    sex: str
    doses: tuple[tuple[str, date], ...]
    assessed: date
    expect: tuple[Expect, ...] = ()
    absent: tuple[str, ...] = ()
    exact: bool = False  # the expected rows are the whole forecast, in order


def _record(doses: tuple[tuple[str, date], ...]) -> list[GivenDose]:
    """Number each vaccine's doses 1, 2, … in date order, as a registry would."""
    counts: Counter[str] = Counter()
    record = []
    for code, given_on in sorted(doses, key=lambda dose: dose[1]):
        counts[code] += 1
        record.append(GivenDose(code, counts[code], given_on))
    return record


def _row(forecast: Forecast) -> Expect:
    return Expect(
        forecast.vaccine_code,
        forecast.dose_number,
        forecast.earliest,
        forecast.recommended,
        forecast.past_due,
        forecast.status,
        forecast.note,
    )


# A boy born 2023-05-20, vaccinated on time until 10 months (2021 schedule), then nothing.
LAPSED = (
    ("HepB", D(2023, 5, 20)),
    ("BCG", D(2023, 5, 21)),
    ("HepB", D(2023, 6, 20)),
    ("IPV", D(2023, 7, 20)),
    ("IPV", D(2023, 8, 21)),
    ("DTaP", D(2023, 8, 21)),
    ("bOPV", D(2023, 9, 20)),
    ("DTaP", D(2023, 9, 20)),
    ("DTaP", D(2023, 10, 20)),
    ("HepB", D(2023, 11, 20)),
    ("MPSV-A", D(2023, 11, 20)),
    ("MMR", D(2024, 1, 22)),
    ("JE-L", D(2024, 1, 22)),
    ("MPSV-A", D(2024, 2, 21)),
)

# A boy born 2018-04-10 with every national-schedule dose up to 6 years (DT booster: 2021 schedule).
COMPLETE_2018 = (
    ("HepB", D(2018, 4, 10)),
    ("BCG", D(2018, 4, 11)),
    ("HepB", D(2018, 5, 10)),
    ("IPV", D(2018, 6, 11)),
    ("IPV", D(2018, 7, 10)),
    ("DTaP", D(2018, 7, 10)),
    ("bOPV", D(2018, 8, 10)),
    ("DTaP", D(2018, 8, 10)),
    ("DTaP", D(2018, 9, 10)),
    ("HepB", D(2018, 10, 10)),
    ("MPSV-A", D(2018, 10, 10)),
    ("MMR", D(2018, 12, 10)),
    ("JE-L", D(2018, 12, 10)),
    ("MPSV-A", D(2019, 1, 10)),
    ("MMR", D(2019, 10, 10)),
    ("DTaP", D(2019, 10, 10)),
    ("HepA-L", D(2019, 10, 10)),
    ("JE-L", D(2020, 4, 10)),
    ("MPSV-AC", D(2021, 4, 12)),
    ("bOPV", D(2022, 4, 11)),
    ("DT", D(2024, 4, 10)),
    ("MPSV-AC", D(2024, 4, 12)),
)

# A boy born 2025-01-20, on time to 6 months (2025 schedule: DTaP at 2 and 4 months).
SIX_MONTHS = (
    ("HepB", D(2025, 1, 20)),
    ("BCG", D(2025, 1, 21)),
    ("HepB", D(2025, 2, 20)),
    ("IPV", D(2025, 3, 20)),
    ("DTaP", D(2025, 3, 20)),
    ("IPV", D(2025, 4, 21)),
    ("bOPV", D(2025, 5, 20)),
    ("DTaP", D(2025, 5, 20)),
)

DTAP_1_TO_4_2019 = (
    ("DTaP", D(2019, 6, 1)),
    ("DTaP", D(2019, 7, 1)),
    ("DTaP", D(2019, 8, 1)),
    ("DTaP", D(2020, 9, 1)),
)

CASES = [
    # --- on schedule -------------------------------------------------------------------------
    Case(
        "newborn girl, day of birth: the whole schedule ahead, sorted by date then code",
        D(2025, 3, 10),
        "F",
        (),
        D(2025, 3, 10),
        (
            Expect("BCG", 1, D(2025, 3, 10), D(2025, 3, 10), D(2025, 6, 10), "due"),
            Expect("HepB", 1, D(2025, 3, 10), D(2025, 3, 10), D(2026, 3, 10), "due"),
            Expect("DTaP", 1, D(2025, 5, 10), D(2025, 5, 10), D(2026, 3, 10), "upcoming"),
            Expect("IPV", 1, D(2025, 5, 10), D(2025, 5, 10), D(2030, 3, 10), "upcoming"),
            Expect("MPSV-A", 1, D(2025, 9, 10), D(2025, 9, 10), D(2026, 9, 10), "upcoming"),
            Expect("JE-L", 1, D(2025, 11, 10), D(2025, 11, 10), D(2026, 3, 10), "upcoming"),
            Expect("MMR", 1, D(2025, 11, 10), D(2025, 11, 10), D(2026, 3, 10), "upcoming"),
            Expect("HepA-L", 1, D(2026, 9, 10), D(2026, 9, 10), D(2027, 3, 10), "upcoming"),
            Expect("MPSV-AC", 1, D(2028, 3, 10), D(2028, 3, 10), D(2029, 3, 10), "upcoming"),
            Expect("HPV2", 1, D(2038, 3, 10), D(2038, 3, 10), None, "upcoming"),
        ),
        exact=True,
    ),
    Case(
        "2 months, 2025 schedule: IPV 1 and DTaP 1 due at 2 months, HepB 3 at 6 months",
        D(2025, 1, 15),
        "M",
        (("HepB", D(2025, 1, 15)), ("BCG", D(2025, 1, 16)), ("HepB", D(2025, 2, 15))),
        D(2025, 3, 15),
        (
            Expect("HepB", 3, D(2025, 7, 15), D(2025, 7, 15), D(2026, 1, 15), "upcoming"),
            Expect("IPV", 1, D(2025, 3, 15), D(2025, 3, 15), D(2030, 1, 15), "due"),
            Expect("DTaP", 1, D(2025, 3, 15), D(2025, 3, 15), D(2026, 1, 15), "due"),
        ),
        absent=("BCG", "HPV2"),
    ),
    Case(
        "6 months, 2025 schedule: HepB 3, DTaP 3 and MPSV-A 1 due together",
        D(2025, 1, 20),
        "M",
        SIX_MONTHS,
        D(2025, 7, 20),
        (
            Expect("DTaP", 3, D(2025, 7, 20), D(2025, 7, 20), D(2026, 1, 20), "due"),
            Expect("HepB", 3, D(2025, 7, 20), D(2025, 7, 20), D(2026, 1, 20), "due"),
            Expect("MPSV-A", 1, D(2025, 7, 20), D(2025, 7, 20), D(2026, 7, 20), "due"),
            Expect("JE-L", 1, D(2025, 9, 20), D(2025, 9, 20), D(2026, 1, 20), "upcoming"),
            Expect("MMR", 1, D(2025, 9, 20), D(2025, 9, 20), D(2026, 1, 20), "upcoming"),
            Expect("HepA-L", 1, D(2026, 7, 20), D(2026, 7, 20), D(2027, 1, 20), "upcoming"),
            Expect("MPSV-AC", 1, D(2028, 1, 20), D(2028, 1, 20), D(2029, 1, 20), "upcoming"),
            Expect("bOPV", 2, D(2029, 1, 20), D(2029, 1, 20), D(2030, 1, 20), "upcoming"),
        ),
        exact=True,
    ),
    Case(
        "2 months, 2021 schedule (DTaP 1 due at 3 months before 2025)",
        D(2024, 6, 15),
        "M",
        (("HepB", D(2024, 6, 15)), ("BCG", D(2024, 6, 15)), ("HepB", D(2024, 7, 15)), ("IPV", D(2024, 8, 15))),
        D(2024, 8, 20),
        (
            Expect("DTaP", 1, D(2024, 9, 15), D(2024, 9, 15), D(2025, 6, 15), "upcoming"),
            Expect("IPV", 2, D(2024, 9, 15), D(2024, 9, 15), D(2029, 6, 15), "upcoming"),
            Expect("HepB", 3, D(2024, 12, 15), D(2024, 12, 15), D(2025, 6, 15), "upcoming"),
        ),
    ),
    Case(
        "complete 7-year-old boy: nothing to forecast",
        D(2018, 4, 10),
        "M",
        COMPLETE_2018,
        D(2025, 6, 1),
        exact=True,
    ),
    # --- overdue -------------------------------------------------------------------------------
    Case(
        "lapsed at 10 months, assessed at 2 years: DTaP 4, MMR 2, HepA-L overdue; JE-L 2 due",
        D(2023, 5, 20),
        "M",
        LAPSED,
        D(2025, 6, 1),
        (
            Expect("DTaP", 4, D(2024, 11, 20), D(2024, 11, 20), D(2025, 5, 20), "overdue"),
            Expect("HepA-L", 1, D(2024, 11, 20), D(2024, 11, 20), D(2025, 5, 20), "overdue"),
            Expect("MMR", 2, D(2024, 11, 20), D(2024, 11, 20), D(2025, 5, 20), "overdue"),
            Expect("JE-L", 2, D(2025, 5, 20), D(2025, 5, 20), D(2026, 5, 20), "due"),
            Expect("MPSV-AC", 1, D(2026, 5, 20), D(2026, 5, 20), D(2027, 5, 20), "upcoming"),
            Expect("bOPV", 2, D(2027, 5, 20), D(2027, 5, 20), D(2028, 5, 20), "upcoming"),
        ),
        exact=True,
    ),
    Case(
        "HepB 3 the day before 12 months: due",
        D(2024, 1, 10),
        "F",
        (("HepB", D(2024, 1, 10)), ("HepB", D(2024, 2, 10))),
        D(2025, 1, 9),
        (Expect("HepB", 3, D(2024, 7, 10), D(2024, 7, 10), D(2025, 1, 10), "due"),),
    ),
    Case(
        "HepB 3 on the 1st birthday: overdue (past due is 'complete before 12 months')",
        D(2024, 1, 10),
        "F",
        (("HepB", D(2024, 1, 10)), ("HepB", D(2024, 2, 10))),
        D(2025, 1, 10),
        (Expect("HepB", 3, D(2024, 7, 10), D(2024, 7, 10), D(2025, 1, 10), "overdue"),),
    ),
    Case(
        "17 years old with no record: still caught up (HepB 1 is overdue)",
        D(2007, 6, 1),
        "F",
        (),
        D(2025, 5, 31),
        (Expect("HepB", 1, D(2007, 6, 1), D(2007, 6, 1), D(2008, 6, 1), "overdue"),),
        absent=("BCG", "MPSV-A", "HPV2"),
    ),
    Case("18th birthday: no catch-up any more", D(2007, 6, 1), "F", (), D(2025, 6, 1), exact=True),
    # --- catch-up intervals --------------------------------------------------------------------
    Case(
        "HepB 2 given late: D2→D3 at least 60 days beats the 6-month age",
        D(2024, 1, 10),
        "M",
        (("HepB", D(2024, 1, 10)), ("HepB", D(2024, 6, 20))),
        D(2024, 7, 15),
        (Expect("HepB", 3, D(2024, 8, 19), D(2024, 8, 19), D(2025, 1, 10), "upcoming"),),
    ),
    Case(
        "HepB 1 given late: D1→D2 at least 28 days (over 29 February)",
        D(2024, 1, 10),
        "M",
        (("HepB", D(2024, 2, 5)),),
        D(2024, 2, 20),
        (Expect("HepB", 2, D(2024, 3, 4), D(2024, 3, 4), D(2025, 1, 10), "upcoming"),),
    ),
    Case(
        "DTaP 3 given late: D3→D4 at least 6 months, clamped to 30 September",
        D(2023, 1, 31),
        "F",
        (("DTaP", D(2023, 6, 15)), ("DTaP", D(2023, 7, 20)), ("DTaP", D(2024, 3, 31))),
        D(2024, 8, 1),
        (Expect("DTaP", 4, D(2024, 9, 30), D(2024, 9, 30), D(2025, 1, 31), "upcoming"),),
    ),
    Case(
        "no MMR at 3 years: MMR 1 is overdue since 12 months",
        D(2021, 2, 1),
        "M",
        (),
        D(2024, 3, 1),
        (Expect("MMR", 1, D(2021, 10, 1), D(2021, 10, 1), D(2022, 2, 1), "overdue"),),
    ),
    Case(
        "MMR catch-up: D2 28 days after D1; JE-L and HepA-L wait 28 days after the MMR too",
        D(2021, 2, 1),
        "M",
        (("MMR", D(2024, 3, 1)),),
        D(2024, 3, 5),
        (
            Expect("MMR", 2, D(2024, 3, 29), D(2024, 3, 29), D(2023, 2, 1), "overdue"),
            Expect("JE-L", 1, D(2024, 3, 29), D(2024, 3, 29), D(2022, 2, 1), "overdue"),
            Expect("HepA-L", 1, D(2024, 3, 29), D(2024, 3, 29), D(2023, 2, 1), "overdue"),
        ),
    ),
    Case(
        "doses recorded after the assessment date are ignored",
        D(2025, 1, 20),
        "F",
        (("HepB", D(2025, 1, 20)), ("HepB", D(2025, 2, 20))),
        D(2025, 2, 1),
        (Expect("HepB", 2, D(2025, 2, 20), D(2025, 2, 20), D(2026, 1, 20), "upcoming"),),
    ),
    # --- alternative series --------------------------------------------------------------------
    Case(
        "JE-I 1 given: JE-I 2 7 days later, no JE-L",
        D(2024, 1, 5),
        "F",
        (("JE-I", D(2024, 9, 5)),),
        D(2024, 9, 6),
        (Expect("JE-I", 2, D(2024, 9, 12), D(2024, 9, 12), None, "upcoming"),),
        absent=("JE-L",),
    ),
    Case(
        "JE-I 1 and 2 given: JE-I 3 at 2 years",
        D(2024, 1, 5),
        "F",
        (("JE-I", D(2024, 9, 5)), ("JE-I", D(2024, 9, 12))),
        D(2025, 1, 1),
        (Expect("JE-I", 3, D(2026, 1, 5), D(2026, 1, 5), None, "upcoming"),),
        absent=("JE-L",),
    ),
    Case(
        "JE-L 1 then JE-I 1: the most recent alternative (JE-I) is followed",
        D(2024, 1, 5),
        "M",
        (("JE-L", D(2024, 9, 5)), ("JE-I", D(2025, 1, 10))),
        D(2025, 1, 10),
        (Expect("JE-I", 2, D(2025, 1, 17), D(2025, 1, 17), None, "upcoming"),),
        absent=("JE-L",),
    ),
    Case(
        "HepA-I 1 given late: HepA-I 2 6 months later, no HepA-L",
        D(2023, 3, 1),
        "M",
        (("HepA-I", D(2024, 12, 15)),),
        D(2025, 1, 2),
        (Expect("HepA-I", 2, D(2025, 6, 15), D(2025, 6, 15), None, "upcoming"),),
        absent=("HepA-L",),
    ),
    # --- age limits ----------------------------------------------------------------------------
    Case(
        "MPSV-A 2 overdue at 22 months, still forecast",
        D(2023, 1, 10),
        "F",
        (("MPSV-A", D(2023, 7, 10)),),
        D(2024, 12, 1),
        (Expect("MPSV-A", 2, D(2023, 10, 10), D(2023, 10, 10), D(2024, 7, 10), "overdue"),),
    ),
    Case(
        "MPSV-A none from 24 months; MPSV-AC 1 at 3 years instead",
        D(2023, 1, 10),
        "F",
        (("MPSV-A", D(2023, 7, 10)),),
        D(2025, 1, 10),
        (Expect("MPSV-AC", 1, D(2026, 1, 10), D(2026, 1, 10), D(2027, 1, 10), "upcoming"),),
        absent=("MPSV-A",),
    ),
    Case(
        "MPSV-A 2 would fall after 24 months: none",
        D(2023, 1, 10),
        "F",
        (("MPSV-A", D(2024, 11, 20)),),
        D(2024, 11, 20),
        absent=("MPSV-A",),
    ),
    Case(
        "MPSV-AC 1 waits 12 months after a late MPSV-A 2",
        D(2022, 1, 10),
        "M",
        (("MPSV-A", D(2023, 11, 1)), ("MPSV-A", D(2024, 4, 1))),
        D(2025, 1, 10),
        (Expect("MPSV-AC", 1, D(2025, 4, 1), D(2025, 4, 1), D(2026, 1, 10), "upcoming"),),
    ),
    Case(
        "BCG at 2 months: due, no PPD needed yet",
        D(2025, 1, 1),
        "M",
        (("HepB", D(2025, 1, 1)),),
        D(2025, 3, 1),
        (Expect("BCG", 1, D(2025, 1, 1), D(2025, 1, 1), D(2025, 4, 1), "due"),),
    ),
    Case(
        "BCG at 3 months: overdue, needs a negative PPD",
        D(2025, 1, 1),
        "M",
        (("HepB", D(2025, 1, 1)),),
        D(2025, 4, 1),
        (Expect("BCG", 1, D(2025, 1, 1), D(2025, 1, 1), D(2025, 4, 1), "overdue", "needs_ppd"),),
    ),
    Case(
        "BCG the day before 4 years: still forecast with the PPD note",
        D(2021, 5, 1),
        "F",
        (),
        D(2025, 4, 30),
        (Expect("BCG", 1, D(2021, 5, 1), D(2021, 5, 1), D(2021, 8, 1), "overdue", "needs_ppd"),),
    ),
    Case("BCG none from 4 years", D(2021, 5, 1), "F", (), D(2025, 5, 1), absent=("BCG",)),
    # --- polio -----------------------------------------------------------------------------------
    Case(
        "polio: under 4 with IPV, IPV, bOPV: the 4th dose waits for 4 years",
        D(2022, 3, 1),
        "M",
        (("IPV", D(2022, 5, 1)), ("IPV", D(2022, 6, 1)), ("bOPV", D(2022, 7, 1))),
        D(2025, 1, 1),
        (Expect("bOPV", 2, D(2026, 3, 1), D(2026, 3, 1), D(2027, 3, 1), "upcoming"),),
        absent=("IPV",),
    ),
    Case(
        "polio: 4 years with two IPV: bOPV 1 due now (past due with the series at 5 years)",
        D(2020, 3, 1),
        "M",
        (("IPV", D(2020, 5, 1)), ("IPV", D(2020, 6, 1))),
        D(2024, 9, 1),
        (Expect("bOPV", 1, D(2020, 7, 1), D(2020, 7, 1), D(2025, 3, 1), "due"),),
        absent=("IPV",),
    ),
    Case(
        "polio: bOPV 1 caught up after 4 years: bOPV 2 28 days later",
        D(2020, 3, 1),
        "M",
        (("IPV", D(2020, 5, 1)), ("IPV", D(2020, 6, 1)), ("bOPV", D(2024, 4, 10))),
        D(2024, 4, 10),
        (Expect("bOPV", 2, D(2024, 5, 8), D(2024, 5, 8), D(2025, 3, 1), "upcoming"),),
    ),
    # --- live injectable vaccines 28 days apart -------------------------------------------------
    Case(
        "MMR alone at 8 months: JE-L 1 waits 28 days",
        D(2024, 1, 5),
        "F",
        (("MMR", D(2024, 9, 5)),),
        D(2024, 9, 6),
        (Expect("JE-L", 1, D(2024, 10, 3), D(2024, 10, 3), D(2025, 1, 5), "upcoming"),),
    ),
    Case(
        "self-paid varicella at 17.5 months pushes MMR 2 and HepA-L 1 past 18 months",
        D(2023, 6, 10),
        "M",
        (("MMR", D(2024, 2, 10)), ("JE-L", D(2024, 2, 10)), ("VAR", D(2024, 11, 25))),
        D(2024, 12, 1),
        (
            Expect("MMR", 2, D(2024, 12, 23), D(2024, 12, 23), D(2025, 6, 10), "upcoming"),
            Expect("HepA-L", 1, D(2024, 12, 23), D(2024, 12, 23), D(2025, 6, 10), "upcoming"),
            Expect("JE-L", 2, D(2025, 6, 10), D(2025, 6, 10), D(2026, 6, 10), "upcoming"),
        ),
    ),
    Case(
        "varicella today: MMR 2 may still be given the same day",
        D(2023, 6, 10),
        "M",
        (("MMR", D(2024, 2, 10)), ("JE-L", D(2024, 2, 10)), ("VAR", D(2024, 12, 10))),
        D(2024, 12, 10),
        (Expect("MMR", 2, D(2024, 12, 10), D(2024, 12, 10), D(2025, 6, 10), "due"),),
    ),
    Case(
        "varicella yesterday: MMR 2 waits 28 days",
        D(2023, 6, 10),
        "M",
        (("MMR", D(2024, 2, 10)), ("JE-L", D(2024, 2, 10)), ("VAR", D(2024, 12, 10))),
        D(2024, 12, 11),
        (Expect("MMR", 2, D(2025, 1, 7), D(2025, 1, 7), D(2025, 6, 10), "upcoming"),),
    ),
    # --- DTaP, 2021 and 2025 ----------------------------------------------------------------------
    Case(
        "DTaP 3 due from 2025 follows the 2025 schedule (6 months, not 5)",
        D(2024, 8, 1),
        "F",
        (("DTaP", D(2024, 11, 1)), ("DTaP", D(2024, 12, 2))),
        D(2025, 1, 10),
        (Expect("DTaP", 3, D(2025, 2, 1), D(2025, 2, 1), D(2025, 8, 1), "upcoming"),),
    ),
    Case(
        "6 years in 2025: DTaP 5 replaces DT",
        D(2019, 3, 1),
        "M",
        DTAP_1_TO_4_2019,
        D(2025, 3, 1),
        (Expect("DTaP", 5, D(2025, 3, 1), D(2025, 3, 1), D(2026, 3, 1), "due"),),
        absent=("DT",),
    ),
    Case(
        "6 years in 2024: DT booster (2021 schedule)",
        D(2018, 3, 1),
        "M",
        (("DTaP", D(2018, 6, 1)), ("DTaP", D(2018, 7, 2)), ("DTaP", D(2018, 8, 1)), ("DTaP", D(2019, 9, 2))),
        D(2024, 3, 1),
        (Expect("DT", 1, D(2024, 3, 1), D(2024, 3, 1), D(2025, 3, 1), "due"),),
        absent=("DTaP",),
    ),
    Case(
        "DT booster missed under the 2021 schedule: overdue catch-up at 8 years",
        D(2017, 5, 20),
        "F",
        (("DTaP", D(2017, 8, 20)), ("DTaP", D(2017, 9, 20)), ("DTaP", D(2017, 10, 20)), ("DTaP", D(2018, 11, 20))),
        D(2025, 6, 1),
        (Expect("DT", 1, D(2023, 5, 20), D(2023, 5, 20), D(2024, 5, 20), "overdue"),),
    ),
    Case(
        "2025 booster missed, now 7: caught up with DT, not DTaP 5",
        D(2019, 1, 10),
        "M",
        (("DTaP", D(2019, 4, 10)), ("DTaP", D(2019, 5, 10)), ("DTaP", D(2019, 6, 10)), ("DTaP", D(2020, 7, 10))),
        D(2026, 6, 1),
        (Expect("DT", 1, D(2025, 1, 10), D(2025, 1, 10), D(2026, 1, 10), "overdue"),),
        absent=("DTaP",),
    ),
    Case(
        "booster missed, now 12: no DT catch-up any more",
        D(2013, 2, 1),
        "M",
        (("DTaP", D(2013, 5, 1)), ("DTaP", D(2013, 6, 3)), ("DTaP", D(2013, 7, 1)), ("DTaP", D(2014, 8, 1))),
        D(2025, 2, 1),
        absent=("DT", "DTaP"),
    ),
    # --- HPV2 --------------------------------------------------------------------------------------
    Case(
        "girl of 13 before the HPV2 programme starts: from 2025-11-10",
        D(2012, 3, 1),
        "F",
        (),
        D(2025, 6, 1),
        (Expect("HPV2", 1, D(2025, 11, 10), D(2025, 11, 10), None, "upcoming"),),
    ),
    Case(
        "girl of 13 after the start: HPV2 1 due",
        D(2012, 3, 1),
        "F",
        (),
        D(2025, 12, 1),
        (Expect("HPV2", 1, D(2025, 11, 10), D(2025, 11, 10), None, "due"),),
    ),
    Case(
        "girl with HPV2 1: HPV2 2 six months later",
        D(2012, 3, 1),
        "F",
        (("HPV2", D(2025, 12, 1)),),
        D(2026, 1, 1),
        (Expect("HPV2", 2, D(2026, 6, 1), D(2026, 6, 1), None, "upcoming"),),
    ),
    Case("boy of 13: no HPV2", D(2012, 3, 1), "M", (), D(2025, 12, 1), absent=("HPV2",)),
    Case("girl born on 2011-11-10: not eligible", D(2011, 11, 10), "F", (), D(2025, 12, 1), absent=("HPV2",)),
    Case(
        "girl born on 2011-11-11: eligible",
        D(2011, 11, 11),
        "F",
        (),
        D(2025, 12, 1),
        (Expect("HPV2", 1, D(2025, 11, 10), D(2025, 11, 10), None, "due"),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_forecast_cases(case: Case) -> None:
    forecasts = forecast_next_doses(case.born, case.sex, _record(case.doses), case.assessed)
    rows = [_row(forecast) for forecast in forecasts]
    if case.exact:
        assert rows == list(case.expect)
    by_code = {row.vaccine: row for row in rows}
    for expected in case.expect:
        assert by_code.get(expected.vaccine) == expected
    for code in case.absent:
        assert code not in by_code


def test_add_months_clamps_to_the_end_of_the_month() -> None:
    assert add_months(D(2024, 1, 31), 1) == D(2024, 2, 29)
    assert add_months(D(2023, 1, 31), 1) == D(2023, 2, 28)
    assert add_months(D(2024, 2, 29), 12) == D(2025, 2, 28)
    assert add_months(D(2024, 8, 31), 18) == D(2026, 2, 28)
    assert add_months(D(2024, 12, 15), 1) == D(2025, 1, 15)
    assert add_months(D(2024, 3, 15), -3) == D(2023, 12, 15)


def test_an_assessment_before_birth_is_refused() -> None:
    with pytest.raises(ValueError):
        forecast_next_doses(D(2025, 1, 2), "F", [], D(2025, 1, 1))


# --- properties ---------------------------------------------------------------------------------

CODES = ["HepB", "BCG", "IPV", "bOPV", "DTaP", "DT", "MMR", "JE-L", "JE-I", "MPSV-A", "MPSV-AC"]
CODES += ["HepA-L", "HepA-I", "HPV2", "VAR"]
# How many doses complete each series (the polio series counts IPV and bOPV together).
SERIES_LENGTH = {"HepB": 3, "BCG": 1, "MMR": 2, "MPSV-A": 2, "MPSV-AC": 2, "HepA-L": 1, "HPV2": 2}
LIVE = {"BCG", "MMR", "JE-L", "VAR", "HepA-L"}


@st.composite
def children(draw: st.DrawFn) -> tuple[date, str, list[GivenDose], date]:
    born = draw(st.dates(D(2005, 1, 1), D(2026, 12, 31)))
    assessed = born + timedelta(days=draw(st.integers(0, 19 * 366)))
    dates = st.dates(born, assessed)
    doses = tuple(draw(st.lists(st.tuples(st.sampled_from(CODES), dates), max_size=25)))
    return born, draw(st.sampled_from(["F", "M"])), _record(doses), assessed


@settings(max_examples=300, deadline=None, database=None)
@given(children())
def test_forecasts_are_consistent(child: tuple[date, str, list[GivenDose], date]) -> None:
    born, sex, record, assessed = child
    forecasts = forecast_next_doses(born, sex, record, assessed)
    given_doses = {(dose.vaccine_code, dose.dose_number) for dose in record}
    codes = [forecast.vaccine_code for forecast in forecasts]
    counts = Counter(dose.vaccine_code for dose in record)
    assert forecasts == sorted(forecasts, key=lambda forecast: (forecast.recommended, forecast.vaccine_code))
    assert len(codes) == len(set(codes))  # one next dose per series
    assert not ({"IPV", "bOPV"} <= set(codes))  # polio is one series
    assert not ({"DTaP", "DT"} <= set(codes))  # so are DTaP and the DT booster
    for forecast in forecasts:
        assert born <= forecast.earliest <= forecast.recommended
        assert (forecast.vaccine_code, forecast.dose_number) not in given_doses
        if forecast.past_due is not None and assessed >= forecast.past_due:
            assert forecast.status == "overdue"
        elif forecast.earliest <= assessed:
            assert forecast.status == "due"
        else:
            assert forecast.status == "upcoming"
    for code, length in SERIES_LENGTH.items():
        if counts[code] >= length:
            assert code not in codes
    if counts["IPV"] + counts["bOPV"] >= 4:
        assert not ({"IPV", "bOPV"} & set(codes))
    if sex == "M":
        assert "HPV2" not in codes
    if assessed >= add_months(born, 18 * 12):
        assert forecasts == []


@settings(max_examples=60, deadline=None, database=None)
@given(st.dates(D(2011, 11, 11), D(2026, 12, 31)), st.sampled_from(["F", "M"]))
def test_following_the_forecast_completes_the_schedule(born: date, sex: str) -> None:
    """Give every dose on its recommended date from birth on: the schedule ends complete and well spaced."""
    record: list[GivenDose] = []
    today = born
    for _ in range(100):
        forecasts = forecast_next_doses(born, sex, record, today)
        ready = [forecast for forecast in forecasts if forecast.recommended <= today]
        if ready:
            record += [GivenDose(forecast.vaccine_code, forecast.dose_number, today) for forecast in ready]
        elif forecasts:
            today = min(forecast.recommended for forecast in forecasts)
        else:
            break
    else:
        pytest.fail("the forecast never ran out")
    counts = Counter(dose.vaccine_code for dose in record)
    booster = "DT" if add_months(born, 72) < D(2025, 1, 1) else "DTaP"
    expected = Counter(
        {"HepB": 3, "BCG": 1, "IPV": 2, "bOPV": 2, "DTaP": 4, "MMR": 2, "JE-L": 2, "MPSV-A": 2, "MPSV-AC": 2}
    )
    expected["HepA-L"] = 1
    expected[booster] += 1
    if sex == "F":
        expected["HPV2"] = 2
    assert counts == expected
    assert {dose for dose in record if dose.given_on == born} == {GivenDose("HepB", 1, born), GivenDose("BCG", 1, born)}
    live = sorted({dose.given_on for dose in record if dose.vaccine_code in LIVE})
    assert all(later - earlier >= timedelta(days=28) for earlier, later in pairwise(live))
