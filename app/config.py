"""Service settings: one class, read from `SBT_*` environment variables, strict about typos."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "SBT_"
# Read by the test suite only; tolerated so that one shell can run the service and the tests.
_TOLERATED_UNKNOWN = {"SBT_TEST_DATABASE_URL"}


class SettingsError(RuntimeError):
    """Configuration that must stop start-up, with a message meant for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str = "sqlite:///var/sbt.db"
    data_dir: Path = Path("var")
    signing_key_file: Path | None = None
    jwt_issuer: str = "sbt"
    jwt_audience: str = "sbt-api"
    env: Literal["development", "test", "production"] = "development"
    token_max_days: int = Field(default=365, ge=1, le=3650)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    follow_up_days: int = Field(default=14, ge=1, le=365)
    rate_limit: str = "1200/minute"
    rate_limit_storage: str = "memory://"
    auth_failure_limit: str = "300/minute"
    checkpoint_interval_seconds: int = Field(default=300, ge=0)
    # FULL keeps an acknowledged audit event on disk through a power loss; NORMAL trades that for speed.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    cors_origins: list[str] = Field(default_factory=list)
    # PostgreSQL connections kept per process (each pool may open 10 more at a peak): transactions and the
    # audit writer; driver-level reads (token checks, record reads), as many as worker threads by default.
    db_pool_size: int = Field(default=20, ge=1, le=500)
    db_read_pool_size: int = Field(default=40, ge=1, le=500)
    # How long a statement waits for a lock held by another transaction (another instance's write, an
    # operator's open session, a migration) before the request gets 503 (PostgreSQL lock_timeout, SQLite
    # busy timeout); also how long a write waits for this process's earlier writes.
    db_lock_timeout_seconds: float = Field(default=30.0, ge=0.1, le=3600)

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as 1200/minute") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql+psycopg://")
        return value

    @model_validator(mode="after")
    def _production_needs_explicit_key(self) -> Settings:
        if self.env == "production":
            if self.signing_key_file is None:
                raise ValueError("SBT_ENV=production requires SBT_SIGNING_KEY_FILE to be set explicitly")
            if not self.signing_key_file.is_file():
                raise ValueError(f"SBT_SIGNING_KEY_FILE {self.signing_key_file} does not exist")
        return self

    @property
    def key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "signing-key.pem"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def unknown_variables(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    # pydantic-settings matches names case-insensitively, so a lower-case typo must be caught too.
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | _TOLERATED_UNKNOWN
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; unknown `SBT_*` names and bad values raise SettingsError."""
    unknown = unknown_variables(os.environ)
    if unknown:
        raise SettingsError(f"unknown configuration variable(s): {', '.join(unknown)} (check the spelling)")
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
            problems.append(f"{name}: {error['msg']}" if error["loc"] else str(error["msg"]))
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


@cache
def get_settings() -> Settings:
    return load_settings()
