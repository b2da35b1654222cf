"""Forged, altered, stale and malformed bearer tokens: each is a 401 `invalid_token` and one audit event.

Every forgery starts from a live token the service issued, so a check that went missing would let the
request through (the base token is shown to work first); most are re-signed with the service's own key so
that only the property under test is wrong.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.auth.jwt import MAX_TOKEN_BYTES, TokenCodec
from app.auth.keys import load_signing_key
from app.clock import utcnow
from app.config import Settings
from app.tokens.models import ApiToken
from tests.auth.forge import PrivateKey, b64url, load_private_key, parts, segment, sign
from tests.conftest import TokenFactory, audit_rows, bearer

PROBE = "/v1/agencies"  # any valid token may read it, so only authentication can refuse
INVALID = 'Bearer error="invalid_token"'


@dataclass
class Victim:
    """A live token and everything an attacker (or a test with the service key) can work from."""

    token: str
    header: dict[str, Any]
    claims: dict[str, Any]
    signature: str
    service_key: PrivateKey
    public_jwk: dict[str, str]
    public_pem: bytes

    def resigned(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """The victim's claims with changes (a value of None drops the claim), signed with the service key."""
        body = {**self.claims, **claims}
        return sign(header or self.header, {k: v for k, v in body.items() if v is not None}, self.service_key)

    def with_header(self, **changes: Any) -> str:
        return self.resigned({**self.header, **changes})


@pytest.fixture
def victim(issue_token: TokenFactory, settings: Settings, client: TestClient) -> Victim:
    token = issue_token("BKN", "violations:read")
    assert client.get(PROBE, headers=bearer(token)).status_code == 200, "the unaltered token must work"
    header, claims, signature = parts(token)
    key = load_signing_key(settings.key_file)
    return Victim(token, header, claims, signature, load_private_key(settings.key_file), key.public_jwk,
                  key.public_pem)


def _alg_none(alg: str, signature: str) -> Callable[[Victim], str]:
    def build(v: Victim) -> str:
        unsigned = f"{segment({**v.header, 'alg': alg})}.{segment(v.claims)}"
        if signature == "absent":
            return unsigned
        return f"{unsigned}.{v.signature if signature == 'original' else ''}"

    return build


def _hs256(secret: Callable[[Victim], bytes]) -> Callable[[Victim], str]:
    return lambda v: sign({**v.header, "alg": "HS256"}, v.claims, secret(v))


def _tampered(**changes: Any) -> Callable[[Victim], str]:
    """Claims changed, the service's original signature kept."""
    return lambda v: f"{segment(v.header)}.{segment({**v.claims, **changes})}.{v.signature}"


def _attacker_ec() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _embedded_attacker_jwk(v: Victim) -> str:
    attacker = _attacker_ec()
    numbers = attacker.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
           "y": b64url(numbers.y.to_bytes(32, "big"))}
    return sign({**v.header, "jwk": jwk}, v.claims, attacker)


def _rs256_with_service_kid(v: Victim) -> str:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return sign({**v.header, "alg": "RS256"}, v.claims, attacker)


def _oversized(v: Victim) -> str:
    token = v.resigned(padding="x" * MAX_TOKEN_BYTES)
    assert len(token) > MAX_TOKEN_BYTES
    return token


def _unknown_id(v: Victim, settings: Settings) -> str:
    """Validly signed by the service (through its own codec), but no such token was ever issued."""
    codec = TokenCodec(load_signing_key(settings.key_file), issuer=settings.jwt_issuer,
                       audience=settings.jwt_audience)
    ghost = str(uuid.uuid4())
    now = int(time.time())
    return codec.issue({"sub": ghost, "jti": ghost, "agency": "BKN", "scope": "admin", "iat": now,
                        "exp": now + 3600})


def _checkpoint_statement(v: Victim, settings: Settings) -> str:
    """A JWS the service really signs (an audit checkpoint) presented as an access token."""
    codec = TokenCodec(load_signing_key(settings.key_file), issuer=settings.jwt_issuer,
                       audience=settings.jwt_audience)
    # Every claim of a live token is present, so only the header's `typ` tells the two apart.
    statement = {**v.claims, "seq": 1, "hash": "0" * 64, "issued_at": "2026-01-01T00:00:00Z"}
    return codec.sign_statement(statement, typ="sbt-checkpoint+jws")


NOW = int(time.time())

# name -> builder(victim) -> the bearer token sent
ATTACKS: dict[str, Callable[[Victim], str]] = {
    **{f"alg-{alg}-{sig}": _alg_none(alg, sig)
       for alg in ("none", "None", "NONE", "nOnE") for sig in ("empty-signature", "absent", "original")},
    "hs256-secret-is-public-pem": _hs256(lambda v: v.public_pem),
    "hs256-secret-is-public-jwk-json": _hs256(lambda v: json.dumps(v.public_jwk).encode()),
    "hs256-secret-is-compact-jwk-json": _hs256(
        lambda v: json.dumps(v.public_jwk, separators=(",", ":"), sort_keys=True).encode()),
    "tampered-agency": _tampered(agency="BAWASLU"),
    "tampered-scope-widened": _tampered(scope="violations:read violations:write audit:read admin"),
    "tampered-exp-extended": _tampered(exp=NOW + 10 * 365 * 86400),
    "expired": lambda v: v.resigned(iat=NOW - 7200, exp=NOW - 60),
    "wrong-aud": lambda v: v.resigned(aud="someone-else"),
    "wrong-iss": lambda v: v.resigned(iss="https://evil.example"),
    "missing-aud": lambda v: v.resigned(aud=None),
    "missing-iss": lambda v: v.resigned(iss=None),
    "missing-exp": lambda v: v.resigned(exp=None),
    "missing-jti": lambda v: v.resigned(jti=None),
    # Claims of the wrong JSON type, signed by the service key: refused, never a server error.
    "exp-is-null": lambda v: sign(v.header, {**v.claims, "exp": None}, v.service_key),
    "exp-is-text": lambda v: v.resigned(exp="tomorrow"),
    "jti-is-a-number": lambda v: v.resigned(jti=7, sub=7),
    "jti-is-not-a-uuid": lambda v: v.resigned(jti="token-7", sub="token-7"),
    "scope-is-a-list": lambda v: v.resigned(scope=["violations:read"]),
    "aud-is-a-number": lambda v: v.resigned(aud=5),
    "sub-differs-from-jti": lambda v: v.resigned(sub=str(uuid.uuid4())),
    "unknown-kid": lambda v: v.with_header(kid="attacker-key-1"),
    "missing-kid": lambda v: v.resigned({k: x for k, x in v.header.items() if k != "kid"}),
    "typ-is-plain-jwt": lambda v: v.with_header(typ="JWT"),
    "jku-header": lambda v: v.with_header(jku="https://evil.example/jwks.json"),
    "x5u-header": lambda v: v.with_header(x5u="https://evil.example/cert.pem"),
    "jwk-header-service-key": lambda v: v.with_header(jwk=v.public_jwk),
    "jwk-header-attacker-key": _embedded_attacker_jwk,
    "signed-by-attacker-ec-key": lambda v: sign(v.header, v.claims, _attacker_ec()),
    "rs256-while-service-is-es256": _rs256_with_service_kid,
    "over-8-kib": _oversized,
    "garbage-word": lambda v: "garbage",
    "garbage-three-dots": lambda v: "a.b.c",
    "garbage-dots-only": lambda v: "...",
    "garbage-empty-json": lambda v: "e30.e30.e30",
    "garbage-header-only": lambda v: segment(v.header),
    "garbage-truncated": lambda v: v.token[:-12],
    "garbage-extra-segment": lambda v: v.token + ".e30",
    "garbage-non-json-claims": lambda v: f"{segment(v.header)}.{b64url(b'not json')}.{v.signature}",
}
NEEDS_SETTINGS: dict[str, Callable[[Victim, Settings], str]] = {
    "validly-signed-unknown-id": _unknown_id,
    "checkpoint-statement-as-token": _checkpoint_statement,
}


def assert_denied(client: TestClient, db: Session, headers: dict[str, str] | list[tuple[str, str]],
                  challenge: str = INVALID) -> None:
    """401 invalid_token with the given challenge, and exactly one new `auth.failed` event, anonymous."""
    before = len(audit_rows(db))
    response = client.get(PROBE, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == challenge
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_token"
    assert problem["request_id"] == response.headers["x-request-id"]
    events = audit_rows(db)[before:]
    assert len(events) == 1, [(e.action, e.status_code) for e in events]
    event = events[0]
    assert (event.action, event.outcome, event.status_code) == ("auth.failed", "denied", 401)
    assert (event.actor_kind, event.actor_token_id, event.actor_agency) == ("anonymous", None, None)
    assert event.request_id == response.headers["x-request-id"]
    assert event.path == PROBE


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_forged_token_is_refused(attack: str, victim: Victim, client: TestClient, db: Session) -> None:
    assert_denied(client, db, bearer(ATTACKS[attack](victim)))


@pytest.mark.parametrize("attack", list(NEEDS_SETTINGS))
def test_token_signed_by_the_service_but_not_an_issued_token_is_refused(
    attack: str, victim: Victim, settings: Settings, client: TestClient, db: Session
) -> None:
    assert_denied(client, db, bearer(NEEDS_SETTINGS[attack](victim, settings)))


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNzd29yZA==", "Token {token}", "Bearer", "Bearer ",
                                   "{token}", "Bearer {token} extra", "Digest username=x"])
def test_malformed_authorization_header_is_refused(value: str, victim: Victim, client: TestClient,
                                                   db: Session) -> None:
    assert_denied(client, db, {"Authorization": value.format(token=victim.token)})


@pytest.mark.parametrize("second", ["{token}", "garbage"])
def test_two_authorization_headers_are_refused(second: str, victim: Victim, client: TestClient,
                                               db: Session) -> None:
    """A proxy in front may read the other one: which credential counts must not be a guess."""
    headers = [("Authorization", f"Bearer {victim.token}"),
               ("Authorization", f"Bearer {second.format(token=victim.token)}")]
    assert_denied(client, db, headers)


def test_missing_header_gets_the_bare_bearer_challenge(client: TestClient, db: Session) -> None:
    assert_denied(client, db, {}, challenge="Bearer")


def test_the_scheme_name_is_case_insensitive(victim: Victim, client: TestClient) -> None:
    assert client.get(PROBE, headers={"Authorization": f"bearer {victim.token}"}).status_code == 200
    assert client.get(PROBE, headers={"Authorization": f"BEARER {victim.token}"}).status_code == 200


def test_revocation_takes_effect_on_the_very_next_request(
    issue_token: TokenFactory, victim: Victim, client: TestClient, db: Session
) -> None:
    admin = issue_token("BKN", "admin")
    # The victim was verified a moment ago, so any cache of verified tokens holds it.
    assert client.get(PROBE, headers=bearer(victim.token)).status_code == 200
    revoked = client.delete(f"/v1/tokens/{victim.claims['jti']}", headers=bearer(admin))
    assert revoked.status_code == 204
    assert_denied(client, db, bearer(victim.token))
    assert client.get(PROBE, headers=bearer(admin)).status_code == 200, "only the revoked token is refused"


def test_token_expired_in_the_database_is_refused(victim: Victim, client: TestClient, db: Session) -> None:
    token_id = uuid.UUID(victim.claims["jti"])
    past = utcnow() - timedelta(seconds=1)
    db.execute(update(ApiToken).where(ApiToken.id == token_id).values(expires_at=past))
    db.commit()
    assert victim.claims["exp"] > time.time() + 3600, "the JWT itself is still far from expiry"
    assert_denied(client, db, bearer(victim.token))


def test_refusals_do_not_reveal_why(victim: Victim, client: TestClient) -> None:
    """The client learns only `invalid_token`; the reason goes to the audit event, not the response."""
    bodies = set()
    for attack in ("expired", "wrong-aud", "tampered-agency", "alg-none-empty-signature", "unknown-kid"):
        problem = client.get(PROBE, headers=bearer(ATTACKS[attack](victim))).json()
        bodies.add((problem["title"], problem["detail"]))
    assert len(bodies) == 1, bodies


def test_the_audit_event_records_the_reason_but_never_the_token(
    victim: Victim, client: TestClient, db: Session
) -> None:
    forged = ATTACKS["expired"](victim)
    client.get(PROBE, headers=bearer(forged))
    event = audit_rows(db)[-1]
    assert event.action == "auth.failed"
    assert event.detail.get("reason") == "token expired"
    stored = json.dumps([getattr(event, c.name) for c in event.__table__.columns], default=str)
    for piece in forged.split("."):
        assert piece not in stored
