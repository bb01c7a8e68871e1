from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest

from kalshiflow.secrets import Secret, database_url, kalshi_credentials, mask_url


def test_secret_never_prints(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("hunter2")
    logging.getLogger("t").warning("value %s %r", s, s)
    assert "hunter2" not in caplog.text
    assert "hunter2" not in f"{s} {s!r} {[s]}"
    assert s.reveal() == "hunter2"
    assert pickle.loads(pickle.dumps(s)).reveal() == "hunter2"


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert mask_url("postgresql:///db?host=/tmp") == "postgresql:///db?host=/tmp"


def test_database_url_from_env_only() -> None:
    assert database_url({}) is None
    url = database_url({"DATABASE_URL": "postgresql://u:pw@h/db"})
    assert url is not None and "pw" not in repr(url)


def test_credentials_from_env_and_file(tmp_path: Path) -> None:
    assert kalshi_credentials({}) is None
    pem = tmp_path / "k.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    creds = kalshi_credentials({"KALSHI_API_KEY_ID": "1234-5678", "KALSHI_PRIVATE_KEY_PATH": str(pem)})
    assert creds is not None and "abc" in creds.private_key_pem.reveal()
    assert "abc" not in repr(creds) and "5678" not in repr(creds)
    with pytest.raises(ValueError, match="both"):
        kalshi_credentials({"KALSHI_API_KEY_ID": "x"})
    with pytest.raises(ValueError, match="cannot read"):
        kalshi_credentials({"KALSHI_API_KEY_ID": "x", "KALSHI_PRIVATE_KEY_PATH": str(tmp_path / "no")})
