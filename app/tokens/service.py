"""Issuing, listing and revoking access tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.agencies.models import Agency
from app.auth.jwt import TokenCodec
from app.clock import utcnow
from app.errors import NotFound, ValidationFailed
from app.pagination import decode_cursor, malformed_cursor, split_page
from app.tokens.models import ApiToken
from app.tokens.schemas import TokenCreate


def _field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, errors=[{"loc": ["body", field], "msg": message}])


def create_token(
    *, session: Session, codec: TokenCodec, data: TokenCreate, created_by: str, max_days: int
) -> tuple[ApiToken, str]:
    """Store the token's metadata and sign its value; the value is returned once and never stored."""
    agency = session.get(Agency, data.agency)
    if agency is None:
        raise _field_error("agency", f"unknown agency {data.agency!r}")
    if not agency.active:
        raise _field_error("agency", f"agency {data.agency} is inactive")
    if data.expires_in_days > max_days:
        raise _field_error("expires_in_days", f"at most {max_days} days (SBT_TOKEN_MAX_DAYS)")
    now = utcnow().replace(microsecond=0)
    row = ApiToken(
        id=uuid.uuid4(),
        agency_code=agency.code,
        name=data.name,
        scopes=[str(s) for s in data.scopes],
        created_at=now,
        expires_at=now + timedelta(days=data.expires_in_days),
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    value = codec.issue(
        {
            "sub": str(row.id),
            "jti": str(row.id),
            "agency": row.agency_code,
            "scope": " ".join(row.scopes),
            "iat": int(now.timestamp()),
            "exp": int(row.expires_at.timestamp()),
        }
    )
    return row, value


def get_token(*, session: Session, token_id: uuid.UUID) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id}")
    return row


def _cursor_key(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, id) a cursor carries. A cursor is client input: anything but an aware instant and a
    UUID string is 422, never an error further down (naive or out-of-range instants fail at bind time)."""
    created_raw, id_raw = decode_cursor(cursor, 2)
    if not isinstance(created_raw, str) or not isinstance(id_raw, str):
        raise malformed_cursor()
    try:
        created_at, last_id = datetime.fromisoformat(created_raw), uuid.UUID(id_raw)
        if created_at.tzinfo is None:
            raise ValueError("naive instant")
        return created_at.astimezone(UTC), last_id
    except (ValueError, OverflowError):
        raise malformed_cursor() from None


def list_tokens(
    *, session: Session, agency: str | None, active: bool | None, limit: int, cursor: str | None
) -> tuple[list[ApiToken], str | None]:
    """Newest first, keyset on (created_at, id)."""
    stmt = select(ApiToken)
    if agency is not None:
        stmt = stmt.where(ApiToken.agency_code == agency)
    now = utcnow()
    if active is True:
        stmt = stmt.where(ApiToken.revoked_at.is_(None), ApiToken.expires_at > now)
    elif active is False:
        stmt = stmt.where(or_(ApiToken.revoked_at.is_not(None), ApiToken.expires_at <= now))
    if cursor is not None:
        created_at, last_id = _cursor_key(cursor)
        stmt = stmt.where(
            or_(ApiToken.created_at < created_at,
                and_(ApiToken.created_at == created_at, ApiToken.id < last_id))
        )
    stmt = stmt.order_by(ApiToken.created_at.desc(), ApiToken.id.desc()).limit(limit + 1)
    return split_page(list(session.scalars(stmt)), limit, lambda r: (r.created_at.isoformat(), str(r.id)))


def revoke_token(*, session: Session, token_id: uuid.UUID) -> tuple[ApiToken, bool]:
    """Revoke once; revoking again changes nothing. Returns the row and whether it changed."""
    row = get_token(session=session, token_id=token_id)
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = utcnow()
    session.flush()
    return row, True
