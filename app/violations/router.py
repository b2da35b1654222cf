"""/v1/violations and /v1/changes: the shared violation records, their workflow, history and feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from app.auth.principal import Scope
from app.clock import today_jakarta
from app.errors import NotFound
from app.responses import error_responses
from app.routing import (
    AuditDep,
    AuditedRoute,
    Cursor,
    Limit,
    PrincipalDep,
    RuntimeDep,
    SessionDep,
    context_of,
    endpoint,
    run_read,
    runtime_of,
)
from app.violations import queries, service
from app.violations.conditions import RawBody, etag, none_match
from app.violations.documents import encode_json, stored_record_json
from app.violations.openapi import ACTION_BODY, PATCH_BODY
from app.violations.queries import Sort, ViolationFilters
from app.violations.schemas import (
    NIP_PATTERN,
    ChangePage,
    History,
    ViolationCreate,
    ViolationOut,
    ViolationPage,
)
from app.violations.service import Actor
from app.violations.workflow import Category, ElectionType, Status

router = APIRouter(prefix="/v1", route_class=AuditedRoute)

ViolationId = Annotated[str, Path(description="Record id (a UUID); an unknown or malformed id is 404.",
                                  json_schema_extra={"format": "uuid"})]
IfMatch = Annotated[str | None, Header(description='Required: the ETag last read, e.g. `"3"`.')]
# Bounded by the columns' integer types, so an absurd number is a 422, not a database overflow.
MAX_VERSION, MAX_SEQ = 2**31 - 1, 2**63 - 1
FeedPosition = Annotated[int, Query(ge=0, le=MAX_SEQ,
                                    description="The `next_after` of your previous page (0 at first).")]
JSON = "application/json"
WRITE_ERRORS = error_responses(401, 403, 404, 409, 412, 413, 415, 422, 428, 429)
_ETAG_HEADER = {"ETag": {"description": 'The record\'s version as a strong entity tag, e.g. `"3"`.',
                         "schema": {"type": "string"}}}


async def _raw_body(request: Request) -> RawBody:
    return RawBody(request.headers.get("content-type"), await request.body())


RawBodyDep = Annotated[RawBody, Depends(_raw_body)]


def record_response(document: dict[str, Any]) -> Response:
    return record_body_response(encode_json(document), document["version"])


def record_body_response(body: bytes, version: int) -> Response:
    return Response(body, media_type=JSON, headers={"ETag": etag(version)})


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.post(
    "/violations", tags=["violations"], operation_id="createViolation", status_code=201,
    response_model=ViolationOut, openapi_extra=endpoint("violation.create", Scope.VIOLATIONS_WRITE),
    responses={201: {"description": "Created (or replayed: `Idempotent-Replayed: true`)", "headers": {
        **_ETAG_HEADER, "Location": {"description": "The new record's path.", "schema": {"type": "string"}},
        "Idempotent-Replayed": {"description": "`true` when this is the stored response of an earlier "
                                               "request with the same Idempotency-Key.",
                                "schema": {"type": "string"}}}},
               **error_responses(401, 403, 413, 422, 429)},
)
def create_violation(
    data: ViolationCreate,
    session: SessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=255,
        description="Optional. The same key and body from your agency within 24 h returns the first "
                    "response again.",
    )] = None,
) -> Response:
    """Report a violation (role `reporter`); `reporting_agency` is the caller's agency."""
    created = service.create_violation(session=session, data=data, actor=Actor.of(principal),
                                       idempotency_key=idempotency_key)
    audit.touch("violation", created.violation_id)
    audit.detail = created.detail
    if created.change is not None:
        audit.feed_entries.append(created.change.write)
    stored = created.response
    headers = {**stored.headers, **({"Idempotent-Replayed": "true"} if created.replayed else {})}
    return Response(stored.body, status_code=stored.status, media_type=JSON, headers=headers)


@router.get(
    "/violations", tags=["violations"], operation_id="listViolations", response_model=ViolationPage,
    openapi_extra=endpoint("violation.list", Scope.VIOLATIONS_READ),
    responses=error_responses(401, 403, 422, 429),
)
def list_violations(
    session: SessionDep,
    audit: AuditDep,
    status: Annotated[list[Status] | None, Query(max_length=len(Status),
                                                 description="Repeatable: any of these statuses.")] = None,
    category: Category | None = None,
    reporting_agency: Annotated[str | None, Query(max_length=32)] = None,
    region_code: Annotated[str | None, Query(max_length=16, description="`32` also matches `32.16`.")] = None,
    election_type: ElectionType | None = None,
    election_year: Annotated[int | None, Query(ge=2004, le=9999)] = None,
    nip: Annotated[str | None, Query(pattern=NIP_PATTERN, max_length=64,
                                     description="18 digits (spaces ignored).")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in subject name, institution or "
                                                               "description (case-insensitive).")] = None,
    updated_since: Annotated[datetime | None, Query(description="RFC 3339; without an offset, UTC.")] = None,
    overdue: Annotated[bool | None, Query(description="true: `recommended` with `follow_up_due_on` before "
                                                      "today (Asia/Jakarta); false: all others.")] = None,
    sort: Sort = Sort.UPDATED_DESC,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Filter records; keyset-paginated with `next_cursor`."""
    filters = ViolationFilters(
        statuses=tuple(s.value for s in status or ()), category=category.value if category else None,
        reporting_agency=reporting_agency, region_code=region_code,
        election_type=election_type.value if election_type else None, election_year=election_year,
        nip=nip, q=q, updated_since=_utc(updated_since), overdue=overdue,
    )
    items, next_cursor = queries.list_records(session=session, filters=filters, sort=sort, limit=limit,
                                              cursor=cursor, today=today_jakarta())
    audit.touch("violation", *(item["id"] for item in items))
    return Response(encode_json({"items": items, "next_cursor": next_cursor}), media_type=JSON)


@router.get(
    "/violations/{violation_id}", tags=["violations"], operation_id="getViolation",
    response_model=ViolationOut, openapi_extra=endpoint("violation.read", Scope.VIOLATIONS_READ),
    responses={200: {"headers": _ETAG_HEADER},
               304: {"description": "If-None-Match names the current version"},
               **error_responses(401, 403, 404, 429)},
)
async def get_violation(
    request: Request,
    violation_id: ViolationId,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One record, with its version as a strong ETag."""
    uid = service.parse_id(violation_id)
    audit = context_of(request).audit
    audit.touch("violation", uid)
    driver = runtime_of(request).driver
    found = await run_read(request, lambda connection: queries.current_document(connection, driver, uid))
    if found is None:
        raise NotFound(f"no violation record with id {violation_id}")
    version, document = found
    if none_match(if_none_match, version):
        audit.detail = {"not_modified": True}
        return Response(status_code=304, headers={"ETag": etag(version)})
    return record_body_response(stored_record_json(document), version)


@router.patch(
    "/violations/{violation_id}", tags=["violations"], operation_id="updateViolation",
    response_model=ViolationOut,
    openapi_extra={**endpoint("violation.update", Scope.VIOLATIONS_WRITE), **PATCH_BODY},
    responses={200: {"headers": _ETAG_HEADER}, **WRITE_ERRORS},
)
def update_violation(
    violation_id: ViolationId, body: RawBodyDep, session: SessionDep, principal: PrincipalDep,
    audit: AuditDep, if_match: IfMatch = None,
) -> Response:
    """Change the record's content with a JSON merge patch (reporting agency or role `verifier`)."""
    audit.touch("violation", service.parse_id(violation_id))  # refused attempts are linked to it too
    written = service.update_violation(session=session, violation_id=violation_id, if_match=if_match,
                                       body=body, actor=Actor.of(principal))
    audit.detail = written.detail
    if written.change is not None:
        audit.feed_entries.append(written.change.write)
    return record_response(written.document)


@router.post(
    "/violations/{violation_id}/actions", tags=["violations"], operation_id="actOnViolation",
    response_model=ViolationOut,
    openapi_extra={**endpoint("violation.action", Scope.VIOLATIONS_WRITE), **ACTION_BODY},
    responses={200: {"headers": _ETAG_HEADER}, **WRITE_ERRORS},
)
def act_on_violation(
    violation_id: ViolationId, body: RawBodyDep, session: SessionDep, principal: PrincipalDep,
    runtime: RuntimeDep, audit: AuditDep, if_match: IfMatch = None,
) -> Response:
    """Take a workflow step (see the transition table in docs/violations.md)."""
    audit.touch("violation", service.parse_id(violation_id))  # refused attempts are linked to it too
    written = service.apply_action(session=session, violation_id=violation_id, if_match=if_match, body=body,
                                   actor=Actor.of(principal), follow_up_days=runtime.settings.follow_up_days)
    audit.detail = written.detail
    if written.change is not None:
        audit.feed_entries.append(written.change.write)
    return record_response(written.document)


@router.get(
    "/violations/{violation_id}/history", tags=["violations"], operation_id="getViolationHistory",
    response_model=History, openapi_extra=endpoint("violation.history", Scope.VIOLATIONS_READ),
    responses=error_responses(401, 403, 404, 429),
)
def get_history(violation_id: ViolationId, session: SessionDep, audit: AuditDep) -> Response:
    """Every version's history entry, oldest first. History is never rewritten."""
    audit.touch("violation", service.parse_id(violation_id))
    items = queries.history(session=session, violation_id=violation_id)
    return Response(encode_json({"items": items}), media_type=JSON)


@router.get(
    "/violations/{violation_id}/versions/{version}", tags=["violations"], operation_id="getViolationVersion",
    response_model=ViolationOut, openapi_extra=endpoint("violation.version", Scope.VIOLATIONS_READ),
    responses={200: {"headers": _ETAG_HEADER}, **error_responses(401, 403, 404, 422, 429)},
)
def get_version(
    violation_id: ViolationId, version: Annotated[int, Path(ge=1, le=MAX_VERSION)], session: SessionDep,
    audit: AuditDep,
) -> Response:
    """The record exactly as it was at that version."""
    audit.touch("violation", service.parse_id(violation_id))
    audit.detail = {"version": version}
    document = queries.version_document(session=session, violation_id=violation_id, version=version)
    return record_response(document)


@router.get(
    "/changes", tags=["changes"], operation_id="listChanges", response_model=ChangePage,
    openapi_extra=endpoint("changes.read", Scope.VIOLATIONS_READ),
    responses=error_responses(401, 403, 422, 429),
)
def list_changes(
    session: SessionDep,
    audit: AuditDep,
    after: FeedPosition = 0,
    limit: Limit = 50,
) -> Response:
    """The change feed: every created version in commit order. Keep passing `next_after` to see each
    change exactly once."""
    items, next_after = queries.list_changes(session=session, after=after, limit=limit)
    audit.touch("violation", *(item["violation_id"] for item in items))
    audit.detail = {"after": after, "next_after": next_after}
    return Response(encode_json({"items": items, "next_after": next_after}), media_type=JSON)
