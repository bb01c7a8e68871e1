"""API keys of the simulator: which key id belongs to which account, and signature checks.

Each registered key is one account (``user_id`` derived from the key id, stable across restarts)
with the configured starting balance. Every request and WS handshake is checked with
:class:`kalshiflow.protocol.auth.Verifier`, so a client that works here signs exactly as Kalshi
expects. Nothing in this module logs or returns key material.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from kalshiflow.exchange.state import ExchangeState
from kalshiflow.protocol.auth import (
    Verifier,
    generate_private_key,
    load_private_key,
    private_key_to_pem,
    public_key_to_pem,
)
from kalshiflow.protocol.errors import AuthError
from kalshiflow.secrets import mask

log = logging.getLogger(__name__)

PublicKey = rsa.RSAPublicKey | str | bytes
_USER_NAMESPACE = uuid.UUID("6f1c2b2e-5d1a-4c53-9a3e-4b9d8f0a7c11")


def user_id_for(key_id: str) -> str:
    """The account behind an API key: a UUID derived from the key id (Kalshi user ids are UUIDs)."""
    return str(uuid.uuid5(_USER_NAMESPACE, key_id))


class Accounts:
    """Key id -> account, plus the verifier that authenticates requests."""

    def __init__(self, state: ExchangeState, *, max_skew_s: float = 30.0) -> None:
        self.state = state
        self.verifier = Verifier(max_skew_s=max_skew_s)
        self._owner_by_key: dict[str, str] = {}

    def register(self, key_id: str, public_key: PublicKey | rsa.RSAPrivateKey) -> str:
        """Accept ``key_id`` signed with ``public_key``; opens its account. Returns the user id."""
        if not key_id:
            raise ValueError("API key id is empty")
        self.verifier.add_key(key_id, public_key)
        owner = user_id_for(key_id)
        self._owner_by_key[key_id] = owner
        self.state.add_account(owner)
        log.info("simulator: registered API key %s", mask(key_id))
        return owner

    def owner_of(self, key_id: str) -> str | None:
        return self._owner_by_key.get(key_id)

    def key_ids(self) -> list[str]:
        return list(self._owner_by_key)

    def authenticate(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        """The account (user id) that signed this request; raises AuthError (401) otherwise."""
        key_id = self.verifier.verify(method, path, headers)
        owner = self._owner_by_key.get(key_id)
        if owner is None:  # a key removed from the verifier's map concurrently
            raise AuthError(message="API key not found", details="NOT_FOUND")
        return owner


def load_key_file(path: str | Path) -> str:
    """PEM text of a public key file, or of a private key file (its public half is used)."""
    text = Path(path).read_text()
    if "PRIVATE KEY" in text:
        return public_key_to_pem(load_private_key(text))
    return text


def generated_key(key_dir: Path) -> tuple[str, Path]:
    """The simulator's own key pair in ``key_dir``, created on first use: (key id, private key path).

    Lets ``python -m kalshiflow.exchange`` run with no arguments: clients read the printed key id
    and private key path. The private key file is created with mode 0600.
    """
    key_dir.mkdir(parents=True, exist_ok=True)
    id_file = key_dir / "api_key_id"
    pem_file = key_dir / "private_key.pem"
    if id_file.exists() and pem_file.exists():
        return id_file.read_text().strip(), pem_file
    key_id = str(uuid.uuid4())
    pem = private_key_to_pem(generate_private_key())
    fd = os.open(pem_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(pem)
    id_file.write_text(key_id + "\n")
    return key_id, pem_file
