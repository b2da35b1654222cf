"""Agencies are rows, not code: the roster changes (KASN dissolved in 2024, a new body is due)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.db import Base, JSONText, UTCDateTime


class Role(StrEnum):
    REPORTER = "reporter"
    VERIFIER = "verifier"
    FOLLOW_UP = "follow_up"
    ENFORCER = "enforcer"
    MONITOR = "monitor"


class Agency(Base):
    __tablename__ = "agencies"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    roles: Mapped[list[str]] = mapped_column(JSONText, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
