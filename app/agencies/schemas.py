"""Request and response bodies for the agency roster."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.agencies.models import Role

AgencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
AgencyName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
# The constraints sit on the list itself, not on a `| None` around it (pydantic would apply them to None).
RoleList = Annotated[list[Role], Field(max_length=len(Role), json_schema_extra={"uniqueItems": True})]


def _unique_roles(roles: list[Role] | None) -> list[Role] | None:
    if roles is None:
        return None
    if len(set(roles)) != len(roles):
        raise ValueError("roles must not repeat")
    return sorted(roles)


class AgencyOut(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    code: str
    name: str
    active: bool
    roles: list[Role]


class AgencyList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[AgencyOut]


class AgencyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: AgencyCode
    name: AgencyName
    roles: RoleList = Field(default_factory=list)
    active: bool = True

    _roles = field_validator("roles")(_unique_roles)


class AgencyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Optional but never null: SkipJsonSchema keeps `null` out of the published schema, as the
    # validator below keeps it out of the service.
    name: AgencyName | SkipJsonSchema[None] = None
    active: bool | SkipJsonSchema[None] = None
    roles: RoleList | SkipJsonSchema[None] = None

    _roles = field_validator("roles")(_unique_roles)

    @model_validator(mode="after")
    def _no_nulls(self) -> AgencyUpdate:
        nulls = sorted(name for name in self.model_fields_set if getattr(self, name) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)} must not be null (leave a field out to keep it)")
        return self
