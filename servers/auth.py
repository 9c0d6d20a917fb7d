"""Login tokens: signed with the server's key and expiring (itsdangerous).

A token is ``<user>.<timestamp>.<signature>``; a server verifies it without any stored state,
so the same token works on every transport of the process (and on every process given the
same ``--secret``).
"""

from __future__ import annotations

import math
import secrets

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from wirewise import protocol


class Tokens:
    def __init__(self, secret: str | None, max_age: float) -> None:
        self._signer = TimestampSigner(secret or secrets.token_urlsafe(32), salt="wirewise-login")
        self._max_age = math.ceil(max_age)  # itsdangerous counts whole seconds

    def issue(self, user: str) -> str:
        return self._signer.sign(user).decode("ascii")

    def verify(self, token: str | None) -> str | None:
        """The user a token names, or None when it is missing, forged, expired or malformed."""
        if not token or len(token) > 256:
            return None
        try:
            user = self._signer.unsign(token, max_age=self._max_age).decode("utf-8")
        except (BadSignature, SignatureExpired, UnicodeError, ValueError):
            return None
        return user if protocol.valid_user(user) else None
