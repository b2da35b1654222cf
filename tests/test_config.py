"""Start-up configuration: typos and bad values stop the service with a message naming the problem."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.auth.keys import generate_key_file
from app.cli import main
from app.config import SettingsError, get_settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No SBT_* variable from the developer's shell leaks in; settings are read afresh."""
    for name in list(os.environ):
        if name.startswith("SBT_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def cli_refuses(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    """The CLI exits 2 before doing anything, with a message holding every fragment."""
    capsys.readouterr()
    assert main(["tokens", "list"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    for fragment in fragments:
        assert fragment in err, err


def test_defaults_match_the_spec() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/sbt.db"
    assert settings.data_dir == Path("var")
    assert settings.key_file == Path("var") / "signing-key.pem"
    assert (settings.jwt_issuer, settings.jwt_audience, settings.env) == ("sbt", "sbt-api", "development")
    assert (settings.token_max_days, settings.max_body_bytes, settings.follow_up_days) == (365, 1_048_576, 14)
    assert (settings.rate_limit, settings.rate_limit_storage) == ("1200/minute", "memory://")
    assert settings.auth_failure_limit == "300/minute"


def test_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SBT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SBT_TOKEN_MAX_DAYS", "30")
    monkeypatch.setenv("SBT_JWT_AUDIENCE", "sbt-staging")
    settings = load_settings()
    assert settings.key_file == tmp_path / "signing-key.pem"
    assert (settings.token_max_days, settings.jwt_audience) == (30, "sbt-staging")


@pytest.mark.parametrize("name", ["SBT_DATABSE_URL", "SBT_TOKEN_MAX_DAY", "SBT_SIGNING_KEY", "SBT_"])
def test_an_unknown_variable_stops_start_up_naming_it(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert name in str(raised.value)
    cli_refuses(capsys, "error:", name)


def test_several_unknown_variables_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBT_RATELIMIT", "1/second")
    monkeypatch.setenv("SBT_ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="SBT_ENVIRONMENT, SBT_RATELIMIT"):
        load_settings()


def test_the_test_suite_variable_is_tolerated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBT_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    assert load_settings().database_url == "sqlite:///var/sbt.db"


def test_production_refuses_without_an_explicit_key_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SBT_ENV", "production")
    # A generated key in the data directory is not enough: production must name its key.
    monkeypatch.setenv("SBT_DATA_DIR", str(tmp_path))
    generate_key_file(tmp_path / "signing-key.pem")
    with pytest.raises(SettingsError, match="SBT_SIGNING_KEY_FILE"):
        load_settings()
    cli_refuses(capsys, "SBT_SIGNING_KEY_FILE")


def test_production_refuses_a_key_file_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "key.pem"
    monkeypatch.setenv("SBT_ENV", "production")
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(missing))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(missing) in str(raised.value)
    cli_refuses(capsys, str(missing))


def test_production_starts_with_an_existing_key_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    generate_key_file(key)
    monkeypatch.setenv("SBT_ENV", "production")
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(key))
    settings = load_settings()
    assert (settings.env, settings.key_file) == ("production", key)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("SBT_MAX_BODY_BYTES", "abc", "max_body_bytes"),
        ("SBT_MAX_BODY_BYTES", "-1", "max_body_bytes"),
        ("SBT_TOKEN_MAX_DAYS", "0", "token_max_days"),
        ("SBT_TOKEN_MAX_DAYS", "a year", "token_max_days"),
        ("SBT_FOLLOW_UP_DAYS", "1.5", "follow_up_days"),
        ("SBT_ENV", "staging", "env"),
    ("SBT_RATE_LIMIT", "lots", "rate_limit"),
    ("SBT_AUTH_FAILURE_LIMIT", "300/fortnight", "auth_failure_limit"),
        ("SBT_DATABASE_URL", "mysql://root@localhost/sbt", "database_url"),
    ],
)
def test_a_bad_value_is_a_clear_error(
    name: str, value: str, field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith("invalid configuration")
    assert name in message  # the operator's variable name, not the Python field `{field}`
    assert "Traceback" not in message
    cli_refuses(capsys, "invalid configuration", name)


def test_a_lower_case_typo_is_caught_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # pydantic-settings reads names case-insensitively, so `sbt_…` would otherwise slip through.
    monkeypatch.setenv("sbt_max_body_byte", "5")
    with pytest.raises(SettingsError, match="sbt_max_body_byte"):
        load_settings()
    cli_refuses(capsys, "sbt_max_body_byte")
