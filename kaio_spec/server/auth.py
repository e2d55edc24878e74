"""API keys, the server secret and access tokens.

Keys are long random secrets shown once; only their sha256 and a short display prefix are stored.
Tokens are HS256 JWTs whose signing key is derived from a per-data-dir secret file (mode 0600);
the same secret, under another derivation, signs presigned URLs (storage.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt

from kaio_spec.files import write_atomic

KEY_PREFIX = "kaio_"
DISPLAY_PREFIX_LEN = 12  # "kaio_" + 7 random characters: enough to name a key for revocation
SECRET_FILE = "secret"
REVOKED_FILE = "revoked-tokens"  # ids of signed-out tokens (RevokedTokens)
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


@dataclass(frozen=True)
class Claims:
    """What a valid token says: whose it is, through which key, its id and its expiry."""

    user_id: str
    key_id: int
    token_id: str
    exp: int


class RevokedTokens:
    """The ids of tokens signed out before they expired (POST /logout), each kept until the
    token expires. Kept in a file of the data dir, so a restart does not bring a signed-out
    token back; an id is random, not a secret, so the file holds nothing worth stealing."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}  # token id -> its expiry
        self._pruned_at = 0  # how many ids were kept after the last pruning
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text().splitlines():
                token_id, _, exp = line.partition(" ")
                if token_id and exp.isdigit():
                    self._ids[token_id] = int(exp)
        with self._lock:
            self._prune()

    def revoke(self, token_id: str, exp: int) -> None:
        with self._lock:
            self._ids[token_id] = exp
            if len(self._ids) > 2 * self._pruned_at + 64:
                self._prune()  # rewrites the file without what expired
                return
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(f"{token_id} {exp}\n")
                f.flush()
                os.fsync(f.fileno())

    def __contains__(self, token_id: str) -> bool:
        return token_id in self._ids

    def _prune(self) -> None:
        now = self._clock()
        self._ids = {t: exp for t, exp in self._ids.items() if exp > now}
        self._pruned_at = len(self._ids)
        text = "".join(f"{t} {exp}\n" for t, exp in self._ids.items())
        write_atomic(self._path, text, mode=0o600)


class Tokens:
    def __init__(self, secret: bytes, ttl_s: int, revoked: RevokedTokens | None = None):
        self._key = derive(secret, "jwt")
        self.ttl_s = ttl_s
        self.revoked = revoked
        # Tokens whose signature was checked once: a client sends the same token on every
        # request, and decoding it again costs more than the rest of a cheap request.
        self._verified: dict[str, Claims] = {}

    def issue(self, user_id: str, key_id: int, not_after: int | None = None) -> tuple[str, int]:
        """A token for the user and key, and its expiry: ttl_s from now, or `not_after` if
        sooner (a token from a sign-in link ends with the session that made the link)."""
        now = int(time.time())
        exp = now + self.ttl_s if not_after is None else min(now + self.ttl_s, not_after)
        claims = {
            "sub": user_id,
            "kid": key_id,
            "jti": secrets.token_urlsafe(16),  # what POST /logout revokes
            "exp": exp,
            "iat": now,
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), exp

    def verify(self, token: str) -> Claims:
        """The claims of a valid, unexpired, not signed-out token; TokenError otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = claims
        if claims.exp <= time.time():  # PyJWT's own rule, no leeway
            raise TokenError("token expired")
        if self.revoked is not None and claims.token_id in self.revoked:
            raise TokenError("this token was signed out")
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                options={"require": ["exp", "sub", "kid", "jti"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise TokenError("token expired") from e
        except jwt.PyJWTError as e:
            raise TokenError("invalid token") from e
        sub, kid, jti, exp = claims["sub"], claims["kid"], claims["jti"], claims["exp"]
        if not (isinstance(sub, str) and isinstance(kid, int) and isinstance(jti, str)):
            raise TokenError("invalid token")
        return Claims(sub, kid, jti, int(exp))
