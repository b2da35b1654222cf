"""Who is calling: scopes, the principal of a verified token, and its database check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from app.clock import utcnow
from app.rawdb import Driver


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


_PRINCIPAL_SQL = (
    "SELECT t.agency_code, t.scopes, t.expires_at, t.revoked_at, t.last_used_at, a.active, a.roles"
    " FROM api_tokens t JOIN agencies a ON a.code = t.agency_code WHERE t.id = ?"
)


def lookup_principal(connection: Any, driver: Driver, token_id: uuid.UUID) -> Principal | None:
    """One round trip on a DBAPI connection: the token row joined with its agency; None when unknown,
    revoked or expired. It runs on every request, so it is driver-level SQL (app/rawdb.py)."""
    row = driver.one(connection, driver.sql(_PRINCIPAL_SQL), (driver.key(token_id),))
    if row is None:
        return None
    agency, scopes, expires_at, revoked_at, last_used_at, active, roles = row
    expires = driver.instant(expires_at)
    if revoked_at is not None or expires is None or expires <= utcnow():
        return None
    return Principal(
        token_id=token_id,
        agency=agency,
        agency_active=bool(active),
        scopes=frozenset(driver.json(scopes)),
        roles=frozenset(driver.json(roles)),
        last_used_at=driver.instant(last_used_at),
    )
