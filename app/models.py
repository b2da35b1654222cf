"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from app.agencies.models import Agency
from app.audit.models import AuditCheckpoint, AuditEvent, AuditEventResource, ChainHead
from app.db import Base
from app.tokens.models import ApiToken
from app.violations.models import CaseCounter, Change, IdempotencyKey, Violation, ViolationVersion  # noqa: F401

__all__ = ["Agency", "ApiToken", "AuditCheckpoint", "AuditEvent", "AuditEventResource", "Base", "ChainHead"]
