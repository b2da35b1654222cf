"""Hand-built JWTs for attack tests: base64url JSON segments and signatures made with `cryptography`.

Nothing here goes through the service's codec, so a forged token is exactly what an attacker could send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def segment(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, claims, signature segment) of a compact JWS, read without any verification."""
    header, claims, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims)), signature


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def raw_signature(alg: str, signing_input: bytes, key: PrivateKey | bytes | None) -> bytes:
    """The JWS signature bytes for `alg` (RFC 7518 §3): raw r||s for ES256, PKCS#1 v1.5 for RS256."""
    if alg.upper() == "NONE":
        return b""
    if alg == "HS256":
        assert isinstance(key, bytes)
        return hmac.new(key, signing_input, hashlib.sha256).digest()
    if alg == "ES256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "RS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    raise ValueError(f"no signer for {alg}")


def sign(header: dict[str, Any], claims: dict[str, Any], key: PrivateKey | bytes | None) -> str:
    """A compact JWS of `claims` with exactly `header` (its `alg` picks the signature)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signature = raw_signature(str(header["alg"]), signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def es256_verifies(public: ec.EllipticCurvePublicKey, token: str) -> bool:
    """Check a token's ES256 signature with a given public key (used to prove the JWKS key is the signer)."""
    signing_input, signature = token.rsplit(".", 1)
    raw = b64url_decode(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def rs256_verifies(public: rsa.RSAPublicKey, token: str) -> bool:
    signing_input, signature = token.rsplit(".", 1)
    try:
        public.verify(b64url_decode(signature), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def public_key_from_jwk(jwk: dict[str, str]) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    """Rebuild a public key from the published JWK members alone."""
    def integer(name: str) -> int:
        return int.from_bytes(b64url_decode(jwk[name]), "big")

    if jwk["kty"] == "EC":
        assert jwk["crv"] == "P-256"
        return ec.EllipticCurvePublicNumbers(integer("x"), integer("y"), ec.SECP256R1()).public_key()
    assert jwk["kty"] == "RSA"
    return rsa.RSAPublicNumbers(integer("e"), integer("n")).public_key()


def rfc7638_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({name: jwk[name] for name in required}, sort_keys=True, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())
