"""`sbt tokens …`, `sbt keys generate` and `sbt bootstrap`: offline, audited, and script-friendly output."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.keys import load_signing_key
from app.cli import main
from app.config import get_settings
from app.tokens.models import ApiToken
from tests.auth.forge import parts
from tests.conftest import audit_rows, bearer, lock_held_elsewhere

CREATE = ["tokens", "create", "--agency", "KEMENDAGRI", "--name", "nightly sync",
          "--scope", "violations:read", "--scope", "audit:read"]


@pytest.fixture
def cli_env(db_url: str, key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The environment an operator's shell would have; no server runs and no token exists yet."""
    for name in list(os.environ):
        if name.startswith("SBT_") and name != "SBT_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("SBT_DATABASE_URL", db_url)
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("SBT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def token_rows(db: Session) -> list[ApiToken]:
    db.rollback()
    return list(db.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_create_prints_only_the_token_and_works_offline(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session, client: TestClient
) -> None:
    assert token_rows(db) == [], "the bootstrap case: no token exists"
    code, out, err = run(capsys, *CREATE, "--expires-in-days", "7")
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1
    value = out.strip()
    header, claims, _ = parts(value)
    assert header["typ"] == "at+jwt"
    [row] = token_rows(db)
    assert claims["jti"] == str(row.id)
    assert (row.agency_code, row.name, row.scopes, row.created_by) == (
        "KEMENDAGRI", "nightly sync", ["audit:read", "violations:read"], "cli")
    assert (row.expires_at - row.created_at).days == 7
    assert str(row.id) in err and value not in err, "metadata goes to stderr, the secret only to stdout"

    assert client.get("/v1/agencies", headers=bearer(value)).status_code == 200
    assert client.get("/v1/audit/verify", headers=bearer(value)).status_code == 200

    [event] = [e for e in audit_rows(db) if e.actor_kind == "cli"]
    assert (event.action, event.outcome, event.actor_token_id, event.actor_agency) == (
        "token.create", "success", None, None)
    assert (event.method, event.path, event.query, event.status_code, event.client_ip, event.user_agent) == (
        None, None, None, None, None, None)
    assert event.resource_type == "token" and event.resource_ids == [str(row.id)]
    assert value.rsplit(".", 1)[1] not in str(event.detail)


@pytest.mark.parametrize(("argv", "message"), [
    (["--agency", "NOPE", "--scope", "admin"], "unknown agency"),
    (["--agency", "BKN", "--scope", "admin", "--expires-in-days", "366"], "at most 365"),
    (["--agency", "BKN", "--scope", "admin", "--expires-in-days", "0"],
     "error: --expires-in-days: Input should be greater than or equal to 1\n"),
    (["--agency", "BKN", "--scope", "admin", "--scope", "admin"], "repeat"),
    (["--agency", "BKN", "--scope", "admin", "--name", ""],
     "error: --name: String should have at least 1 character\n"),
])
def test_tokens_create_refuses_bad_input_with_nothing_on_stdout(
    argv: list[str], message: str, cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session
) -> None:
    code, out, err = run(capsys, "tokens", "create", "--name", "x", *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert token_rows(db) == []
    assert audit_rows(db) == []


def test_tokens_create_after_the_agency_is_deactivated(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session, client: TestClient
) -> None:
    code, out, _ = run(capsys, "tokens", "create", "--agency", "BKN", "--name", "a", "--scope", "admin")
    assert code == 0
    admin = out.strip()
    assert client.patch("/v1/agencies/KASN", json={"active": False}, headers=bearer(admin)).status_code == 200
    code, out, err = run(capsys, "tokens", "create", "--agency", "KASN", "--name", "k", "--scope", "admin")
    assert (code, out) == (2, "")
    assert "inactive" in err


def test_tokens_list_and_revoke(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session, client: TestClient
) -> None:
    _, kemendagri, _ = run(capsys, *CREATE)
    _, bkn, _ = run(capsys, "tokens", "create", "--agency", "BKN", "--name", "admin", "--scope", "admin")
    kemendagri_id, bkn_id = (parts(t.strip())[1]["jti"] for t in (kemendagri, bkn))

    code, out, _ = run(capsys, "tokens", "list")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert set(lines) == {kemendagri_id, bkn_id}
    assert "KEMENDAGRI" in lines[kemendagri_id] and "active" in lines[kemendagri_id]
    assert "BKN" in lines[bkn_id] and "admin" in lines[bkn_id]
    assert kemendagri.strip() not in out and bkn.strip() not in out

    code, out, _ = run(capsys, "tokens", "list", "--agency", "BKN")
    assert code == 0 and out.count("\n") == 1 and bkn_id in out
    assert run(capsys, "tokens", "list", "--agency", "BNK") == (2, "", "error: unknown agency 'BNK'\n")

    before = len(audit_rows(db))
    code, out, err = run(capsys, "tokens", "revoke", kemendagri_id)
    assert code == 0 and "revoked" in err
    assert client.get("/v1/agencies", headers=bearer(kemendagri.strip())).status_code == 401
    assert client.get("/v1/agencies", headers=bearer(bkn.strip())).status_code == 200
    _, out, _ = run(capsys, "tokens", "list", "--agency", "KEMENDAGRI")
    assert "revoked" in out

    code, _, err = run(capsys, "tokens", "revoke", kemendagri_id)
    assert code == 0 and "already" in err
    revocations = [e for e in audit_rows(db)[before:] if e.actor_kind == "cli"]
    assert [(e.action, e.resource_ids, e.detail, e.method, e.status_code) for e in revocations] == [
        ("token.revoke", [kemendagri_id], {"already_revoked": False}, None, None),
        ("token.revoke", [kemendagri_id], {"already_revoked": True}, None, None),
    ]

    code, _, err = run(capsys, "tokens", "revoke", str(uuid.uuid4()))
    assert code == 2 and "no token" in err
    code, _, err = run(capsys, "tokens", "revoke", "not-a-uuid")
    assert code == 2 and "not a token id" in err
    assert len([e for e in audit_rows(db)[before:] if e.actor_kind == "cli"]) == 2


def test_keys_generate_never_overwrites(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cli_env / "keys" / "service.pem"
    monkeypatch.setenv("SBT_SIGNING_KEY_FILE", str(path))
    get_settings.cache_clear()
    code, out, err = run(capsys, "keys", "generate")
    assert code == 0 and out == ""
    written = path.read_bytes()
    kid = load_signing_key(path).kid
    assert "wrote" in err and kid in err
    code, out, err = run(capsys, "keys", "generate", "--algorithm", "RS256")
    assert code == 0 and out == ""
    assert "left unchanged" in err
    assert path.read_bytes() == written
    assert load_signing_key(path).algorithm == "ES256"


def test_keys_generate_defaults_to_the_data_dir(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SBT_SIGNING_KEY_FILE")
    get_settings.cache_clear()
    code, _, _ = run(capsys, "keys", "generate", "--algorithm", "RS256")
    assert code == 0
    assert load_signing_key(cli_env / "data" / "signing-key.pem").algorithm == "RS256"


def test_bootstrap_prints_a_token_only_the_first_time(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session, client: TestClient
) -> None:
    code, out, err = run(capsys, "bootstrap")
    assert code == 0
    admin = out.strip()
    assert out.count("\n") == 1 and admin.count(".") == 2
    assert client.get("/v1/tokens", headers=bearer(admin)).status_code == 200
    [row] = token_rows(db)
    assert (row.agency_code, row.scopes, row.created_by) == ("BKN", ["admin"], "cli")

    code, out, err = run(capsys, "bootstrap")
    assert code == 0
    assert out == ""
    assert "tokens exist already" in err
    assert len(token_rows(db)) == 1
    assert [e.action for e in audit_rows(db) if e.actor_kind == "cli"] == ["token.create"]


def test_the_installed_command_works_in_command_substitution(
    db_url: str, key_file: Path, tmp_path: Path, db: Session, client: TestClient
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SBT_")}
    sbt = Path(sys.executable).with_name("sbt")
    assert sbt.is_file(), f"the console script is not installed at {sbt}"
    env |= {"PATH": f"{sbt.parent}{os.pathsep}{env.get('PATH', '')}", "SBT_DATABASE_URL": db_url,
            "SBT_SIGNING_KEY_FILE": str(key_file), "SBT_DATA_DIR": str(tmp_path / "data")}
    script = ('T=$(sbt tokens create --agency BAWASLU --name "shell made" --scope violations:read) '
              '&& printf "%s" "$T"')
    # A fixed script run by a fixed shell; only the environment varies.
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    token = done.stdout
    assert token.count(".") == 2 and " " not in token
    assert "BAWASLU" in done.stderr
    response = client.get("/v1/agencies", headers=bearer(token))
    assert response.status_code == 200
    assert db.scalar(select(func.count()).select_from(ApiToken)) == 1


def test_a_held_lock_or_a_database_that_is_down_ends_a_command_with_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], db: Session, db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SBT_DB_LOCK_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    with lock_held_elsewhere(db_url, "chain_head"):  # every audited command appends to the chain
        code, out, err = run(capsys, *CREATE)
    assert (code, out) == (2, "")
    assert err.strip() == ("error: a lock this command needs was held by another transaction for more than "
                           "0.5 s (SBT_DB_LOCK_TIMEOUT_SECONDS); nothing was changed")
    db.rollback()
    assert db.scalar(select(func.count()).select_from(ApiToken)) == 0
    assert run(capsys, *CREATE)[0] == 0  # released: the same command works

    if db_url.startswith("sqlite"):
        monkeypatch.setenv("SBT_DATABASE_URL", f"sqlite:///{cli_env}")  # a folder: SQLite cannot open it
    else:
        monkeypatch.setenv("SBT_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/sbt")
    get_settings.cache_clear()
    code, out, err = run(capsys, "tokens", "list")
    assert (code, out) == (2, "")
    assert err.startswith("error: the database is unavailable: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
