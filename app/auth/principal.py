"""Who is calling: scopes, the principal of a verified token, and its database check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.clock import utcnow
from app.tokens.models import ApiToken


class Scope(StrEnum):
    VIOLATIONS_READ = "violations:read"
    VIOLATIONS_WRITE = "violations:write"
    AUDIT_READ = "audit:read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    token_id: uuid.UUID
    agency: str
    agency_active: bool
    scopes: frozenset[str]
    roles: frozenset[str]
    last_used_at: datetime | None

    def has_role(self, role: str) -> bool:
        return role in self.roles


def load_principal(session: Session, token_id: uuid.UUID) -> Principal | None:
    """One round trip: the token row joined with its agency; None when unknown, revoked or expired."""
    # Core on the session's connection: this runs on every request, and the ORM layer cost more than
    # the query itself.
    row = session.connection().execute(
        select(
            ApiToken.id, ApiToken.agency_code, ApiToken.scopes, ApiToken.expires_at, ApiToken.revoked_at,
            ApiToken.last_used_at, Agency.active, Agency.roles,
        )
        .join(Agency, Agency.code == ApiToken.agency_code)
        .where(ApiToken.id == token_id)
    ).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return Principal(
        token_id=row.id,
        agency=row.agency_code,
        agency_active=row.active,
        scopes=frozenset(row.scopes),
        roles=frozenset(row.roles),
        last_used_at=row.last_used_at,
    )
