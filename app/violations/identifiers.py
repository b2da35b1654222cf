"""Validation of civil-servant identifiers (NIP, NI PPPK) and Kemendagri region codes."""

import re
from datetime import date

from app.reference import load_provinces

# ASCII only: `\d` and str.isdigit() also accept other scripts' digits and superscripts.
_EIGHTEEN_DIGITS = re.compile(r"[0-9]{18}")
_REGION_CODE = re.compile(r"([0-9]{2})(?:\.([0-9]{2}))?")


def normalize_nip(value: str) -> str:
    """Remove all whitespace, including between the groups ("19860926 201505 1 001")."""
    return "".join(value.split())


def validate_nip(nip: str, *, employment_type: str, today: date) -> str:
    """Return the normalized NIP, or raise ValueError naming the rule that failed.

    PPPK: exactly 18 ASCII digits (the layout of NI PPPK is unconfirmed).
    PNS: 18 digits laid out as birth date YYYYMMDD (a real date) + CPNS appointment YYYYMM
    (month 01-12) + sex digit 1 or 2 + sequence 001-999 (Perka BKN 22/2007). The appointment is
    compared by month: it must not be before the month of the 18th birthday, i.e.
    (appointment year, month) >= (birth year + 18, birth month), and not after today's month.
    Comparing months means a 29 February birthday needs no special case. `today` is the caller's
    date in Asia/Jakarta.
    """
    normalized = normalize_nip(nip)
    if employment_type not in ("PNS", "PPPK"):
        raise ValueError(f"employment_type must be PNS or PPPK, not {employment_type!r}")
    if not _EIGHTEEN_DIGITS.fullmatch(normalized):
        raise ValueError("NIP must be 18 digits")
    if employment_type == "PPPK":
        return normalized

    birth, appointment = normalized[0:8], normalized[8:14]
    sex, sequence = normalized[14], normalized[15:18]
    try:
        born = date(int(birth[0:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError:
        raise ValueError(f"NIP birth date {birth} is not a real date") from None
    appt_year, appt_month = int(appointment[0:4]), int(appointment[4:6])
    if not 1 <= appt_month <= 12:
        raise ValueError(f"NIP appointment month {appointment} is not a real month")
    if (appt_year, appt_month) < (born.year + 18, born.month):
        raise ValueError(f"NIP appointment {appointment} is before the 18th birthday")
    if (appt_year, appt_month) > (today.year, today.month):
        raise ValueError(f"NIP appointment {appointment} is in the future")
    if sex not in ("1", "2"):
        raise ValueError("NIP sex digit must be 1 or 2")
    if sequence == "000":
        raise ValueError("NIP sequence must not be 000")
    return normalized


def validate_region_code(code: str) -> str:
    """Return a province code `NN` or regency/city code `NN.NN` unchanged, or raise ValueError.

    The province must be one of the 38 current ones; regencies are numbered 01-69 and cities 71-99
    (Permendagri 137/2017).
    """
    match = _REGION_CODE.fullmatch(code)
    if match is None:
        raise ValueError(f"region code {code!r} must be a province NN or a regency/city NN.NN")
    province, local = match.groups()
    if province not in load_provinces():
        raise ValueError(f"region code {code!r} has unknown province {province}")
    if local is not None and not (1 <= int(local) <= 69 or 71 <= int(local) <= 99):
        raise ValueError(
            f"region code {code!r}: regency/city number {local} must be 01-69 (regency) or 71-99 (city)"
        )
    return code
