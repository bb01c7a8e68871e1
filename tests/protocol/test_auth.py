"""RSA-PSS signing/verification exactly as Kalshi does it."""

from __future__ import annotations

import base64
import pickle

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from kalshiflow.protocol.auth import (
    ACCESS_KEY_HEADER,
    ACCESS_TIMESTAMP_HEADER,
    AuthError,
    Signer,
    Verifier,
    generate_credentials,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_pem,
    sign_request,
    signing_message,
    verify_request_signature,
)
from kalshiflow.secrets import Credentials, Secret

TS = 1703123456789


@pytest.fixture(scope="module")
def key():
    return generate_private_key()


def test_signing_message_matches_documented_example():
    assert signing_message(TS, "get", "/trade-api/v2/portfolio/balance") == (
        b"1703123456789GET/trade-api/v2/portfolio/balance"
    )


@pytest.mark.parametrize(
    "target",
    [
        "/trade-api/v2/portfolio/orders?limit=5",
        "/trade-api/v2/portfolio/orders?ticker=A&status=resting#frag",
        "https://demo-api.kalshi.co/trade-api/v2/portfolio/orders?limit=5",
    ],
)
def test_query_string_is_never_signed(target):
    assert signing_message(TS, "GET", target) == b"1703123456789GET/trade-api/v2/portfolio/orders"


def test_signature_is_pss_sha256_with_digest_length_salt(key):
    sig = base64.b64decode(sign_request(key, TS, "GET", "/trade-api/v2/portfolio/balance"))
    # Verifying with an explicit 32-byte salt (not AUTO) proves the salt length Kalshi requires.
    key.public_key().verify(
        sig,
        b"1703123456789GET/trade-api/v2/portfolio/balance",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_round_trip_and_tamper(key):
    pub = key.public_key()
    sig = sign_request(key, TS, "POST", "/trade-api/v2/portfolio/orders")
    assert verify_request_signature(pub, sig, TS, "POST", "/trade-api/v2/portfolio/orders")
    assert verify_request_signature(pub, sig, TS, "POST", "/trade-api/v2/portfolio/orders?x=1")
    assert not verify_request_signature(pub, sig, TS + 1, "POST", "/trade-api/v2/portfolio/orders")
    assert not verify_request_signature(pub, sig, TS, "GET", "/trade-api/v2/portfolio/orders")
    assert not verify_request_signature(pub, sig, TS, "POST", "/trade-api/v2/portfolio/fills")
    raw = bytearray(base64.b64decode(sig))
    raw[10] ^= 0x01
    assert not verify_request_signature(
        pub, base64.b64encode(bytes(raw)).decode(), TS, "POST", "/trade-api/v2/portfolio/orders"
    )
    assert not verify_request_signature(pub, "not base64!!", TS, "POST", "/trade-api/v2/portfolio/orders")


def test_max_length_salt_signers_are_accepted(key):
    # Older clients (the previous system) used salt = MAX_LENGTH; Kalshi accepts them, so must we.
    msg = signing_message(TS, "GET", "/trade-api/ws/v2")
    sig = key.sign(
        msg,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
        hashes.SHA256(),
    )
    assert verify_request_signature(
        key.public_key(), base64.b64encode(sig).decode(), TS, "GET", "/trade-api/ws/v2"
    )


def test_signer_headers_and_verifier(key):
    now = [TS]
    signer = Signer("key-1", key, clock_ms=lambda: now[0])
    headers = signer.headers("GET", "/trade-api/v2/portfolio/balance?subaccount=0")
    assert headers[ACCESS_KEY_HEADER] == "key-1"
    assert headers[ACCESS_TIMESTAMP_HEADER] == str(TS)
    verifier = Verifier({"key-1": key.public_key()}, max_skew_s=5, clock_ms=lambda: TS + 4_000)
    assert verifier.verify("GET", "/trade-api/v2/portfolio/balance", headers) == "key-1"
    # Header names are case-insensitive even in a plain dict.
    lower = {k.lower(): v for k, v in headers.items()}
    assert verifier.verify("GET", "/trade-api/v2/portfolio/balance", lower) == "key-1"


def test_verifier_rejections(key):
    signer = Signer("key-1", key, clock_ms=lambda: TS)
    good = signer.headers("GET", "/trade-api/ws/v2")
    verifier = Verifier({"key-1": public_key_to_pem(key)}, max_skew_s=5)

    def reason(headers, now=TS, path="/trade-api/ws/v2"):
        with pytest.raises(AuthError) as info:
            verifier.verify("GET", path, headers, now=now)
        assert info.value.status == 401 and info.value.code == "authentication_error"
        return info.value.reason

    assert verifier.verify("GET", "/trade-api/ws/v2", good, now=TS) == "key-1"
    assert reason({}) == "MISSING_HEADER"
    assert reason({**good, ACCESS_KEY_HEADER: "other"}) == "NOT_FOUND"
    assert reason({**good, ACCESS_TIMESTAMP_HEADER: "12.5"}) == "BAD_TIMESTAMP"
    assert reason(good, now=TS + 5_001) == "TIMESTAMP_OUT_OF_WINDOW"
    assert reason(good, now=TS - 5_001) == "TIMESTAMP_OUT_OF_WINDOW"
    assert verifier.verify("GET", "/trade-api/ws/v2", good, now=TS - 5_000) == "key-1"
    assert reason(good, path="/trade-api/v2/portfolio/balance") == "INVALID_SIGNATURE"
    other = Signer("key-1", generate_private_key(), clock_ms=lambda: TS).headers("GET", "/trade-api/ws/v2")
    assert reason(other) == "INVALID_SIGNATURE"


def test_key_loading_helpers_and_no_leaks(key):
    creds, public_pem = generate_credentials("abcd-1234")
    assert creds.private_key_pem.reveal().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    signer = Signer.from_credentials(creds)
    assert "PRIVATE" not in repr(signer) and "abcd-1234" not in repr(signer)
    assert "PRIVATE" not in repr(creds)
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    verifier = Verifier({"abcd-1234": public_pem})
    assert verifier.verify("GET", "/trade-api/v2/x", signer.headers("GET", "/trade-api/v2/x")) == "abcd-1234"

    pem = private_key_to_pem(key)
    assert load_private_key(pem).private_numbers() == key.private_numbers()
    assert load_private_key(Secret(pem)).private_numbers() == key.private_numbers()
    # Bare base64 body (env-var style) is wrapped.
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert load_private_key(body).private_numbers() == key.private_numbers()
    assert load_public_key(pem).public_numbers() == key.public_key().public_numbers()
    with pytest.raises(ValueError) as info:
        load_private_key("-----BEGIN PRIVATE KEY-----\nAAAA-secret-bits\n-----END PRIVATE KEY-----\n")
    assert "secret" not in str(info.value)
    bad = Credentials(api_key_id="x", private_key_pem=Secret("garbage"))
    with pytest.raises(ValueError):
        Signer.from_credentials(bad)


def test_presigned_headers_verify_are_used_once_and_expire(key):
    from kalshiflow.protocol.auth import Presigner

    clock = [TS]
    signer = Signer("kid", key, clock_ms=lambda: clock[0])
    pool = Presigner(signer, "post", "/trade-api/v2/portfolio/orders", max_age_ms=1000, depth=2)
    assert pool.take() is None  # nothing signed yet: the caller signs inline
    assert pool.refill() == 2 and pool.refill() == 0
    clock[0] += 400
    first, second = pool.take(), pool.take()
    assert first is not None and second is not None and first is not second
    assert pool.take() is None and pool.used == 2  # each signature goes out once
    verifier = Verifier({"kid": key.public_key()}, max_skew_s=5, clock_ms=lambda: clock[0])
    for headers in (first, second):
        assert headers[ACCESS_TIMESTAMP_HEADER] == str(TS)
        assert verifier.verify("POST", "/trade-api/v2/portfolio/orders", headers) == "kid"
        with pytest.raises(AuthError):  # bound to its route like any signature
            verifier.verify("POST", "/trade-api/v2/portfolio/balance", headers)
    # Older than max_age: dropped, never sent; refill replaces it with a fresh one.
    pool.refill()
    clock[0] += 1001
    assert pool.take() is None and pool.expired == 2
    assert pool.refill() == 2
    fresh = pool.take()
    assert fresh is not None and fresh[ACCESS_TIMESTAMP_HEADER] == str(clock[0])
