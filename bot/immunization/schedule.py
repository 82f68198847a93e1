"""The national childhood immunization schedule (2021 edition, with the 2025 changes), as data.

Source: the NIP section of the shared domain notes (secondary copies of 国家免疫规划疫苗儿童免疫程序及说明,
2021年版, and public notices of the 2025 changes). Lines marked ⚠ were not confirmed against the official
text: they are kept here, easy to change. The logic that reads these tables is in ``bot.immunization.forecast``.

Reading the tables:
- ages are minimum ages from birth ("give at that age or as soon as possible after");
- ``complete_before`` is the age the dose is past due at; a dose without one is past due when the next
  later dose of its series with one is (see ``bot.immunization.forecast``);
- ``min_interval`` is counted from the latest earlier dose of the same series;
- a series is forecast until ``until_age`` (exclusive): 18 years (catch-up is for children) unless shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Final

from bot.immunization.vaccines import VACCINES


@dataclass(frozen=True)
class Period:
    """A span of calendar months plus days: an age counted from birth, or an interval from a dose."""

    months: int = 0
    days: int = 0


def years(count: int) -> Period:
    """``count`` calendar years."""
    return Period(months=12 * count)


def months(count: int) -> Period:
    """``count`` calendar months."""
    return Period(months=count)


def days(count: int) -> Period:
    """``count`` days."""
    return Period(days=count)


BIRTH: Final = Period()
# Catch-up is only for children: no forecast from the 18th birthday.
CATCH_UP_BEFORE: Final = years(18)

# Injectable live vaccines: two of them not given on the same day must be LIVE_SPACING apart. Read from
# the vaccine table: bOPV and RV are live but oral, so they are not here; VAR (varicella) is self-paid but
# still counts when recorded.
LIVE_INJECTABLE: Final = frozenset(code for code, vaccine in VACCINES.items() if vaccine.live_injectable)
LIVE_SPACING: Final = days(28)

# Note keys a forecast may carry (the message catalogue turns them into Chinese).
NEEDS_PPD: Final = "needs_ppd"


@dataclass(frozen=True)
class Spacing:
    """A dose must wait ``interval`` after the latest recorded dose of another vaccine."""

    vaccine_code: str
    interval: Period


@dataclass(frozen=True)
class Substitute:
    """Another vaccine given for this dose when the child is ``from_age`` or older on the day."""

    from_age: Period
    vaccine_code: str
    dose_number: int
    until_age: Period


@dataclass(frozen=True)
class DoseRule:
    """One dose of a series: which vaccine, from what age, past due at what age, how long after the last."""

    vaccine_code: str
    dose_number: int
    min_age: Period
    complete_before: Period | None = None
    min_interval: Period | None = None
    after: Spacing | None = None
    until_age: Period | None = None
    note: str = ""
    note_from_age: Period | None = None
    substitute: Substitute | None = None


@dataclass(frozen=True)
class ScheduleChange:
    """From ``effective`` on, a dose of the series whose due date (birth + its minimum age here) is on or
    after ``effective`` follows ``doses`` instead of the older rule at the same position."""

    effective: date
    doses: tuple[DoseRule, ...]
    notes: str = ""


@dataclass(frozen=True)
class SeriesRule:
    """A vaccine series: its doses in order, who gets it, and the alternative it belongs to, if any."""

    name: str
    doses: tuple[DoseRule, ...]
    notes: str = ""
    # Alternatives of one antigen share ``antigen``; a child with no dose of any gets the default one.
    antigen: str = ""
    default: bool = True
    until_age: Period = CATCH_UP_BEFORE
    sex: str | None = None
    born_after: date | None = None
    available_from: date | None = None
    changes: tuple[ScheduleChange, ...] = ()
    codes: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        rules = [*self.doses, *(rule for change in self.changes for rule in change.doses)]
        codes = {rule.vaccine_code for rule in rules}
        codes |= {rule.substitute.vaccine_code for rule in rules if rule.substitute is not None}
        # Every vaccine whose doses count towards this series, derived so it cannot drift from the table.
        object.__setattr__(self, "codes", frozenset(codes))


HEPB: Final = SeriesRule(
    "HepB",
    (
        DoseRule("HepB", 1, BIRTH),  # within 24 hours of birth
        DoseRule("HepB", 2, months(1), min_interval=days(28)),
        # ⚠ D2→D3 ≥ 60 days: not confirmed against the official text.
        DoseRule("HepB", 3, months(6), complete_before=months(12), min_interval=days(60)),
    ),
    notes="Birth dose within 24 hours; the series is complete before 12 months.",
)

BCG: Final = SeriesRule(
    "BCG",
    (DoseRule("BCG", 1, BIRTH, complete_before=months(3), note=NEEDS_PPD, note_from_age=months(3)),),
    notes="From 3 months to 3 years (i.e. before 4 years) only after a negative PPD test; none from 4 years.",
    until_age=years(4),
)

POLIO: Final = SeriesRule(
    "Polio",
    (
        DoseRule("IPV", 1, months(2)),
        DoseRule("IPV", 2, months(3), min_interval=days(28)),
        DoseRule("bOPV", 1, months(4), min_interval=days(28)),
        # The 4-year minimum age is the bOPV rule: a child under 4 is brought to 3 doses, from 4 to 4.
        DoseRule("bOPV", 2, years(4), complete_before=years(5), min_interval=days(28)),
    ),
    notes="One series of IPV, IPV, bOPV, bOPV, at least 28 days between doses.",
)

# Past-due ages of the 2025 DTaP doses are not in the source: the 2021 ones (D3 < 12 m, D4 < 24 m, the
# 6-year booster < 7 y) are carried over. ⚠ Not confirmed against the official text.
# ⚠ DT for catch-up at 7–11 years (so none from 12) is from the 2025 notice, not confirmed; it is also
# applied to the 2021 DT booster, since any catch-up happens under the current rules.
_DT_CATCH_UP: Final = Substitute(from_age=years(7), vaccine_code="DT", dose_number=1, until_age=years(12))

DTAP: Final = SeriesRule(
    "DTaP",
    (
        # 2021: DTaP at 3, 4, 5, 18 months, then the DT booster at 6 years (same antigens, one series).
        DoseRule("DTaP", 1, months(3)),
        DoseRule("DTaP", 2, months(4), min_interval=days(28)),
        DoseRule("DTaP", 3, months(5), complete_before=months(12), min_interval=days(28)),
        DoseRule("DTaP", 4, months(18), complete_before=months(24), min_interval=months(6)),
        DoseRule("DT", 1, years(6), complete_before=years(7), until_age=years(12)),
    ),
    notes="DTaP primary doses 28 days apart, D3→D4 at least 6 months; the booster at 6 years.",
    changes=(
        ScheduleChange(
            date(2025, 1, 1),
            (
                DoseRule("DTaP", 1, months(2)),
                DoseRule("DTaP", 2, months(4), min_interval=days(28)),
                DoseRule("DTaP", 3, months(6), complete_before=months(12), min_interval=days(28)),
                DoseRule("DTaP", 4, months(18), complete_before=months(24), min_interval=months(6)),
                DoseRule("DTaP", 5, years(6), complete_before=years(7), substitute=_DT_CATCH_UP),
            ),
            notes="2025: DTaP at 2, 4, 6, 18 months and 6 years; DTaP replaces DT at 6 years.",
        ),
    ),
)

MMR: Final = SeriesRule(
    "MMR",
    (
        DoseRule("MMR", 1, months(8), complete_before=months(12)),
        DoseRule("MMR", 2, months(18), complete_before=months(24), min_interval=days(28)),
    ),
    notes="Catch-up: two doses at least 28 days apart.",
)

JE_LIVE: Final = SeriesRule(
    "JE-L",
    (
        DoseRule("JE-L", 1, months(8), complete_before=months(12)),
        DoseRule("JE-L", 2, years(2), complete_before=years(3), min_interval=months(12)),
    ),
    notes="Live JE, the default. Catch-up: two doses at least 12 months apart.",
    antigen="JE",
    default=True,
)

JE_INACTIVATED: Final = SeriesRule(
    "JE-I",
    (
        DoseRule("JE-I", 1, months(8)),
        DoseRule("JE-I", 2, months(8), min_interval=days(7)),  # 7–10 days after D1
        # The source gives no past-due ages and no D2→D3 or D3→D4 intervals for JE-I.
        DoseRule("JE-I", 3, years(2)),
        DoseRule("JE-I", 4, years(6)),
    ),
    notes="Inactivated JE, the alternative: two doses 7–10 days apart at 8 months, then 2 and 6 years.",
    antigen="JE",
    default=False,
)

MPSV_A: Final = SeriesRule(
    "MPSV-A",
    (
        DoseRule("MPSV-A", 1, months(6)),
        DoseRule("MPSV-A", 2, months(9), complete_before=months(18), min_interval=months(3)),
    ),
    notes="None from 24 months: older children get MPSV-AC instead.",
    until_age=months(24),
)

MPSV_AC: Final = SeriesRule(
    "MPSV-AC",
    (
        # The source says "D1 ≥ 12 m after MPSV-A D2"; the latest MPSV-A dose is used, whichever it is.
        DoseRule("MPSV-AC", 1, years(3), complete_before=years(4), after=Spacing("MPSV-A", months(12))),
        DoseRule("MPSV-AC", 2, years(6), complete_before=years(7), min_interval=years(3)),
    ),
    notes="At least 3 years between doses; D1 at least 12 months after MPSV-A.",
)

HEPA_LIVE: Final = SeriesRule(
    "HepA-L",
    (DoseRule("HepA-L", 1, months(18), complete_before=months(24)),),
    notes="Live HepA, the default: one dose, caught up if missed.",
    antigen="HepA",
    default=True,
)

HEPA_INACTIVATED: Final = SeriesRule(
    "HepA-I",
    (
        # The source gives no past-due ages for HepA-I.
        DoseRule("HepA-I", 1, months(18)),
        DoseRule("HepA-I", 2, months(24), min_interval=months(6)),
    ),
    notes="Inactivated HepA, the alternative: 18 and 24 months, at least 6 months apart.",
    antigen="HepA",
    default=False,
)

HPV2: Final = SeriesRule(
    "HPV2",
    (
        DoseRule("HPV2", 1, years(13)),
        DoseRule("HPV2", 2, years(13), min_interval=months(6)),
    ),
    notes="Girls at 13 years, two doses 6 months apart; in the NIP from 2025-11-10.",
    sex="F",
    # ⚠ "Girls born after 2011-11-10": not confirmed against the official text.
    born_after=date(2011, 11, 10),
    available_from=date(2025, 11, 10),
)

NIP_SCHEDULE: Final[tuple[SeriesRule, ...]] = (
    HEPB,
    BCG,
    POLIO,
    DTAP,
    MMR,
    JE_LIVE,
    JE_INACTIVATED,
    MPSV_A,
    MPSV_AC,
    HEPA_LIVE,
    HEPA_INACTIVATED,
    HPV2,
)
