"""Kalshi API-key authentication: RSA-PSS request signing and verification.

Kalshi signs ``timestamp_ms + METHOD + path`` where path runs from the root (``/trade-api/v2/...``
or ``/trade-api/ws/v2``) and has NO query string; the body and host are not signed. Signature =
base64(RSA-PSS(SHA-256, MGF1-SHA-256, salt = 32 bytes = digest length)). The previous system
signed query strings (rejected by Kalshi) -- :func:`signing_message` strips them so no caller can.

Private keys never appear in reprs, logs or exception messages.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kalshiflow.protocol.errors import AuthError
from kalshiflow.secrets import Credentials, Secret, mask

__all__ = [
    "ACCESS_KEY_HEADER",
    "ACCESS_SIGNATURE_HEADER",
    "ACCESS_TIMESTAMP_HEADER",
    "AuthError",
    "Presigner",
    "Signer",
    "Verifier",
    "auth_headers",
    "generate_credentials",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "now_ms",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign_request",
    "signing_message",
    "verify_request_signature",
]

ACCESS_KEY_HEADER = "KALSHI-ACCESS-KEY"
ACCESS_TIMESTAMP_HEADER = "KALSHI-ACCESS-TIMESTAMP"
ACCESS_SIGNATURE_HEADER = "KALSHI-ACCESS-SIGNATURE"

_SIGN_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
# AUTO accepts any salt length: Kalshi accepts MAX_LENGTH signers too (the old system used it).
_VERIFY_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _path_only(path_or_url: str) -> str:
    """'/trade-api/v2/x?limit=5' or 'https://h/trade-api/v2/x?y' -> '/trade-api/v2/x'."""
    if "://" in path_or_url:
        return urlsplit(path_or_url).path or "/"
    return path_or_url.split("?", 1)[0].split("#", 1)[0]


def signing_message(timestamp_ms: int | str, method: str, path: str) -> bytes:
    """The exact bytes Kalshi signs. Query strings and fragments are removed."""
    return f"{timestamp_ms}{method.upper()}{_path_only(path)}".encode()


def sign_request(private_key: rsa.RSAPrivateKey, timestamp_ms: int | str, method: str, path: str) -> str:
    signature = private_key.sign(signing_message(timestamp_ms, method, path), _SIGN_PADDING, hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def verify_request_signature(
    public_key: rsa.RSAPublicKey, signature_b64: str, timestamp_ms: int | str, method: str, path: str
) -> bool:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        public_key.verify(
            signature, signing_message(timestamp_ms, method, path), _VERIFY_PADDING, hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def auth_headers(
    key_id: str, private_key: rsa.RSAPrivateKey, method: str, path: str, timestamp_ms: int
) -> dict[str, str]:
    return {
        ACCESS_KEY_HEADER: key_id,
        ACCESS_TIMESTAMP_HEADER: str(timestamp_ms),
        ACCESS_SIGNATURE_HEADER: sign_request(private_key, timestamp_ms, method, path),
    }


# --- keys -------------------------------------------------------------------------------------


def generate_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_to_pem(key: rsa.RSAPrivateKey) -> str:
    """Unencrypted PKCS#8 PEM (the form Kalshi's key download uses)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_to_pem(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        key = key.public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _pem_bytes(pem: str | bytes | Secret, kind: str) -> bytes:
    text = pem.reveal() if isinstance(pem, Secret) else pem
    data = text.encode("ascii", "strict") if isinstance(text, str) else bytes(text)
    data = data.strip()
    if data and b"-----BEGIN" not in data:
        # A bare base64 body (as some env vars carry it): wrap it the way Kalshi's file is wrapped.
        body = b"\n".join(data[i : i + 64] for i in range(0, len(data), 64))
        data = (
            b"-----BEGIN " + kind.encode() + b"-----\n" + body + b"\n-----END " + kind.encode() + b"-----\n"
        )
    return data


def load_private_key(pem: str | bytes | Secret, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM (PKCS#8 or PKCS#1) text, bytes or a Secret."""
    try:
        key = serialization.load_pem_private_key(_pem_bytes(pem, "PRIVATE KEY"), password=password)
    except (ValueError, TypeError, UnicodeError):
        # Never echo the PEM: the underlying message may quote parts of it.
        raise ValueError("private key is not a valid PEM-encoded RSA key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private key is not an RSA key (Kalshi keys are RSA)")
    return key


def load_public_key(pem: str | bytes) -> rsa.RSAPublicKey:
    """Load an RSA public key from SubjectPublicKeyInfo/PKCS#1 PEM; a private key PEM also works."""
    data = _pem_bytes(pem, "PUBLIC KEY")
    if b"PRIVATE KEY" in data:
        return load_private_key(data).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("public key is not a valid PEM-encoded RSA key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("public key is not an RSA key")
    return key


def generate_credentials(key_id: str | None = None, bits: int = 2048) -> tuple[Credentials, str]:
    """A fresh key pair for tests and the simulator: (Credentials, public key PEM)."""
    key = generate_private_key(bits)
    creds = Credentials(
        api_key_id=key_id or str(uuid.uuid4()), private_key_pem=Secret(private_key_to_pem(key))
    )
    return creds, public_key_to_pem(key)


# --- signer / verifier ------------------------------------------------------------------------


class Signer:
    """Produces the three Kalshi auth headers for a request; re-signs with a fresh timestamp each call."""

    __slots__ = ("_key_id", "_key", "_clock_ms")

    def __init__(
        self, key_id: str, private_key: rsa.RSAPrivateKey, *, clock_ms: Callable[[], int] = now_ms
    ) -> None:
        if not key_id:
            raise ValueError("key id is empty")
        self._key_id = key_id
        self._key = private_key
        self._clock_ms = clock_ms

    @classmethod
    def from_credentials(cls, credentials: Credentials, *, clock_ms: Callable[[], int] = now_ms) -> Signer:
        return cls(credentials.api_key_id, load_private_key(credentials.private_key_pem), clock_ms=clock_ms)

    @property
    def key_id(self) -> str:
        return self._key_id

    def now_ms(self) -> int:
        return self._clock_ms()

    def headers(self, method: str, path_or_url: str, *, timestamp_ms: int | None = None) -> dict[str, str]:
        ts = self._clock_ms() if timestamp_ms is None else timestamp_ms
        return auth_headers(self._key_id, self._key, method, path_or_url, ts)

    def __repr__(self) -> str:
        return f"Signer(key_id={mask(self._key_id)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Refuse pickling: a Signer must never travel in a message or land in a checkpoint.
        raise TypeError("Signer holds a private key and cannot be pickled; send Credentials instead")


class Presigner:
    """Auth headers for one hot route (placing orders), signed before they are needed.

    An RSA-PSS signature costs ~1 ms of CPU: made in a quiet moment (while the previous request is
    on the wire, or on a timer) instead of on an order's way, it comes off the decision -> ack
    latency. Each signature is used once, and only while its timestamp is at most ``max_age_ms``
    old (Kalshi checks the timestamp against its clock; the window is undocumented, and a second is
    far inside any clock skew a client must tolerate: reference/kalshi-protocol.md, auth).
    """

    __slots__ = ("_signer", "method", "path", "max_age_ms", "depth", "_ready", "made", "used", "expired")

    def __init__(self, signer: Signer, method: str, path: str, *, max_age_ms: int = 1000,
                 depth: int = 2) -> None:
        self._signer = signer
        self.method, self.path = method.upper(), path
        self.max_age_ms, self.depth = max_age_ms, max(1, depth)
        self._ready: deque[tuple[int, dict[str, str]]] = deque()  # (timestamp ms, headers), oldest first
        self.made = self.used = self.expired = 0

    def _drop_stale(self, now: int) -> None:
        ready = self._ready
        while ready and now - ready[0][0] > self.max_age_ms:
            ready.popleft()
            self.expired += 1

    def take(self) -> dict[str, str] | None:
        """A fresh signature made earlier (removed from the pool), or None: sign now."""
        self._drop_stale(self._signer.now_ms())
        if not self._ready:
            return None
        self.used += 1
        return self._ready.popleft()[1]

    def refill(self) -> int:
        """Sign until ``depth`` fresh signatures wait; returns how many were made."""
        now = self._signer.now_ms()
        self._drop_stale(now)
        made = 0
        while len(self._ready) < self.depth:
            self._ready.append((now, self._signer.headers(self.method, self.path, timestamp_ms=now)))
            made += 1
        self.made += made
        return made


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        # Plain dicts are case-sensitive; Starlette/websockets/aiohttp header maps are not.
        lowered = name.lower()
        for k, v in headers.items():
            if k.lower() == lowered:
                return v
    return value


class Verifier:
    """Server-side check of Kalshi auth headers (used by the exchange simulator).

    ``verify`` returns the key id of the account on success and raises :class:`AuthError`
    (status 401, code ``authentication_error``, ``reason`` one of MISSING_HEADER, NOT_FOUND,
    BAD_TIMESTAMP, TIMESTAMP_OUT_OF_WINDOW, INVALID_SIGNATURE) otherwise. Kalshi answers an
    unknown key with details ``NOT_FOUND``; the other reasons are our own, Kalshi-like wording.
    """

    def __init__(
        self,
        keys: Mapping[str, rsa.RSAPublicKey | str | bytes] | None = None,
        *,
        max_skew_s: float = 30.0,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self.max_skew_ms = int(max_skew_s * 1000)
        self._clock_ms = clock_ms
        for key_id, key in (keys or {}).items():
            self.add_key(key_id, key)

    def add_key(self, key_id: str, public_key: rsa.RSAPublicKey | rsa.RSAPrivateKey | str | bytes) -> None:
        if isinstance(public_key, rsa.RSAPrivateKey):
            public_key = public_key.public_key()
        elif isinstance(public_key, (str, bytes)):
            public_key = load_public_key(public_key)
        self._keys[key_id] = public_key

    def remove_key(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    def key_ids(self) -> list[str]:
        return list(self._keys)

    def verify(self, method: str, path: str, headers: Mapping[str, str], *, now: int | None = None) -> str:
        """Verify a request's auth headers; ``path`` is the raw request path (query is ignored)."""
        key_id = _header(headers, ACCESS_KEY_HEADER)
        ts_text = _header(headers, ACCESS_TIMESTAMP_HEADER)
        signature = _header(headers, ACCESS_SIGNATURE_HEADER)
        if not key_id or not ts_text or not signature:
            raise AuthError(message="missing authentication headers", details="MISSING_HEADER")
        public_key = self._keys.get(key_id)
        if public_key is None:
            raise AuthError(message="API key not found", details="NOT_FOUND")
        ts_text = ts_text.strip()
        if not ts_text.isdigit() or len(ts_text) > 16:
            raise AuthError(message="timestamp must be Unix milliseconds", details="BAD_TIMESTAMP")
        skew = abs((self._clock_ms() if now is None else now) - int(ts_text))
        if skew > self.max_skew_ms:
            raise AuthError(
                message="request timestamp outside the allowed window", details="TIMESTAMP_OUT_OF_WINDOW"
            )
        if not verify_request_signature(public_key, signature.strip(), ts_text, method, path):
            raise AuthError(message="invalid signature", details="INVALID_SIGNATURE")
        return key_id

    def __repr__(self) -> str:
        return f"Verifier({len(self._keys)} keys, max_skew_ms={self.max_skew_ms})"
