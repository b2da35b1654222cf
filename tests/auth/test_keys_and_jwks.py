"""The service key: ES256 and RS256 end to end, the published JWK Set, and key files never overwritten."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.auth.keys import KeyError_, generate_key_file, load_signing_key
from app.auth.principal import Scope
from app.cli import issue_token_offline
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.main import create_app
from app.tokens.schemas import TokenCreate
from tests.auth.forge import es256_verifies, parts, public_key_from_jwk, rfc7638_thumbprint, rs256_verifies
from tests.conftest import TokenFactory, audit_rows, bearer

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(scope="module")
def rs256_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rs256") / "signing-key.pem"
    assert generate_key_file(path, "RS256")
    return path


def issue_with(settings: Settings, agency: str, *scopes: Scope) -> str:
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            _, value = issue_token_offline(settings, session, TokenCreate(
                agency=agency, name="rs", scopes=list(scopes), expires_in_days=5))
    finally:
        engine.dispose()
    return value


def check_jwks(client: TestClient, token: str, kty: str) -> dict[str, str]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert len(keys) == 1
    jwk: dict[str, str] = keys[0]
    public = {"EC": {"crv", "x", "y"}, "RSA": {"n", "e"}}[kty]
    assert set(jwk) == {"kty", "kid", "alg", "use"} | public
    assert not PRIVATE_MEMBERS & set(jwk)
    assert jwk["kty"] == kty and jwk["use"] == "sig"
    assert jwk["alg"] == {"EC": "ES256", "RSA": "RS256"}[kty]
    header, _, _ = parts(token)
    assert header == {"alg": jwk["alg"], "typ": "at+jwt", "kid": jwk["kid"]}
    assert jwk["kid"] == rfc7638_thumbprint(jwk)
    # The published members alone verify what the service signs.
    key = public_key_from_jwk(jwk)
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert es256_verifies(key, token)
    else:
        assert isinstance(key, rsa.RSAPublicKey)
        assert rs256_verifies(key, token)
    return jwk


def test_es256_jwks_publishes_the_signing_key_and_is_not_audited(
    client: TestClient, issue_token: TokenFactory, db: Session
) -> None:
    token = issue_token("BKN", "violations:read")
    before = len(audit_rows(db))
    check_jwks(client, token, "EC")
    assert len(audit_rows(db)) == before


def test_rs256_service_key_works_end_to_end(
    make_settings: Callable[..., Settings], rs256_key_file: Path, issue_token: TokenFactory, db: Session
) -> None:
    settings = make_settings(signing_key_file=rs256_key_file)
    es256_token = issue_token("BKN", "admin")  # signed by the suite's ES256 key
    admin = issue_with(settings, "BKN", Scope.ADMIN)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        jwk = check_jwks(client, admin, "RSA")
        assert client.get("/v1/agencies", headers=bearer(admin)).status_code == 200
        body = {"agency": "KEMENDAGRI", "name": "rs reader", "scopes": ["violations:read"]}
        created = client.post("/v1/tokens", headers=bearer(admin), json=body)
        assert created.status_code == 201, created.text
        reader = created.json()["token"]
        assert parts(reader)[0]["alg"] == "RS256" and parts(reader)[0]["kid"] == jwk["kid"]
        assert client.get("/v1/agencies", headers=bearer(reader)).status_code == 200
        assert client.get("/v1/tokens", headers=bearer(reader)).status_code == 403
        # A token from another key is refused even though its id is live in the same database.
        refused = client.get("/v1/agencies", headers=bearer(es256_token))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert audit_rows(db)[-1].action == "auth.failed"


def test_generate_key_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "key.pem"
    assert generate_key_file(path, "ES256") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    original = path.read_bytes()
    assert generate_key_file(path, "ES256") is False
    assert generate_key_file(path, "RS256") is False
    assert path.read_bytes() == original
    assert load_signing_key(path).algorithm == "ES256"


def test_generate_key_file_loses_a_race_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process writes the key between our existence check and our create: keep theirs, say False."""
    path = tmp_path / "key.pem"
    theirs = b"written by the other process"
    real_exists = Path.exists

    def exists_then_race(self: Path, *args: object, **kwargs: object) -> bool:
        if self == path and not real_exists(self):
            self.write_bytes(theirs)
            return False
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists_then_race)
    assert generate_key_file(path, "ES256") is False
    assert path.read_bytes() == theirs


def test_rs256_key_loads_with_rsa_members(rs256_key_file: Path) -> None:
    key = load_signing_key(rs256_key_file)
    assert key.algorithm == "RS256"
    assert key.public_jwk["e"] == "AQAB"
    assert key.kid == rfc7638_thumbprint(key.public_jwk)


BROKEN_PEM = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("content", [b"", b"not a pem", BROKEN_PEM])
def test_unreadable_key_files_are_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyError_, match="not a readable PEM private key"):
        load_signing_key(path)


def test_missing_key_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(KeyError_, match="sbt keys generate"):
        load_signing_key(tmp_path / "absent.pem")


def test_unsupported_curve_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p384.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyError_, match="only EC P-256"):
        load_signing_key(path)
