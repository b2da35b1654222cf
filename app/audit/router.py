"""/v1/audit: query, verify, export and checkpoint the access log (scope audit:read; audited too)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from app.audit import checkpoints, service, subjects
from app.audit.checkpoints import CheckpointOut, CheckpointPage
from app.audit.schemas import AuditEventOut, AuditEventPage, ChainHeadOut, VerifyOut
from app.auth.principal import Scope
from app.errors import ValidationFailed
from app.responses import error_responses
from app.routing import AuditDep, AuditedRoute, Cursor, Limit, RuntimeDep, SessionDep, endpoint
from app.runtime import Runtime
from app.violations.identifiers import normalize_nip
from app.violations.schemas import NIP_PATTERN

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=AuditedRoute)
NDJSON = "application/x-ndjson"
# seq is a BIGINT: larger numbers would fail in the database (a 500) instead of in validation (a 422).
MAX_SEQ = 2**63 - 1


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _time_range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """`since` (inclusive) and `until` (exclusive) in UTC; an `until` before `since` is a mistake that an
    empty answer would hide ("nobody read anything then"), so it is refused."""
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and until < since:
        raise ValidationFailed("until is before since",
                               errors=[{"loc": ["query", "until"], "msg": "must not be before since"}])
    return since, until


@router.get(
    "/events",
    operation_id="listAuditEvents",
    response_model=AuditEventPage,
    openapi_extra=endpoint("audit.query", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 422, 429),
)
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
    since, until = _time_range(since, until)
    items, next_cursor = service.list_events(
        session=session,
        agency=agency,
        token_id=str(token_id) if token_id else None,
        action=action,
        outcome=outcome,
        resource_id=str(resource_id) if resource_id else None,
        since=since,
        until=until,
        descending=order == "desc",
        limit=limit,
        cursor=cursor,
    )
    audit.resource_type = "audit_event"
    return AuditEventPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/events/{seq}",
    operation_id="getAuditEvent",
    response_model=AuditEventOut,
    openapi_extra=endpoint("audit.read", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 404, 422, 429),
)
def get_event(
    seq: Annotated[int, Path(ge=1, le=MAX_SEQ)], session: SessionDep, audit: AuditDep
) -> AuditEventOut:
    """One event by its sequence number."""
    audit.resource_type = "audit_event"
    audit.detail = {"seq": seq}
    return AuditEventOut.model_validate(service.get_event(session=session, seq=seq))


@router.get(
    "/subjects/{nip}",
    operation_id="getSubjectTrail",
    response_model=AuditEventPage,
    openapi_extra=endpoint("audit.subject", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 422, 429),
)
def subject_trail(
    nip: Annotated[str, Path(pattern=NIP_PATTERN, max_length=64,
                             description="The civil servant's 18-digit NIP or NI PPPK (spaces ignored, as "
                                         "printed: `19860926 201505 1 001`).")],
    session: SessionDep,
    audit: AuditDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AuditEventPage:
    """Every event that created, read, listed or changed any record about this civil servant, oldest
    first: the processing trail a data subject may ask for under the PDP law."""
    nip = normalize_nip(nip)  # stored without spaces, as every write strips them
    record_ids = subjects.records_about(session, nip)
    # The trail request itself touches those records, so it appears in their "who saw it" too.
    audit.touch("violation", *record_ids)
    audit.detail = {"nip": nip, "records": len(record_ids)}
    items, next_cursor = subjects.subject_trail(
        session=session, record_ids=record_ids, limit=limit, cursor=cursor
    )
    return AuditEventPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/verify",
    operation_id="verifyAuditChain",
    response_model=VerifyOut,
    openapi_extra=endpoint("audit.verify", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 422, 429),
)
def verify(
    session: SessionDep,
    runtime: RuntimeDep,
    audit: AuditDep,
    from_seq: Annotated[int, Query(ge=1, le=MAX_SEQ)] = 1,
    to_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    checkpoint: Annotated[
        str | None,
        Query(
            max_length=checkpoints.MAX_CHECKPOINT_CHARS,
            description="A checkpoint (compact JWS from /v1/audit/checkpoint) the log must still hold.",
        ),
    ] = None,
) -> VerifyOut:
    """Recompute the chain from the stored columns; `first_invalid_seq` names the first bad event.

    `head` is the last event that verified. With `checkpoint`, the log must also still reach the
    checkpoint's seq with the checkpoint's hash there (nothing cut off the end, nothing rewritten)."""
    if to_seq is not None and to_seq < from_seq:
        raise ValidationFailed(
            "to_seq is before from_seq",
            errors=[{"loc": ["query", "to_seq"], "msg": "must be at least from_seq"}],
        )
    claim = None
    if checkpoint is not None:
        try:
            claim = checkpoints.read_checkpoint(runtime.codec, checkpoint)
        except checkpoints.CheckpointInvalid as exc:
            raise ValidationFailed(
                "the checkpoint is not one this service signed",
                errors=[{"loc": ["query", "checkpoint"], "msg": str(exc)}],
            ) from None
    result = service.verify(session, from_seq=from_seq, to_seq=to_seq, checkpoint=claim)
    audit.detail = {
        "from_seq": from_seq,
        "to_seq": to_seq,
        "ok": result.ok,
        "first_invalid_seq": result.first_invalid_seq,
        "checkpoint_seq": claim.seq if claim else None,
    }
    return VerifyOut(
        ok=result.ok,
        checked=result.checked,
        head=ChainHeadOut(seq=result.head_seq, hash=result.head_hash),
        first_invalid_seq=result.first_invalid_seq,
    )


@router.get(
    "/checkpoint",
    operation_id="getAuditCheckpoint",
    response_model=CheckpointOut,
    openapi_extra=endpoint("audit.checkpoint", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 429),
)
async def get_checkpoint(runtime: RuntimeDep, audit: AuditDep) -> CheckpointOut:
    """A signed statement of the chain head `{"seq", "hash", "issued_at"}` (compact JWS, service key).

    Verify it with the key published at /.well-known/jwks.json; keep it outside the service to prove
    later that nothing up to that seq was changed, removed or cut off (`sbt audit verify --checkpoint`).
    """
    async with runtime.write_lock:  # its own write transaction; SQLite takes writers one at a time
        row = await anyio.to_thread.run_sync(checkpoints.record_checkpoint, runtime.sessions, runtime.codec)
    audit.resource_type = "audit_checkpoint"
    audit.detail = {"checkpoint_id": row.id, "seq": row.seq, "hash": row.hash}
    return CheckpointOut(jws=row.jws)


@router.get(
    "/checkpoints",
    operation_id="listAuditCheckpoints",
    response_model=CheckpointPage,
    openapi_extra=endpoint("audit.query", Scope.AUDIT_READ),
    responses=error_responses(401, 403, 422, 429),
)
def list_checkpoints(
    session: SessionDep,
    audit: AuditDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> CheckpointPage:
    """Checkpoints issued so far (on request and by the periodic task), newest first."""
    items, next_cursor = checkpoints.list_checkpoints(session=session, limit=limit, cursor=cursor)
    audit.resource_type = "audit_checkpoint"
    audit.detail = {"checkpoint_ids": [item["id"] for item in items]}
    return CheckpointPage.model_validate({"items": items, "next_cursor": next_cursor})


def ndjson_lines(
    runtime: Runtime, *, to_seq: int, since: datetime | None, until: datetime | None
) -> Iterator[bytes]:
    with runtime.sessions() as session:
        for document in service.iter_documents(session, to_seq=to_seq, since=since, until=until):
            yield json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@router.get(
    "/export",
    operation_id="exportAuditEvents",
    response_class=StreamingResponse,
    openapi_extra=endpoint("audit.export", Scope.AUDIT_READ),
    responses={
        200: {"content": {NDJSON: {}}, "description": "One event per line"},
        **error_responses(401, 403, 422, 429),
    },
)
def export(
    session: SessionDep,
    runtime: RuntimeDep,
    audit: AuditDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """Every event (optionally within a time range) up to the current head, as streamed NDJSON."""
    since, until = _time_range(since, until)
    to_seq, _ = service.head(session)
    audit.detail = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "to_seq": to_seq,
    }
    lines = ndjson_lines(runtime, to_seq=to_seq, since=since, until=until)
    return StreamingResponse(lines, media_type=NDJSON)
