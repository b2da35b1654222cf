"""Response bodies for the auditor's endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Actor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    token_id: str | None
    agency: str | None


class AuditEventOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    id: str
    occurred_at: str
    request_id: str
    actor: Actor
    action: str
    outcome: str
    status_code: int | None
    method: str | None
    path: str | None
    query: str | None
    resource_type: str | None
    resource_ids: list[str]
    client_ip: str | None
    user_agent: str | None
    purpose: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditEventPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[AuditEventOut]
    next_cursor: str | None


class ChainHeadOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    hash: str


class VerifyOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    checked: int
    head: ChainHeadOut
    first_invalid_seq: int | None
