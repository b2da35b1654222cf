"""/v1/tokens: admins issue, list, inspect and revoke access tokens."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth.principal import Scope
from app.responses import error_responses
from app.routing import (
    AuditDep,
    AuditedRoute,
    Cursor,
    Limit,
    PrincipalDep,
    RuntimeDep,
    SessionDep,
    endpoint,
)
from app.tokens import service
from app.tokens.models import ApiToken
from app.tokens.schemas import TokenCreate, TokenCreated, TokenOut, TokenPage

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], route_class=AuditedRoute)


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut(
        id=row.id, agency=row.agency_code, name=row.name, scopes=row.scopes,
        created_at=row.created_at, expires_at=row.expires_at, created_by=row.created_by,
        last_used_at=row.last_used_at, revoked_at=row.revoked_at,
    )


@router.post("", operation_id="createToken", status_code=201, response_model=TokenCreated,
             openapi_extra=endpoint("token.create", Scope.ADMIN),
             responses=error_responses(401, 403, 413, 422, 429))
def create_token(
    data: TokenCreate, session: SessionDep, principal: PrincipalDep, runtime: RuntimeDep, audit: AuditDep
) -> TokenCreated:
    """Issue a token bound to one agency. The value is shown in this response only."""
    row, value = service.create_token(
        session=session, codec=runtime.codec, data=data, created_by=str(principal.token_id),
        max_days=runtime.settings.token_max_days,
    )
    audit.touch("token", row.id)
    audit.detail = {"agency": row.agency_code, "scopes": row.scopes, "expires_at": row.expires_at.isoformat()}
    return TokenCreated(
        id=row.id, token=value, agency=row.agency_code, name=row.name, scopes=row.scopes,
        created_at=row.created_at, expires_at=row.expires_at, created_by=row.created_by,
    )


@router.get("", operation_id="listTokens", response_model=TokenPage,
            openapi_extra=endpoint("token.list", Scope.ADMIN), responses=error_responses(401, 403, 422, 429))
def list_tokens(
    session: SessionDep,
    audit: AuditDep,
    agency: Annotated[str | None, Query(max_length=32)] = None,
    active: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TokenPage:
    """List tokens (never their values), newest first."""
    rows, next_cursor = service.list_tokens(session=session, agency=agency, active=active, limit=limit,
                                            cursor=cursor)
    audit.touch("token", *(r.id for r in rows))
    return TokenPage(items=[token_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{token_id}", operation_id="getToken", response_model=TokenOut,
            openapi_extra=endpoint("token.read", Scope.ADMIN),
            responses=error_responses(401, 403, 404, 422, 429))
def get_token(token_id: uuid.UUID, session: SessionDep, audit: AuditDep) -> TokenOut:
    """One token's metadata."""
    audit.touch("token", token_id)
    return token_out(service.get_token(session=session, token_id=token_id))


@router.delete("/{token_id}", operation_id="revokeToken", status_code=204, response_class=Response,
               openapi_extra=endpoint("token.revoke", Scope.ADMIN),
               responses=error_responses(401, 403, 404, 422, 429))
def revoke_token(token_id: uuid.UUID, session: SessionDep, audit: AuditDep) -> Response:
    """Revoke a token; it is refused from the very next request. Revoking again is harmless."""
    audit.touch("token", token_id)
    _, changed = service.revoke_token(session=session, token_id=token_id)
    audit.detail = {"already_revoked": not changed}
    return Response(status_code=204)
