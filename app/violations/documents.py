"""A record as JSON: built from the row's columns, written back from validated content, and compared.

`record_document` is the single source of the record's JSON: GET serves it, every version stores it, so
`/versions/{n}` of the latest version is byte-for-byte the current record.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from sqlalchemy import Row

from app.clock import format_instant
from app.rawdb import Driver
from app.violations.models import Violation
from app.violations.schemas import ViolationContent

# Fields that change with every write; a history entry's `changes` leaves them out.
_BOOKKEEPING = ("version", "updated_at")


def encode_json(document: Any) -> bytes:
    """The service's JSON bytes (as Starlette's JSONResponse writes them)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def stored_record_json(stored: Any) -> bytes:
    """`encode_json` of a record document as stored (its JSON text, or as the driver parsed it), for the
    hottest route, GET /v1/violations/{id}. orjson writes strings, integers of up to 64 bits, booleans,
    null, arrays and objects exactly as encode_json does, five times faster, and a record holds nothing
    else: its schema has no number that is not an integer (both checked in
    tests/violations/test_record_json.py). Anything orjson refuses (a lone surrogate, a larger integer)
    goes through encode_json. The text is read by json, which keeps every integer an integer."""
    document = Driver.json(stored)
    try:
        return orjson.dumps(document)
    except TypeError:
        return encode_json(document)


def content_document(v: Violation | Row[Any]) -> dict[str, Any]:
    """The editable part of the record, in the shape a merge patch is applied to."""
    return {
        "subject": {
            "nip": v.subject_nip,
            "name": v.subject_name,
            "employment_type": v.subject_employment_type,
            "position": v.subject_position,
            "position_type": v.subject_position_type,
            "institution": v.subject_institution,
            "region_code": v.subject_region_code,
        },
        "election": {"type": v.election_type, "year": v.election_year, "stage": v.election_stage},
        "category": v.category,
        "description": v.description,
        "occurred_on": v.occurred_on.isoformat(),
        "evidence": v.evidence,
    }


def record_document(v: Violation | Row[Any]) -> dict[str, Any]:
    """The record's JSON from a loaded record, or from a row of the `violations` columns (a listed page)."""
    content = content_document(v)
    return {
        "id": str(v.id),
        "case_number": v.case_number,
        "status": v.status,
        "version": v.version,
        "reporting_agency": v.reporting_agency,
        "subject": content["subject"],
        "election": content["election"],
        "category": v.category,
        "description": v.description,
        "occurred_on": content["occurred_on"],
        "source": v.source,
        "evidence": v.evidence,
        "recommendation": v.recommendation,
        "follow_up": v.follow_up,
        "follow_up_due_on": v.follow_up_due_on.isoformat() if v.follow_up_due_on else None,
        "created_at": format_instant(v.created_at),
        "updated_at": format_instant(v.updated_at),
    }


def apply_content(v: Violation, content: ViolationContent) -> None:
    """Write validated content to the row's columns."""
    subject, election = content.subject, content.election
    v.subject_nip = subject.nip
    v.subject_name = subject.name
    v.subject_employment_type = str(subject.employment_type)
    v.subject_position = subject.position
    v.subject_position_type = str(subject.position_type)
    v.subject_institution = subject.institution
    v.subject_region_code = subject.region_code
    v.election_type = str(election.type)
    v.election_year = election.year
    v.election_stage = str(election.stage)
    v.category = str(content.category)
    v.description = content.description
    v.occurred_on = content.occurred_on
    # Optional evidence fields left out are not stored as nulls, so the record shows what was sent.
    v.evidence = [item.model_dump(mode="json", exclude_none=True) for item in content.evidence]


def diff(old: Any, new: Any, path: str = "") -> dict[str, dict[str, Any]]:
    """{"field.path": {"from", "to"}} for every leaf that differs; objects are walked, arrays and
    values that appear or disappear are compared whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, dict[str, Any]] = {}
        for key in [*old, *(k for k in new if k not in old)]:
            out.update(diff(old.get(key), new.get(key), f"{path}.{key}" if path else key))
        return out
    return {} if old == new else {path: {"from": old, "to": new}}


def record_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    strip = {k: v for k, v in before.items() if k not in _BOOKKEEPING}
    return diff(strip, {k: v for k, v in after.items() if k not in _BOOKKEEPING})
