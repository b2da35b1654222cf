"""Reading and changing the roster. Services only flush; the request edge commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.agencies.schemas import AgencyCreate, AgencyUpdate
from app.errors import Conflict, NotFound


def list_agencies(*, session: Session) -> list[Agency]:
    return list(session.scalars(select(Agency).order_by(Agency.code)))


def get_agency(*, session: Session, code: str) -> Agency:
    agency = session.get(Agency, code)
    if agency is None:
        raise NotFound(f"no agency with code {code!r}")
    return agency


def create_agency(*, session: Session, data: AgencyCreate) -> Agency:
    if session.get(Agency, data.code) is not None:
        raise Conflict(f"agency {data.code} already exists")
    agency = Agency(code=data.code, name=data.name, active=data.active, roles=[str(r) for r in data.roles])
    session.add(agency)
    session.flush()
    return agency


def update_agency(*, session: Session, code: str, data: AgencyUpdate) -> tuple[Agency, dict[str, object]]:
    """Apply the given fields; returns the agency and the {field: {from, to}} that actually changed."""
    agency = get_agency(session=session, code=code)
    changes: dict[str, object] = {}
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        if name == "roles":
            value = [str(r) for r in value]
        if getattr(agency, name) != value:
            changes[name] = {"from": getattr(agency, name), "to": value}
            setattr(agency, name, value)
    session.flush()
    return agency, changes
