"""The violation vocabulary and the workflow's transition table, declared once as data.

Validation (schemas.py), the OpenAPI enums, the service's checks, docs/violations.md and the tests all
read these; nothing else spells a status, category or action.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from app.agencies.models import Role


class Status(StrEnum):
    REPORTED = "reported"
    UNDER_VERIFICATION = "under_verification"
    RECOMMENDED = "recommended"
    DATA_BLOCKED = "data_blocked"
    NOT_PROVEN = "not_proven"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    SANCTIONED = "sanctioned"
    SUBJECT_DEPARTED = "subject_departed"


FINAL_STATUSES = frozenset({Status.NOT_PROVEN, Status.REJECTED, Status.CANCELLED, Status.SANCTIONED,
                            Status.SUBJECT_DEPARTED})
OPEN_STATUSES = frozenset(Status) - FINAL_STATUSES


class Category(StrEnum):
    """The 13 forms of violation of the SKB matrix, in its order."""

    CAMPAIGN_PROPS = "campaign_props"
    ONLINE_CAMPAIGNING = "online_campaigning"
    CANDIDACY_WITHOUT_LEAVE = "candidacy_without_leave"
    CAMPAIGN_ATTENDANCE = "campaign_attendance"
    PARTY_MEMBERSHIP = "party_membership"
    SOCIAL_MEDIA_ENGAGEMENT = "social_media_engagement"
    PARTISAN_PHOTO = "partisan_photo"
    PARTISAN_EVENT = "partisan_event"
    CAMPAIGN_TEAM_BEFORE_CANDIDACY = "campaign_team_before_candidacy"
    CAMPAIGN_TEAM_AFTER_CANDIDACY = "campaign_team_after_candidacy"
    INDEPENDENT_CANDIDATE_SUPPORT = "independent_candidate_support"
    PARTISAN_DECISION = "partisan_decision"
    OTHER = "other"


class Sanction(StrEnum):
    ETHICS_CLOSED_STATEMENT = "ethics_closed_statement"
    ETHICS_OPEN_STATEMENT = "ethics_open_statement"
    DISCIPLINE_LIGHT = "discipline_light"
    DISCIPLINE_MEDIUM = "discipline_medium"
    DISCIPLINE_HEAVY = "discipline_heavy"
    DISMISSAL = "dismissal"


class EmploymentType(StrEnum):
    PNS = "PNS"
    PPPK = "PPPK"


class PositionType(StrEnum):
    JPT = "jpt"
    ADMINISTRATOR = "administrator"
    PENGAWAS = "pengawas"
    FUNGSIONAL = "fungsional"
    PELAKSANA = "pelaksana"
    KEPALA_WILAYAH = "kepala_wilayah"


class ElectionType(StrEnum):
    PEMILU = "pemilu"
    PILKADA = "pilkada"


class ElectionStage(StrEnum):
    PRE_CAMPAIGN = "pre_campaign"
    CAMPAIGN = "campaign"
    QUIET_PERIOD = "quiet_period"
    VOTING = "voting"
    POST_VOTING = "post_voting"


class Source(StrEnum):
    FINDING = "finding"
    PUBLIC_REPORT = "public_report"


class ActionName(StrEnum):
    START_VERIFICATION = "start_verification"
    RECOMMEND = "recommend"
    DISMISS = "dismiss"
    CANCEL = "cancel"
    RECORD_FOLLOW_UP = "record_follow_up"
    BLOCK_DATA = "block_data"
    MARK_SUBJECT_DEPARTED = "mark_subject_departed"


# History `action` values besides the workflow actions.
CREATE = "create"
UPDATE = "update"
HISTORY_ACTIONS = (CREATE, UPDATE, *(str(a) for a in ActionName))


class Payload(StrEnum):
    """Body fields an action may carry besides `action` and `note`; schemas.py gives each its type."""

    RECOMMENDATION = "recommendation"
    OUTCOME = "outcome"
    REASON = "reason"
    FOLLOW_UP = "follow_up"


@dataclass(frozen=True)
class Permission:
    """Who may do something: an agency holding any of `roles`, or (if set) the record's reporting agency."""

    roles: frozenset[Role] = frozenset()
    reporting_agency: bool = False

    def allows(self, *, agency: str, roles: Iterable[str], reporting_agency: str | None) -> bool:
        if self.reporting_agency and reporting_agency is not None and agency == reporting_agency:
            return True
        return not self.roles.isdisjoint(roles)  # StrEnum members hash and compare as their values

    def describe(self, *, markdown: bool = True) -> str:
        """`verifier` or the reporting agency (markdown), or: the verifier role or the reporting agency."""
        parts = []
        if self.roles:
            names = " or ".join(f"`{r}`" if markdown else str(r) for r in sorted(self.roles))
            parts.append(names if markdown else f"the {names} role")
        if self.reporting_agency:
            parts.append("the reporting agency")
        return " or ".join(parts)


@dataclass(frozen=True)
class Transition:
    action: ActionName
    from_statuses: frozenset[Status]
    # More than one target when the payload chooses it (dismiss: `outcome`).
    to_statuses: tuple[Status, ...]
    permission: Permission
    payload: tuple[Payload, ...] = ()
    # block_data: only once today (Asia/Jakarta) is after the record's follow_up_due_on.
    requires_overdue: bool = False
    summary: str = field(default="", compare=False)


# SPEC §8, the whole workflow.
TRANSITIONS: dict[ActionName, Transition] = {t.action: t for t in (
    Transition(ActionName.START_VERIFICATION, frozenset({Status.REPORTED}), (Status.UNDER_VERIFICATION,),
               Permission(frozenset({Role.VERIFIER})),
               summary="the verifier takes the case up"),
    Transition(ActionName.RECOMMEND, frozenset({Status.UNDER_VERIFICATION}), (Status.RECOMMENDED,),
               Permission(frozenset({Role.VERIFIER})), payload=(Payload.RECOMMENDATION,),
               summary="proven: a sanction is recommended to the PPK; sets follow_up_due_on"),
    Transition(ActionName.DISMISS, frozenset({Status.REPORTED, Status.UNDER_VERIFICATION}),
               (Status.NOT_PROVEN, Status.REJECTED), Permission(frozenset({Role.VERIFIER})),
               payload=(Payload.OUTCOME, Payload.REASON),
               summary="the case ends as not proven or rejected"),
    Transition(ActionName.CANCEL, frozenset({Status.REPORTED, Status.UNDER_VERIFICATION}),
               (Status.CANCELLED,), Permission(reporting_agency=True), payload=(Payload.REASON,),
               summary="the reporting agency withdraws its report"),
    Transition(ActionName.RECORD_FOLLOW_UP, frozenset({Status.RECOMMENDED, Status.DATA_BLOCKED}),
               (Status.SANCTIONED,), Permission(frozenset({Role.FOLLOW_UP})), payload=(Payload.FOLLOW_UP,),
               summary="the PPK's decree imposing the sanction is recorded"),
    Transition(ActionName.BLOCK_DATA, frozenset({Status.RECOMMENDED}), (Status.DATA_BLOCKED,),
               Permission(frozenset({Role.ENFORCER})), requires_overdue=True,
               summary="the PPK missed follow_up_due_on: the personnel data is blocked in SIASN"),
    Transition(ActionName.MARK_SUBJECT_DEPARTED, OPEN_STATUSES, (Status.SUBJECT_DEPARTED,),
               Permission(frozenset({Role.VERIFIER, Role.ENFORCER})), payload=(Payload.REASON,),
               summary="the civil servant left, retired or resigned"),
)}

# Who may create a record, and who may change its content with PATCH.
CREATE_PERMISSION = Permission(frozenset({Role.REPORTER}))
EDIT_PERMISSION = Permission(frozenset({Role.VERIFIER}), reporting_agency=True)

# The content a PATCH (JSON merge patch) may change; everything else is owned by the server or workflow.
EDITABLE_FIELDS = ("subject", "election", "category", "description", "occurred_on", "evidence")


def _statuses(statuses: Iterable[Status]) -> str:
    chosen = set(statuses)
    if chosen == set(OPEN_STATUSES):
        return "any non-final"
    return ", ".join(f"`{s}`" for s in Status if s in chosen)


def transition_table_markdown() -> str:
    """The workflow as a Markdown table; docs/violations.md embeds exactly this (a test checks it)."""
    lines = ["| action | from | to | who | payload |", "|---|---|---|---|---|"]
    for t in TRANSITIONS.values():
        source = _statuses(t.from_statuses)
        if t.requires_overdue:
            source += ", after `follow_up_due_on`"
        target = " or ".join(f"`{s}`" for s in t.to_statuses)
        payload = ", ".join(f"`{p}`" for p in t.payload) or "—"
        lines.append(f"| `{t.action}` | {source} | {target} | {t.permission.describe()} | {payload} |")
    return "\n".join(lines)
