"""One-time codes that sign a browser tab in (`kaio dashboard`, routes/signin.py)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable

SIGNIN_LINK_TTL_S = 60.0


class SignInLinks:
    """One-time codes that sign a browser tab in (`kaio dashboard`), so that the API key never
    travels in a URL: random, single use, short-lived, kept only as hashes and only in memory
    (a restart voids them, which costs nothing: the CLI makes a new one in a second)."""

    def __init__(
        self, ttl_s: float = SIGNIN_LINK_TTL_S, clock: Callable[[], float] = time.monotonic
    ):
        self.ttl_s = ttl_s
        self._clock = clock
        # sha256 -> (expiry, user, key id, the expiry of the token that made the code)
        self._codes: dict[str, tuple[float, str, int, int]] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: str, key_id: int, not_after: int) -> str:
        code = secrets.token_urlsafe(32)
        with self._lock:
            t = self._clock()
            self._codes = {h: v for h, v in self._codes.items() if v[0] > t}
            self._codes[self._hash(code)] = (t + self.ttl_s, user_id, key_id, not_after)
        return code

    def redeem(self, code: str) -> tuple[str, int, int] | None:
        """(user id, key id, when its token must expire by) of a valid code, which is then
        spent; None otherwise."""
        with self._lock:
            found = self._codes.pop(self._hash(code), None)
            if found is None or found[0] <= self._clock() or found[3] <= time.time():
                return None
        return found[1], found[2], found[3]

    @staticmethod
    def _hash(code: str) -> str:
        return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()
