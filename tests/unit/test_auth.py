"""JWT compatibility with the original auth service (protocol.md §9)."""

import base64
import time

import jwt
import pytest

from app.auth import Principal, TokenVerifier, decode_secret, mint_token, token_from_headers
from app.errors import AuthError

SECRET = base64.b64encode(b"a-shared-secret-that-is-long-enough-for-hs256").decode()


def test_secret_is_base64_decoded_leniently_like_jjwt():
    assert decode_secret("c2VjcmV0") == b"secret"
    assert decode_secret("c2Vj-cmV0\n") == b"secret"  # non-alphabet characters skipped
    assert decode_secret("c2VjcmV0ZA") == b"secretd"  # missing padding tolerated


def test_reference_shaped_token_verifies():
    # Signed exactly as jjwt 0.9.1 does: header {"alg":"HS256"}, key = decoded secret.
    claims = {"sub": "a@b.c", "role": "ROLE_ADMIN", "id": 2, "iat": int(time.time()), "exp": int(time.time()) + 60}
    token = jwt.encode(claims, base64.b64decode(SECRET), algorithm="HS256", headers={"typ": None})
    assert jwt.get_unverified_header(token) == {"alg": "HS256"}
    assert TokenVerifier(SECRET).verify(token) == Principal(user_id=2, subject="a@b.c", role="ROLE_ADMIN")


def test_token_signed_with_the_raw_string_is_refused():
    claims = {"sub": "a@b.c", "id": 2, "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET.encode(), algorithm="HS256")
    with pytest.raises(AuthError, match="invalid token"):
        TokenVerifier(SECRET).verify(token)


def test_expired_token_is_refused():
    with pytest.raises(AuthError, match="expired"):
        TokenVerifier(SECRET).verify(mint_token(SECRET, 5, lifetime_s=-5))


@pytest.mark.parametrize("claims", [
    {"sub": "", "id": 5},
    {"sub": "x@y", "id": "5"},
    {"sub": "x@y", "id": 0},
    {"sub": "x@y", "id": True},
    {"sub": "x@y"},
])
def test_token_without_a_usable_identity_is_refused(claims):
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, decode_secret(SECRET), algorithm="HS256")
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(token)


def test_token_without_exp_is_refused():
    token = jwt.encode({"sub": "x@y", "id": 5}, decode_secret(SECRET), algorithm="HS256")
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(token)


@pytest.mark.parametrize("alg", ["none", "HS512"])
def test_other_algorithms_are_refused(alg):
    key = None if alg == "none" else decode_secret(SECRET)
    token = jwt.encode({"sub": "x@y", "id": 5, "exp": int(time.time()) + 60}, key, algorithm=alg)
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(token)


@pytest.mark.parametrize("value", [None, "", "garbage", "a.b.c"])
def test_missing_or_malformed_token_is_refused(value):
    with pytest.raises(AuthError):
        TokenVerifier(SECRET).verify(value)


def test_token_is_taken_from_access_token_or_authorization():
    assert token_from_headers(None, "raw.jwt.x") == "raw.jwt.x"
    assert token_from_headers("Bearer abc.def.ghi") == "abc.def.ghi"
    assert token_from_headers("bearer   abc") == "abc"
    assert token_from_headers("abc.def.ghi") == "abc.def.ghi"  # original web client: no scheme
    assert token_from_headers("Bearer ") is None
    assert token_from_headers(None) is None
