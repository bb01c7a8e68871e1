"""Secrets come from the environment or files, never from committed configs, and are never logged.

- ``KALSHI_API_KEY_ID``: the Kalshi API key id (a UUID).
- ``KALSHI_PRIVATE_KEY_PATH``: path to the RSA private key (PEM) for that key id.
- ``DATABASE_URL``: a PostgreSQL URL (may hold a password); unset = embedded PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Secret:
    """A string that refuses to show itself in repr/str/logs; `.reveal()` gets the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # Actors receive secrets by message; pickling keeps the value, printing never shows it.
        return (Secret, (self._value,))


class Credentials(msgspec.Struct, frozen=True):
    api_key_id: str
    private_key_pem: Secret

    def __repr__(self) -> str:
        return f"Credentials(api_key_id={mask(self.api_key_id)!r}, private_key_pem=Secret('***'))"


def mask(text: str, keep: int = 4) -> str:
    """Key ids are not secret on their own, but logs show only a prefix."""
    return text[:keep] + "…" if len(text) > keep else "…"


def mask_url(url: str) -> str:
    """postgresql://user:pw@host/db -> postgresql://user:***@host/db"""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"


def database_url(environ: Mapping[str, str] | None = None) -> Secret | None:
    env = os.environ if environ is None else environ
    url = env.get("DATABASE_URL", "").strip()
    return Secret(url) if url else None


def kalshi_credentials(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from KALSHI_API_KEY_ID + KALSHI_PRIVATE_KEY_PATH, or None when unset."""
    env = os.environ if environ is None else environ
    key_id = env.get("KALSHI_API_KEY_ID", "").strip()
    key_path = env.get("KALSHI_PRIVATE_KEY_PATH", "").strip()
    if not key_id and not key_path:
        return None
    if not key_id or not key_path:
        raise ValueError("set both KALSHI_API_KEY_ID and KALSHI_PRIVATE_KEY_PATH, or neither")
    path = Path(key_path).expanduser()
    try:
        pem = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read KALSHI_PRIVATE_KEY_PATH ({path}): {err.strerror}") from None
    return Credentials(api_key_id=key_id, private_key_pem=Secret(pem))
