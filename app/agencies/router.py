"""/v1/agencies: the roster, readable by any valid token, changed by admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.agencies import service
from app.agencies.schemas import AgencyCreate, AgencyList, AgencyOut, AgencyUpdate
from app.auth.principal import Scope
from app.responses import error_responses
from app.routing import AuditDep, AuditedRoute, SessionDep, endpoint

router = APIRouter(prefix="/v1/agencies", tags=["agencies"], route_class=AuditedRoute)
AgencyCodePath = Annotated[str, Path(max_length=32, description="Agency code, e.g. BKN")]


@router.get(
    "",
    operation_id="listAgencies",
    response_model=AgencyList,
    openapi_extra=endpoint("agency.list", None),
    responses=error_responses(401, 403, 429),
)
def list_agencies(session: SessionDep, audit: AuditDep) -> AgencyList:
    """List every agency with its roles and whether it is active."""
    agencies = service.list_agencies(session=session)
    audit.touch("agency", *(a.code for a in agencies))
    return AgencyList(items=[AgencyOut.model_validate(a) for a in agencies])


@router.post(
    "",
    operation_id="createAgency",
    status_code=201,
    response_model=AgencyOut,
    openapi_extra=endpoint("agency.create", Scope.ADMIN),
    responses=error_responses(401, 403, 409, 413, 422, 429),
)
def create_agency(data: AgencyCreate, session: SessionDep, audit: AuditDep) -> AgencyOut:
    """Add an agency to the roster (admin)."""
    agency = service.create_agency(session=session, data=data)
    audit.touch("agency", agency.code)
    audit.detail = {"created": data.model_dump(mode="json")}
    return AgencyOut.model_validate(agency)


@router.patch(
    "/{code}",
    operation_id="updateAgency",
    response_model=AgencyOut,
    openapi_extra=endpoint("agency.update", Scope.ADMIN),
    responses=error_responses(401, 403, 404, 413, 422, 429),
)
def update_agency(
    code: AgencyCodePath, data: AgencyUpdate, session: SessionDep, audit: AuditDep
) -> AgencyOut:
    """Rename an agency, change its roles, or (de)activate it (admin). Records and history stay."""
    audit.touch("agency", code)
    agency, changes = service.update_agency(session=session, code=code, data=data)
    audit.detail = {"changes": changes}
    return AgencyOut.model_validate(agency)
