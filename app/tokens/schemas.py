"""Request and response bodies for access tokens."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.auth.principal import Scope

TokenName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    name: TokenName
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope), json_schema_extra={"uniqueItems": True})
    # JSON `true` or "30" is refused for every body by app/inputs.py (strict validation); `30.0` is an
    # integer to JSON Schema and so is accepted, which StrictInt here would not.
    expires_in_days: int = Field(default=90, ge=1)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[Scope]) -> list[Scope]:
        if len(set(scopes)) != len(scopes):
            raise ValueError("scopes must not repeat")
        return sorted(scopes)


class TokenOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    agency: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    token: str
    agency: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime
    created_by: str


class TokenPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[TokenOut]
    next_cursor: str | None
