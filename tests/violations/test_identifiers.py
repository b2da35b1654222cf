"""Properties and examples for NIP and region-code validation."""

import calendar
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.reference import load_provinces
from app.violations.identifiers import normalize_nip, validate_nip, validate_region_code

TODAY = date(2026, 11, 22)

# Written out independently of provinces.csv (DOMAIN.md, "Identifiers").
PROVINCE_CODES = frozenset(
    f"{n:02d}"
    for n in [
        *range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66),
        *range(71, 77), 81, 82, *range(91, 97),
    ]
)  # fmt: skip
LOCAL_NUMBERS = [f"{n:02d}" for n in [*range(1, 70), *range(71, 100)]]
VALID_REGION_CODES = PROVINCE_CODES | {f"{p}.{n}" for p in PROVINCE_CODES for n in LOCAL_NUMBERS}


def month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


def yyyymm(index: int) -> str:
    return f"{index // 12:04d}{index % 12 + 1:02d}"


def yyyymmdd(d: date) -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


TODAY_INDEX = month_index(TODAY.year, TODAY.month)
LATEST_ADULT_BIRTH = date(TODAY.year - 18, TODAY.month, calendar.monthrange(TODAY.year - 18, TODAY.month)[1])

sexes = st.sampled_from("12")
sequences = st.integers(1, 999).map(lambda n: f"{n:03d}")
adult_births = st.dates(max_value=LATEST_ADULT_BIRTH)


@st.composite
def valid_pns_nips(draw: st.DrawFn) -> str:
    born = draw(adult_births)
    first = month_index(born.year + 18, born.month)
    appointment = yyyymm(draw(st.integers(first, TODAY_INDEX)))
    return yyyymmdd(born) + appointment + draw(sexes) + draw(sequences)


@st.composite
def invalid_birth_dates(draw: st.DrawFn) -> str:
    year = draw(st.integers(0, 9999))
    kind = draw(st.sampled_from(["year0", "month", "day0", "day_past_end"]))
    if kind == "year0":
        return f"0000{draw(st.integers(1, 12)):02d}{draw(st.integers(1, 28)):02d}"
    if kind == "month":
        month = draw(st.sampled_from([0, *range(13, 100)]))
        return f"{year:04d}{month:02d}{draw(st.integers(0, 99)):02d}"
    month = draw(st.integers(1, 12))
    if kind == "day0":
        return f"{year:04d}{month:02d}00"
    last = calendar.monthrange(max(year, 1), month)[1]
    return f"{year:04d}{month:02d}{draw(st.integers(last + 1, 99)):02d}"


whitespace = st.text(alphabet=" \t\n\r\u00a0\u3000", max_size=3)


def in_script(digits: str, zero: int) -> str:
    """Spell ASCII digits in another script whose zero is the code point `zero`."""
    return "".join(chr(zero + int(d)) for d in digits)


ARABIC_INDIC_ZERO, FULLWIDTH_ZERO = 0x0660, 0xFF10


def interleave(nip: str, gaps: list[str]) -> str:
    return "".join(gap + char for gap, char in zip(gaps, nip, strict=False)) + gaps[-1]


# --- valid PNS NIPs ---------------------------------------------------------------------------


@given(valid_pns_nips(), st.lists(whitespace, min_size=19, max_size=19))
def test_valid_pns_nip_accepted_and_whitespace_stripped(nip: str, gaps: list[str]) -> None:
    assert validate_nip(nip, employment_type="PNS", today=TODAY) == nip
    spaced = interleave(nip, gaps)
    assert normalize_nip(spaced) == nip
    assert validate_nip(spaced, employment_type="PNS", today=TODAY) == nip


def test_spec_example() -> None:
    assert normalize_nip("19860926 201505 1 001") == "198609262015051001"
    assert validate_nip("19860926 201505 1 001", employment_type="PNS", today=TODAY) == "198609262015051001"


def test_appointment_boundaries() -> None:
    # The month of the 18th birthday is allowed, the month before is not.
    assert validate_nip("198609262004091001", employment_type="PNS", today=TODAY)
    with pytest.raises(ValueError, match="before the 18th birthday"):
        validate_nip("198609262004081001", employment_type="PNS", today=TODAY)
    # Today's month is allowed, next month is not.
    assert validate_nip("198609262026112001", employment_type="PNS", today=TODAY)
    with pytest.raises(ValueError, match="in the future"):
        validate_nip("198609262026122001", employment_type="PNS", today=TODAY)


def test_february_29_birthday() -> None:
    assert validate_nip("200002292018022999", employment_type="PNS", today=TODAY)
    with pytest.raises(ValueError, match="before the 18th birthday"):
        validate_nip("200002292018012999", employment_type="PNS", today=TODAY)
    with pytest.raises(ValueError, match="birth date 19990229 is not a real date"):
        validate_nip("199902292018022999", employment_type="PNS", today=TODAY)


# --- one property per PNS rejection rule -------------------------------------------------------


@given(invalid_birth_dates(), sexes, sequences)
def test_invalid_birth_date_rejected(birth: str, sex: str, sequence: str) -> None:
    with pytest.raises(ValueError, match=f"birth date {birth} is not a real date"):
        validate_nip(birth + "201505" + sex + sequence, employment_type="PNS", today=TODAY)


@given(adult_births, st.integers(0, 9999), st.sampled_from([0, *range(13, 100)]), sexes, sequences)
def test_invalid_appointment_month_rejected(born: date, year: int, month: int, sex: str, seq: str) -> None:
    appointment = f"{year:04d}{month:02d}"
    with pytest.raises(ValueError, match=f"appointment month {appointment} is not a real month"):
        validate_nip(yyyymmdd(born) + appointment + sex + seq, employment_type="PNS", today=TODAY)


@st.composite
def appointments_before_18(draw: st.DrawFn) -> tuple[date, str]:
    born = draw(st.dates(max_value=LATEST_ADULT_BIRTH))
    return born, yyyymm(draw(st.integers(0, month_index(born.year + 18, born.month) - 1)))


@given(appointments_before_18(), sexes, sequences)
def test_appointment_before_18th_birthday_rejected(case: tuple[date, str], sex: str, seq: str) -> None:
    born, appointment = case
    with pytest.raises(ValueError, match=f"appointment {appointment} is before the 18th birthday"):
        validate_nip(yyyymmdd(born) + appointment + sex + seq, employment_type="PNS", today=TODAY)


@given(adult_births, st.integers(TODAY_INDEX + 1, month_index(9999, 12)), sexes, sequences)
def test_appointment_in_future_rejected(born: date, index: int, sex: str, seq: str) -> None:
    appointment = yyyymm(index)
    with pytest.raises(ValueError, match=f"appointment {appointment} is in the future"):
        validate_nip(yyyymmdd(born) + appointment + sex + seq, employment_type="PNS", today=TODAY)


@given(valid_pns_nips(), st.sampled_from("03456789"))
def test_sex_digit_other_than_1_or_2_rejected(nip: str, sex: str) -> None:
    with pytest.raises(ValueError, match="sex digit must be 1 or 2"):
        validate_nip(nip[:14] + sex + nip[15:], employment_type="PNS", today=TODAY)


@given(valid_pns_nips())
def test_sequence_000_rejected(nip: str) -> None:
    with pytest.raises(ValueError, match="sequence must not be 000"):
        validate_nip(nip[:15] + "000", employment_type="PNS", today=TODAY)


# --- length and characters, both employment types ----------------------------------------------

employment_types = st.sampled_from(["PNS", "PPPK"])


@given(st.text(alphabet="0123456789", max_size=40).filter(lambda s: len(s) != 18), employment_types)
def test_wrong_length_rejected(digits: str, employment_type: str) -> None:
    with pytest.raises(ValueError, match="must be 18 digits"):
        validate_nip(digits, employment_type=employment_type, today=TODAY)


@given(
    valid_pns_nips(),
    st.integers(0, 17),
    st.characters(exclude_characters="0123456789").filter(lambda c: not c.isspace()),
    employment_types,
)
def test_non_digit_rejected(nip: str, position: int, char: str, employment_type: str) -> None:
    with pytest.raises(ValueError, match="must be 18 digits"):
        validate_nip(
            nip[:position] + char + nip[position + 1 :], employment_type=employment_type, today=TODAY
        )


@pytest.mark.parametrize(
    "nip",
    [
        in_script("198609262015051001", ARABIC_INDIC_ZERO),
        in_script("198609262015051001", FULLWIDTH_ZERO),
        "19860926201505100\u00b2",  # superscript two: str.isdigit() is True for it
    ],
)
def test_non_ascii_digits_rejected(nip: str) -> None:
    with pytest.raises(ValueError, match="must be 18 digits"):
        validate_nip(nip, employment_type="PPPK", today=TODAY)


@given(
    st.text(alphabet="0123456789", min_size=18, max_size=18), st.lists(whitespace, min_size=19, max_size=19)
)
def test_pppk_accepts_any_18_digits(digits: str, gaps: list[str]) -> None:
    assert validate_nip(interleave(digits, gaps), employment_type="PPPK", today=TODAY) == digits


def test_pppk_does_not_apply_pns_layout() -> None:
    assert validate_nip("999999999999999000", employment_type="PPPK", today=TODAY) == "999999999999999000"


@given(valid_pns_nips(), st.text(max_size=8).filter(lambda s: s not in ("PNS", "PPPK")))
def test_unknown_employment_type_rejected(nip: str, employment_type: str) -> None:
    with pytest.raises(ValueError, match="employment_type must be PNS or PPPK"):
        validate_nip(nip, employment_type=employment_type, today=TODAY)


# --- provinces and region codes ---------------------------------------------------------------


def test_provinces_are_the_38_current_ones() -> None:
    provinces = load_provinces()
    assert len(provinces) == 38
    assert set(provinces) == PROVINCE_CODES
    assert provinces["32"] == "Jawa Barat"
    assert {code: provinces[code] for code in ("93", "94", "95", "96")} == {
        "93": "Papua Selatan",
        "94": "Papua Tengah",
        "95": "Papua Pegunungan",
        "96": "Papua Barat Daya",
    }
    assert all(name and name == name.strip() for name in provinces.values())


def test_every_province_and_regency_city_accepted() -> None:
    for code in sorted(VALID_REGION_CODES):
        assert validate_region_code(code) == code


@pytest.mark.parametrize("province", sorted(PROVINCE_CODES))
def test_regency_city_00_and_70_rejected(province: str) -> None:
    for local in ("00", "70"):
        with pytest.raises(ValueError, match=f"regency/city number {local}"):
            validate_region_code(f"{province}.{local}")


@pytest.mark.parametrize("province", sorted({f"{n:02d}" for n in range(100)} - PROVINCE_CODES))
def test_unknown_province_rejected(province: str) -> None:
    for code in (province, f"{province}.01", f"{province}.71"):
        with pytest.raises(ValueError, match=f"unknown province {province}"):
            validate_region_code(code)


@pytest.mark.parametrize(
    "code",
    ["", "3", "321", "32.", ".16", "32.1", "32.161", "32-16", "3216", "32.16.01", "32.16.01.2001",
     " 32", "32 ", "32\n", "32.16\n", "ab", "32.ab", "+32", "-32",
     in_script("32", FULLWIDTH_ZERO), in_script("32", ARABIC_INDIC_ZERO)],
)  # fmt: skip
def test_malformed_region_code_rejected(code: str) -> None:
    with pytest.raises(ValueError, match=r"must be a province NN or a regency/city NN\.NN"):
        validate_region_code(code)


@given(
    st.text(alphabet="0123456789. \n", max_size=7)
    | st.text(max_size=7)
    | st.sampled_from(sorted(VALID_REGION_CODES))
)
def test_region_code_accepted_exactly_when_valid(code: str) -> None:
    if code in VALID_REGION_CODES:
        assert validate_region_code(code) == code
    else:
        with pytest.raises(ValueError):
            validate_region_code(code)
