"""The service signing key: generation, loading, and its public JWK (kid = RFC 7638 thumbprint)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

Algorithm = Literal["ES256", "RS256"]


class KeyError_(RuntimeError):
    """The key file is missing, unreadable or of an unsupported kind."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(value: int, length: int | None = None) -> str:
    size = length or max(1, (value.bit_length() + 7) // 8)
    return _b64(value.to_bytes(size, "big"))


@dataclass(frozen=True)
class SigningKey:
    algorithm: Algorithm
    kid: str
    private_pem: bytes
    public_pem: bytes
    public_jwk: dict[str, Any]


def generate_key_file(path: Path, algorithm: Algorithm = "ES256") -> bool:
    """Write a new private key to `path` unless one exists; True when a key was written."""
    if path.exists():
        return False
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key another process wrote a moment ago; 0600: the key is a secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return True


def load_signing_key(path: Path) -> SigningKey:
    try:
        pem = path.read_bytes()
        private = serialization.load_pem_private_key(pem, password=None)
    except FileNotFoundError:
        raise KeyError_(f"signing key file {path} not found (run `sbt keys generate`)") from None
    except (ValueError, TypeError, OSError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"signing key file {path} is not a readable PEM private key: {exc}") from None
    public = private.public_key()
    members: dict[str, str]
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        algorithm: Algorithm = "ES256"
        numbers = private.public_key().public_numbers()
        members = {"crv": "P-256", "kty": "EC", "x": _int_b64(numbers.x, 32), "y": _int_b64(numbers.y, 32)}
    elif isinstance(private, rsa.RSAPrivateKey):
        algorithm = "RS256"
        rsa_numbers = private.public_key().public_numbers()
        members = {"e": _int_b64(rsa_numbers.e), "kty": "RSA", "n": _int_b64(rsa_numbers.n)}
    else:
        raise KeyError_(f"signing key file {path}: only EC P-256 (ES256) and RSA (RS256) keys are supported")
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    thumbprint = _b64(hashlib.sha256(canonical).digest())
    public_pem = public.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk = {**members, "kid": thumbprint, "alg": algorithm, "use": "sig"}
    return SigningKey(algorithm, thumbprint, pem, public_pem, jwk)
