"""The one vaccine table: every code the import accepts is named in Chinese, and the schedule uses only its codes."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

from bot.dev.demo import CHILD, PARENT
from bot.immunization.schedule import LIVE_INJECTABLE, NIP_SCHEDULE
from bot.immunization.vaccines import VACCINES, Programme, find_vaccine, vaccine_name
from bot.registry.validate import parse_registry

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_code_has_a_chinese_name_a_description_and_a_programme() -> None:
    assert len(VACCINES) == 25
    for code, vaccine in VACCINES.items():
        assert vaccine.code == code
        assert CJK.search(vaccine.name), code
        assert vaccine.name.endswith(("疫苗", "卡介苗")), code
        assert vaccine.description, code
        assert isinstance(vaccine.programme, Programme), code
    assert len({vaccine.name for vaccine in VACCINES.values()}) == len(VACCINES)


def test_the_codes_records_used_to_show_untranslated_are_named() -> None:
    assert vaccine_name("RV") == "轮状病毒疫苗"
    assert vaccine_name("HPV4") == "四价HPV疫苗"
    assert vaccine_name("DTaP-IPV/Hib") == "百白破-脊灰-Hib五联疫苗"
    assert vaccine_name("PPV23") == "23价肺炎球菌多糖疫苗"
    assert vaccine_name("RZV") == "重组带状疱疹疫苗"
    assert vaccine_name("Rabies") == "Rabies"  # not in the table: shown as recorded
    assert find_vaccine(" dtap-ipv/HIB ") is VACCINES["DTaP-IPV/Hib"]
    assert find_vaccine("Rota") is None  # the registry's code is RV


def test_the_schedule_uses_only_programme_vaccines_of_the_table() -> None:
    used: set[str] = set()
    for series in NIP_SCHEDULE:
        used |= series.codes
        rules = [*series.doses, *(rule for change in series.changes for rule in change.doses)]
        used |= {rule.after.vaccine_code for rule in rules if rule.after is not None}
    assert used - set(VACCINES) == set()
    assert {code for code in used if VACCINES[code].programme is not Programme.NIP} == set()
    # Every NIP vaccine of the table is scheduled.
    assert {code for code, vaccine in VACCINES.items() if vaccine.programme is Programme.NIP} == used


def test_live_injectable_vaccines_come_from_the_table() -> None:
    assert frozenset({"BCG", "MMR", "JE-L", "VAR", "HepA-L"}) == LIVE_INJECTABLE
    assert VACCINES["bOPV"].live and not VACCINES["bOPV"].live_injectable
    assert VACCINES["RV"].live and not VACCINES["RV"].live_injectable


def test_the_import_accepts_every_code_of_the_table_and_no_other() -> None:
    today = date(2026, 11, 23)
    doses = [
        {"vaccine_code": code.lower(), "dose_number": 1, "given_on": (CHILD.birth + timedelta(days=i)).isoformat()}
        for i, code in enumerate(VACCINES)
    ]
    record = {
        "registry_ref": CHILD.ref,
        "id_number": CHILD.id_number,
        "name": CHILD.name,
        "sex": CHILD.sex,
        "birth_date": CHILD.birth.isoformat(),
        "region_code": "320602",
        "clinic_code": "NT-CC-01",
        "stage": "child_clinic",
        "guardians": [{"relationship": "mother", "id_number": PARENT.id_number}],
        "doses": doses,
    }
    clinic = {"record": "clinic", "clinic_code": "NT-CC-01", "name": "门诊", "region_code": "320602"}
    parsed = parse_registry("x.json", json.dumps([clinic, record]).encode(), today=today)
    assert parsed.errors == []
    assert {dose.vaccine_code for dose in parsed.files[0].doses} == set(VACCINES)
    record["doses"] = [{"vaccine_code": "Rota", "dose_number": 1, "given_on": CHILD.birth.isoformat()}]
    parsed = parse_registry("x.json", json.dumps([clinic, record]).encode(), today=today)
    assert [str(error) for error in parsed.errors] == [
        "[1].doses[0]: vaccine_code is not a known vaccine code (see docs/registry-format.md)"
    ]


def test_the_registry_docs_list_the_table() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "registry-format.md").read_text(encoding="utf-8")
    section = doc.split("Known vaccine codes", 1)[1].split("Rabies is not accepted", 1)[0]
    assert set(re.findall(r"`([^`]+)`", section)) - {"bot/immunization/vaccines.py"} == set(VACCINES)
