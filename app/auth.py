"""JWT verification and (dev-only) minting, compatible with the original auth service.

The auth service signs HS256 tokens with a secret that jjwt treats as Base64: the HMAC key
is the *decoded* bytes, decoded leniently (characters outside the standard alphabet are
skipped, missing padding is tolerated). The user id is the numeric ``id`` claim; ``sub``
(the e-mail) must be non-empty, ``exp`` is enforced and only ``alg: HS256`` is accepted.

Run ``python -m app.auth mint --user 5`` to mint a token for the embedded stack.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Mapping

import jwt

from app.errors import AuthError
from app.settings import Settings

__all__ = ["Principal", "TokenVerifier", "decode_secret", "mint_token", "token_from_headers"]

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
BEARER = "bearer "
DEFAULT_LIFETIME_S = 100 * 86_400


@dataclass(frozen=True, slots=True)
class Principal:
    """The verified identity bound to a connection or request."""

    user_id: int
    subject: str
    role: str | None = None


def decode_secret(secret: str) -> bytes:
    """The HMAC key for ``secret``, decoded as jjwt 0.9.1 does (lenient Base64)."""
    cleaned = _NOT_BASE64.sub("", secret)
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else len(cleaned)]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except binascii.Error as exc:  # pragma: no cover - the cleaning above leaves valid input
        raise ValueError("JWT_SECRET is not Base64") from exc


class TokenVerifier:
    """Verifies access tokens against the shared secret; stateless and thread-safe."""

    def __init__(self, secret: str) -> None:
        self._key = decode_secret(secret)

    def verify(self, token: str | None) -> Principal:
        """The principal of a valid token, or ``AuthError`` with a short reason."""
        if not token:
            raise AuthError("missing token")
        try:
            claims = jwt.decode(token.strip(), self._key, algorithms=["HS256"],
                                options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid token") from None
        return _principal(claims)


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    user_id = claims.get("id")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token")
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
        raise AuthError("invalid token")
    role = claims.get("role")
    return Principal(user_id=user_id, subject=subject, role=role if isinstance(role, str) else None)


def token_from_headers(authorization: str | None, access_token: str | None = None) -> str | None:
    """The raw token from an ``access-token`` value or an ``Authorization`` header.

    The original clients send the raw JWT without a scheme; ``Bearer <jwt>`` is accepted too.
    """
    if access_token:
        return access_token.strip()
    if not authorization:
        return None
    value = authorization.lstrip()
    if value[: len(BEARER)].lower() == BEARER or value.lower() == BEARER.strip():
        value = value[len(BEARER):]
    return value.strip() or None


def mint_token(secret: str, user_id: int, *, subject: str | None = None, role: str = "ROLE_USER",
               lifetime_s: int = DEFAULT_LIFETIME_S, now: float | None = None) -> str:
    """A token shaped like the auth service's (header exactly ``{"alg":"HS256"}``)."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject or f"user{user_id}@smooth.local", "role": role, "id": user_id,
              "iat": issued, "exp": issued + lifetime_s}
    return jwt.encode(claims, decode_secret(secret), algorithm="HS256", headers={"typ": None})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.auth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="mint a token signed with JWT_SECRET (dev key by default)")
    mint.add_argument("--user", type=int, required=True, help="numeric user id (the `id` claim)")
    mint.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME_S, help="seconds until exp")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.user <= 0:
        parser.error("--user must be a positive integer")
    sys.stdout.write(mint_token(settings.jwt_secret, args.user, lifetime_s=args.lifetime) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
