"""API keys, the server secret and access tokens.

Keys are long random secrets shown once; only their sha256 and a short display prefix are stored.
Tokens are HS256 JWTs whose signing key is derived from a per-data-dir secret file (mode 0600);
the same secret, under another derivation, signs presigned URLs (storage.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

KEY_PREFIX = "kaio_"
DISPLAY_PREFIX_LEN = 12  # "kaio_" + 7 random characters: enough to name a key for revocation
SECRET_FILE = "secret"
VERIFIED_TOKENS = 1024  # remembered at most; then forgotten all at once and checked again


@dataclass(frozen=True)
class NewKey:
    key: str  # shown once, never stored
    key_hash: str
    display_prefix: str


def new_api_key() -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(key, hash_key(key), key[:DISPLAY_PREFIX_LEN])


def hash_key(key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def load_or_create_secret(data_dir: Path) -> bytes:
    """The data dir's secret, created on first use readable by its owner only."""
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        # O_EXCL: of two processes creating the data dir at once, exactly one writes the secret.
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
            f.flush()
            os.fsync(f.fileno())
    for _ in range(50):  # the creator may not have finished writing yet
        text = path.read_text().strip()
        if text:
            return bytes.fromhex(text)
        time.sleep(0.01)
    raise RuntimeError(f"{path} is empty")


def derive(secret: bytes, purpose: str) -> bytes:
    """One key per purpose, so a token signature can never pass as a URL signature."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


class TokenError(Exception):
    pass


class Tokens:
    def __init__(self, secret: bytes, ttl_s: int):
        self._key = derive(secret, "jwt")
        self.ttl_s = ttl_s
        # Tokens whose signature was checked once: a client sends the same token on every
        # request, and decoding it again costs more than the rest of a cheap request.
        self._verified: dict[str, tuple[str, int, float]] = {}

    def issue(self, user_id: str, key_id: int) -> tuple[str, int]:
        exp = int(time.time()) + self.ttl_s
        claims = {"sub": user_id, "kid": key_id, "exp": exp, "iat": int(time.time())}
        return jwt.encode(claims, self._key, algorithm="HS256"), exp

    def verify(self, token: str) -> tuple[str, int]:
        """(user id, key id) of a valid, unexpired token; TokenError otherwise."""
        known = self._verified.get(token)
        if known is not None:
            user_id, key_id, exp = known
            if exp <= time.time():  # PyJWT's own rule, no leeway
                raise TokenError("token expired")
            return user_id, key_id
        user_id, key_id, exp = self._decode(token)
        if len(self._verified) >= VERIFIED_TOKENS:
            self._verified.clear()
        self._verified[token] = (user_id, key_id, exp)
        return user_id, key_id

    def _decode(self, token: str) -> tuple[str, int, float]:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"require": ["exp", "sub", "kid"]}
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenError("token expired") from e
        except jwt.PyJWTError as e:
            raise TokenError("invalid token") from e
        if not isinstance(claims["sub"], str) or not isinstance(claims["kid"], int):
            raise TokenError("invalid token")
        return claims["sub"], claims["kid"], claims["exp"]
