"""Request and response bodies for violation records, built from the vocabulary in workflow.py."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from functools import reduce
from operator import or_
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    create_model,
    field_validator,
)

from app.clock import today_jakarta
from app.reference import load_provinces
from app.violations.identifiers import normalize_nip, validate_nip, validate_region_code
from app.violations.workflow import (
    HISTORY_ACTIONS,
    TRANSITIONS,
    ActionName,
    Category,
    ElectionStage,
    ElectionType,
    EmploymentType,
    Payload,
    PositionType,
    Sanction,
    Source,
    Status,
)

FIRST_ELECTION_YEAR = 2004
MAX_EVIDENCE = 50


def storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL; refusing it here keeps both databases answering alike (422)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


Storable = AfterValidator(storable)
# Patterns are stated so that JSON Schema (ECMA-262), pydantic (Rust regex) and Python read them alike,
# hence explicit classes instead of \s, whose meaning differs between those engines (U+0085, U+FEFF).
# WHITE_SPACE is what trimming removes (Unicode White_Space); NOT_BLANK, unanchored as JSON Schema
# patterns are, says "something is left after trimming", i.e. min_length=1 after strip_whitespace.
WHITE_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{WHITE_SPACE}]"


def _text(max_length: int) -> StringConstraints:
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length, pattern=NOT_BLANK)


ShortText = Annotated[str, _text(200), Storable]
Note = Annotated[str, _text(2000), Storable]
Description = Annotated[str, _text(10_000), Storable]
EvidenceText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000), Storable]
# 18 digits, spaces allowed between them (stripped on input); the PNS date rules are checked in code.
NIP_PATTERN = r"^ *(?:[0-9] *){18}$"
# Province NN (one of the 38 in provinces.csv) or regency NN.01-69 / city NN.71-99 (Permendagri 137/2017).
REGION_CODE_PATTERN = (r"^(?:" + "|".join(sorted(load_provinces())) +
                       r")(?:\.(?:0[1-9]|[1-6][0-9]|7[1-9]|[89][0-9]))?$")
HTTP_URI_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\x00-\x20/?#]+(?:[/?#][^\x00-\x20]*)?$"


def not_in_future(value: date) -> date:
    """Date rules use the calendar date in Asia/Jakarta, the seat of all five agencies (SPEC §5)."""
    if value > today_jakarta():
        raise ValueError(f"must not be in the future (today in Asia/Jakarta is {today_jakarta()})")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Subject(Strict):
    """The civil servant the case is about. `employment_type` is declared first because the NIP rule
    depends on it."""

    employment_type: EmploymentType
    nip: str = Field(description="NIP (PNS) or NI PPPK, 18 digits; spaces are stripped on input. A PNS "
                                 "NIP is birth date YYYYMMDD, appointment YYYYMM (from the 18th birthday, "
                                 "not in the future), sex 1 or 2 and sequence 001-999.",
                     examples=["198609262015051001"], pattern=NIP_PATTERN, max_length=64)
    name: ShortText
    position: ShortText
    position_type: PositionType
    institution: ShortText = Field(examples=["Pemerintah Kabupaten Bekasi"])
    region_code: str = Field(description="Kemendagri code: province `NN` or regency/city `NN.NN`.",
                             examples=["32.16"], pattern=REGION_CODE_PATTERN)

    @field_validator("nip")
    @classmethod
    def _nip(cls, value: str, info: ValidationInfo) -> str:
        employment_type = info.data.get("employment_type")
        if employment_type is None:  # its own error is reported; nothing to check the NIP against
            return normalize_nip(value)
        return validate_nip(value, employment_type=str(employment_type), today=today_jakarta())

    @field_validator("region_code")
    @classmethod
    def _region(cls, value: str) -> str:
        return validate_region_code(value)  # the rule REGION_CODE_PATTERN states for the OpenAPI document


class Election(Strict):
    type: ElectionType
    year: int = Field(ge=FIRST_ELECTION_YEAR, description="2004 to next year.")
    stage: ElectionStage

    @field_validator("year")
    @classmethod
    def _year(cls, value: int) -> int:
        latest = today_jakarta().year + 1
        if value > latest:
            raise ValueError(f"must be at most {latest}")
        return value


class UrlEvidence(Strict):
    kind: Literal["url"]
    uri: str = Field(max_length=2048, pattern=HTTP_URI_PATTERN,
                     description="An absolute http(s) URL; never fetched by the server.")
    description: EvidenceText | None = None


class DocumentEvidence(Strict):
    kind: Literal["document"]
    name: Annotated[str, _text(255), Storable]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$", to_lower=True)]
    description: EvidenceText | None = None


Evidence = Annotated[UrlEvidence | DocumentEvidence, Field(discriminator="kind")]


class ViolationContent(Strict):
    """The part of a record its reporter writes and PATCH may change (workflow.EDITABLE_FIELDS)."""

    subject: Subject
    election: Election
    category: Category
    description: Description
    occurred_on: date
    evidence: list[Evidence] = Field(default_factory=list, max_length=MAX_EVIDENCE)

    _occurred = field_validator("occurred_on")(not_in_future)


class ViolationCreate(ViolationContent):
    source: Source


# --- workflow action bodies: one model per action, with the payload fields the table names ----------

class RecommendationIn(Strict):
    sanction: Sanction
    number: ShortText = Field(description="Number of the recommendation letter.")
    issued_on: date

    _issued = field_validator("issued_on")(not_in_future)


class FollowUpIn(Strict):
    sanction: Sanction
    decree_number: ShortText = Field(description="Number of the PPK's decree.")
    decided_on: date

    _decided = field_validator("decided_on")(not_in_future)


def _payload_field(payload: Payload, action: ActionName) -> tuple[Any, Any]:
    if payload is Payload.RECOMMENDATION:
        return RecommendationIn, ...
    if payload is Payload.FOLLOW_UP:
        return FollowUpIn, ...
    if payload is Payload.OUTCOME:
        outcomes = tuple(str(s) for s in TRANSITIONS[action].to_statuses)
        return Literal.__getitem__(outcomes), ...
    return Note, ...  # Payload.REASON


def _action_model(action: ActionName) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "action": (Literal.__getitem__(str(action)), ...),
        "note": (Note | None, None),
    }
    for payload in TRANSITIONS[action].payload:
        fields[str(payload)] = _payload_field(payload, action)
    name = "".join(part.title() for part in str(action).split("_")) + "Action"
    return create_model(name, __base__=Strict, __doc__=TRANSITIONS[action].summary, **fields)


ACTION_MODELS: dict[ActionName, type[BaseModel]] = {action: _action_model(action) for action in TRANSITIONS}
ActionRequest: TypeAdapter[Any] = TypeAdapter(
    Annotated[reduce(or_, ACTION_MODELS.values()), Field(discriminator="action")]  # type: ignore[arg-type]
)


# --- responses --------------------------------------------------------------------------------------

class Recommendation(RecommendationIn):
    issued_by: str


class FollowUp(FollowUpIn):
    recorded_by: str


class ViolationOut(Strict):
    id: uuid.UUID
    case_number: str = Field(examples=["NET-2026-000123"])
    status: Status
    version: int
    reporting_agency: str
    subject: Subject
    election: Election
    category: Category
    description: str
    occurred_on: date
    source: Source
    evidence: list[Evidence]
    recommendation: Recommendation | None
    follow_up: FollowUp | None
    follow_up_due_on: date | None
    created_at: datetime
    updated_at: datetime


class ViolationPage(Strict):
    items: list[ViolationOut]
    next_cursor: str | None


class FieldChange(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Any = Field(alias="from")
    to: Any


class HistoryEntry(Strict):
    version: int
    changed_at: datetime
    agency: str
    token_id: uuid.UUID | None
    action: Literal[HISTORY_ACTIONS]  # type: ignore[valid-type]
    note: str | None
    reason: str | None
    changes: dict[str, FieldChange]


class History(Strict):
    items: list[HistoryEntry]


class ChangeOut(Strict):
    seq: int
    violation_id: uuid.UUID
    version: int
    action: Literal[HISTORY_ACTIONS]  # type: ignore[valid-type]
    agency: str
    changed_at: datetime


class ChangePage(Strict):
    items: list[ChangeOut]
    next_after: int
