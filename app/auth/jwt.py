"""Issuing and verifying signed tokens. The only module that imports `jose`; algorithms are pinned."""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from threading import Lock
from typing import Any

from jose import jws, jwt  # type: ignore[import-untyped]  # python-jose ships no type information
from jose.exceptions import JOSEError  # type: ignore[import-untyped]

from app.auth.keys import SigningKey

MAX_TOKEN_BYTES = 8192
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JOSE `typ`, not a secret)
_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c")
_REQUIRED_CLAIMS = ("iss", "aud", "sub", "jti", "iat", "exp", "agency", "scope")


class TokenRejected(Exception):
    """The token is not one this service issued and still honours; the message is safe to log."""


class TokenCodec:
    """Signs and verifies access tokens and checkpoints with the service key.

    Verified signatures are cached (bounded) because ES256 verification dominates a cheap request; the
    cache never replaces the database check of revocation, and `exp` is re-checked on every hit.
    """

    def __init__(self, key: SigningKey, *, issuer: str, audience: str, cache_size: int = 4096) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    def issue(self, claims: dict[str, Any]) -> str:
        headers = {"typ": ACCESS_TOKEN_TYPE, "kid": self.key.kid}
        token: str = jwt.encode(
            {"iss": self.issuer, "aud": self.audience, **claims},
            self.key.private_pem.decode(),
            algorithm=self.key.algorithm,
            headers=headers,
        )
        return token

    def verify(self, token: str) -> dict[str, Any]:
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                self._cache.move_to_end(token)
        if cached is None:
            cached = self._verify_uncached(token)
            with self._lock:
                self._cache[token] = cached
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if cached["exp"] <= time.time():
            raise TokenRejected("token expired")
        return cached

    def _verify_uncached(self, token: str) -> dict[str, Any]:
        if len(token.encode()) > MAX_TOKEN_BYTES:
            raise TokenRejected("token too large")
        try:
            header = jws.get_unverified_header(token)
        except JOSEError:
            raise TokenRejected("malformed token") from None
        if any(name in header for name in _FORBIDDEN_HEADERS):
            raise TokenRejected("token header names an external key")
        if header.get("alg") != self.key.algorithm:
            raise TokenRejected("unexpected signing algorithm")
        if header.get("kid") != self.key.kid:
            raise TokenRejected("unknown key id")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise TokenRejected("not an access token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key.public_pem.decode(),
                algorithms=[self.key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={f"require_{c}": True for c in ("aud", "iss", "exp", "iat", "jti", "sub")},
            )
        except JOSEError as exc:
            raise TokenRejected(_reason(exc)) from None
        except (TypeError, ValueError, OverflowError):
            # python-jose trusts claim types once the signature holds (`"exp": null` raises TypeError);
            # a refusal, not a server error, whatever a signed token carries.
            raise TokenRejected("token claims malformed") from None
        missing = [c for c in _REQUIRED_CLAIMS if c not in claims]
        if missing or claims["sub"] != claims["jti"]:
            raise TokenRejected("token claims incomplete")
        if not isinstance(claims["exp"], int | float) or not isinstance(claims["scope"], str):
            raise TokenRejected("token claims malformed")
        return claims

    def sign_statement(self, payload: dict[str, Any], *, typ: str) -> str:
        """A compact JWS of `payload` with the service key; anyone can check it against the JWKS."""
        compact: str = jws.sign(
            payload, self.key.private_pem.decode(), headers={"typ": typ, "kid": self.key.kid},
            algorithm=self.key.algorithm,
        )
        return compact

    def verify_statement(self, compact: str, *, typ: str) -> dict[str, Any]:
        """The JSON object a statement of type `typ` signed by this service's key carries.

        Raises TokenRejected (with a message safe to print) for anything else: garbage, another key,
        another algorithm, another `typ`, a bad signature or a payload that is not a JSON object.
        """
        if len(compact.encode()) > MAX_TOKEN_BYTES:
            raise TokenRejected("statement too large")
        try:
            header = jws.get_unverified_header(compact)
        except JOSEError:
            raise TokenRejected("not a compact JWS") from None
        if any(name in header for name in _FORBIDDEN_HEADERS):
            raise TokenRejected("statement header names an external key")
        if header.get("alg") != self.key.algorithm:
            raise TokenRejected("unexpected signing algorithm")
        if header.get("kid") != self.key.kid:
            raise TokenRejected("statement not signed by this service's key")
        if header.get("typ") != typ:
            raise TokenRejected(f"not a {typ} statement")
        try:
            payload = jws.verify(compact, self.key.public_pem.decode(), algorithms=[self.key.algorithm])
        except JOSEError:
            raise TokenRejected("statement signature invalid") from None
        try:
            data = json.loads(payload)
        except ValueError:
            raise TokenRejected("statement payload is not JSON") from None
        if not isinstance(data, dict):
            raise TokenRejected("statement payload is not a JSON object")
        return data


def _reason(exc: JOSEError) -> str:
    text = str(exc).lower()
    if "expired" in text:
        return "token expired"
    if "audience" in text:
        return "wrong audience"
    if "issuer" in text:
        return "wrong issuer"
    if "signature" in text:
        return "signature invalid"
    return "token invalid"
