"""Every table, imported in one place so Alembic and the tests see the whole schema."""

from app.agencies.models import Agency
from app.audit.models import AuditEvent, AuditEventResource, ChainHead
from app.db import Base
from app.tokens.models import ApiToken

__all__ = ["Agency", "ApiToken", "AuditEvent", "AuditEventResource", "Base", "ChainHead"]
