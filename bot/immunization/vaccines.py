"""The vaccines vaxbot knows: one table read by the registry import, records, reminders and the schedule.

Data, not logic: add a line to accept a new vaccine code in registry files and name it in messages.
Rabies is missing on purpose: its doses live in a separate system and are not shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Programme(StrEnum):
    """Who pays: the National Immunization Program (free) or the family (self-paid, 非免疫规划)."""

    NIP = "nip"
    SELF_PAID = "self_paid"


@dataclass(frozen=True)
class Vaccine:
    """One vaccine code of the registry: its Chinese name (what users read) and what it is."""

    code: str
    name: str  # Chinese, as records and reminders show it
    description: str  # English, for the code and the registry documentation
    programme: Programme
    live: bool = False
    oral: bool = False

    @property
    def live_injectable(self) -> bool:
        """True for a live vaccine given by injection (two of them need spacing unless given the same day)."""
        return self.live and not self.oral


_NIP, _SELF = Programme.NIP, Programme.SELF_PAID

_TABLE: Final = (
    # National Immunization Program (2021 schedule, with the 2025 changes)
    Vaccine("HepB", "乙肝疫苗", "hepatitis B", _NIP),
    Vaccine("BCG", "卡介苗", "BCG", _NIP, live=True),
    Vaccine("IPV", "脊灰灭活疫苗", "inactivated polio", _NIP),
    Vaccine("bOPV", "二价脊灰减毒活疫苗", "bivalent oral polio", _NIP, live=True, oral=True),
    Vaccine("DTaP", "百白破疫苗", "diphtheria, tetanus, acellular pertussis", _NIP),
    Vaccine("DT", "白破疫苗", "diphtheria, tetanus", _NIP),
    Vaccine("MMR", "麻腮风疫苗", "measles, mumps, rubella", _NIP, live=True),
    Vaccine("JE-L", "乙脑减毒活疫苗", "Japanese encephalitis, live", _NIP, live=True),
    Vaccine("JE-I", "乙脑灭活疫苗", "Japanese encephalitis, inactivated", _NIP),
    Vaccine("MPSV-A", "A群流脑多糖疫苗", "meningococcal polysaccharide A", _NIP),
    Vaccine("MPSV-AC", "A群C群流脑多糖疫苗", "meningococcal polysaccharide A+C", _NIP),
    Vaccine("HepA-L", "甲肝减毒活疫苗", "hepatitis A, live", _NIP, live=True),
    Vaccine("HepA-I", "甲肝灭活疫苗", "hepatitis A, inactivated", _NIP),
    Vaccine("HPV2", "双价HPV疫苗", "HPV bivalent (NIP for girls from 2025-11-10)", _NIP),
    # Self-paid (not in the NIP)
    Vaccine("PCV13", "13价肺炎球菌结合疫苗", "pneumococcal conjugate, 13-valent", _SELF),
    Vaccine("Hib", "b型流感嗜血杆菌结合疫苗", "Haemophilus influenzae type b", _SELF),
    Vaccine("RV", "轮状病毒疫苗", "rotavirus (oral, live)", _SELF, live=True, oral=True),
    Vaccine("EV71", "肠道病毒71型灭活疫苗", "enterovirus 71", _SELF),
    Vaccine("Flu", "流感疫苗", "influenza", _SELF),
    Vaccine("VAR", "水痘减毒活疫苗", "varicella", _SELF, live=True),
    Vaccine("DTaP-IPV/Hib", "百白破-脊灰-Hib五联疫苗", "DTaP-IPV/Hib combined (pentavalent)", _SELF),
    Vaccine("HPV4", "四价HPV疫苗", "HPV quadrivalent", _SELF),
    Vaccine("HPV9", "九价HPV疫苗", "HPV 9-valent", _SELF),
    # Adults (self-paid)
    Vaccine("PPV23", "23价肺炎球菌多糖疫苗", "pneumococcal polysaccharide, 23-valent", _SELF),
    Vaccine("RZV", "重组带状疱疹疫苗", "recombinant zoster", _SELF),
)

# Code → vaccine, in the table's order.
VACCINES: Final[Mapping[str, Vaccine]] = MappingProxyType({vaccine.code: vaccine for vaccine in _TABLE})
_BY_FOLDED: Final = MappingProxyType({code.casefold(): vaccine for code, vaccine in VACCINES.items()})


def find_vaccine(code: str) -> Vaccine | None:
    """The vaccine a registry code names, matched without regard to case; None for an unknown code."""
    return _BY_FOLDED.get(code.strip().casefold())


def vaccine_name(code: str) -> str:
    """The Chinese name users read for a recorded code (the code itself for one the table lacks)."""
    vaccine = VACCINES.get(code)
    return vaccine.name if vaccine is not None else code
