"""/v1/audit: query, verify and export the access log (scope audit:read; these reads are audited too)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from app.audit import service
from app.audit.schemas import AuditEventOut, AuditEventPage, ChainHeadOut, VerifyOut
from app.auth.principal import Scope
from app.pagination import Cursor, Limit
from app.responses import error_responses
from app.routing import AuditDep, AuditedRoute, RuntimeDep, SessionDep, endpoint
from app.runtime import Runtime

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=AuditedRoute)
NDJSON = "application/x-ndjson"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get("/events", operation_id="listAuditEvents", response_model=AuditEventPage,
            openapi_extra=endpoint("audit.query", Scope.AUDIT_READ), responses=error_responses(401, 403, 422, 429))
def list_events(
    session: SessionDep,
    audit: AuditDep,
    agency: Annotated[str | None, Query(max_length=32)] = None,
    token_id: uuid.UUID | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Literal["success", "denied", "rejected", "error"] | None = None,
    resource_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    order: Literal["asc", "desc"] = "desc",
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditEventPage:
    """Filter the access log; newest first unless `order=asc`."""
    items, next_cursor = service.list_events(
        session=session, agency=agency, token_id=str(token_id) if token_id else None, action=action,
        outcome=outcome, resource_id=str(resource_id) if resource_id else None, since=_utc(since),
        until=_utc(until), descending=order == "desc", limit=limit, cursor=cursor,
    )
    audit.resource_type = "audit_event"
    return AuditEventPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get("/events/{seq}", operation_id="getAuditEvent", response_model=AuditEventOut,
            openapi_extra=endpoint("audit.read", Scope.AUDIT_READ),
            responses=error_responses(401, 403, 404, 422, 429))
def get_event(seq: Annotated[int, Path(ge=1)], session: SessionDep, audit: AuditDep) -> AuditEventOut:
    """One event by its sequence number."""
    audit.resource_type = "audit_event"
    audit.detail = {"seq": seq}
    return AuditEventOut.model_validate(service.get_event(session=session, seq=seq))


@router.get("/verify", operation_id="verifyAuditChain", response_model=VerifyOut,
            openapi_extra=endpoint("audit.verify", Scope.AUDIT_READ), responses=error_responses(401, 403, 422, 429))
def verify(
    session: SessionDep,
    audit: AuditDep,
    from_seq: Annotated[int, Query(ge=1)] = 1,
    to_seq: Annotated[int | None, Query(ge=1)] = None,
) -> VerifyOut:
    """Recompute the chain from the stored columns; `first_invalid_seq` names the first bad event."""
    result = service.verify(session, from_seq=from_seq, to_seq=to_seq)
    audit.detail = {"from_seq": from_seq, "to_seq": to_seq, "ok": result.ok,
                    "first_invalid_seq": result.first_invalid_seq}
    return VerifyOut(ok=result.ok, checked=result.checked,
                     head=ChainHeadOut(seq=result.head_seq, hash=result.head_hash),
                     first_invalid_seq=result.first_invalid_seq)


def ndjson_lines(runtime: Runtime, *, to_seq: int, since: datetime | None, until: datetime | None) -> Iterator[bytes]:
    with runtime.sessions() as session:
        for document in service.iter_documents(session, to_seq=to_seq, since=since, until=until):
            yield json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@router.get("/export", operation_id="exportAuditEvents", response_class=StreamingResponse,
            openapi_extra=endpoint("audit.export", Scope.AUDIT_READ),
            responses={200: {"content": {NDJSON: {}}, "description": "One event per line"},
                       **error_responses(401, 403, 422, 429)})
def export(
    session: SessionDep,
    runtime: RuntimeDep,
    audit: AuditDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """Every event (optionally within a time range) up to the current head, as streamed NDJSON."""
    to_seq, _ = service.head(session)
    since, until = _utc(since), _utc(until)
    audit.detail = {"since": since.isoformat() if since else None,
                    "until": until.isoformat() if until else None, "to_seq": to_seq}
    return StreamingResponse(ndjson_lines(runtime, to_seq=to_seq, since=since, until=until), media_type=NDJSON)
