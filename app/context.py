"""What one request carries from the edge to the audit log: id, principal, session, audit draft."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from app.auth.principal import Principal


@dataclass
class AuditDraft:
    """The parts of an audit event that the route knows; the edge fills in the rest."""

    action: str = "request"
    resource_type: str | None = None
    resource_ids: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    # Callables (session, feed_seq) that write one change-feed row each, run under the chain lock.
    feed_entries: list[Any] = field(default_factory=list)

    def touch(self, resource_type: str, *ids: object) -> None:
        self.resource_type = resource_type
        for value in ids:
            text = str(value)
            if text not in self.resource_ids:
                self.resource_ids.append(text)


@dataclass
class RequestContext:
    request_id: str
    audited: bool
    runtime: Any = None  # app.runtime.Runtime, set by the edge
    audit: AuditDraft = field(default_factory=AuditDraft)
    principal: Principal | None = None
    auth_failed: bool = False
    body_too_large: bool = False
    purpose: str | None = None
    session: Session | None = None
    # PostgreSQL: the pooled DBAPI connection of this request's driver-level reads (app/rawdb.py).
    raw: Any = None
    write_tx: bool = False
    write_lock_held: bool = False
    # Work to do inside a successful write's transaction right before its audit event.
    on_commit: list[Any] = field(default_factory=list)

    def release_read_connection(self) -> None:
        """Hand the driver-level read connection back to its pool (PostgreSQL), e.g. before waiting."""
        if self.raw is not None:
            self.raw.close()
            self.raw = None


def generated_request_id() -> str:
    """32 random hex digits (what uuid4().hex looks like, without building a UUID per request)."""
    return os.urandom(16).hex()
