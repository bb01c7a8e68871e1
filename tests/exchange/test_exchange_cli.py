"""``python -m kalshiflow.exchange``: starts, serves the SDK with the given keys, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kalshi_python_sync import Configuration, KalshiClient

from kalshiflow.protocol.auth import generate_credentials


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kalshiflow.exchange", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    printed: dict[str, str] = {}
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while "WS" not in printed and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        key, sep, value = line.partition(":")
        if sep and key in ("REST", "WS", "API key id", "private key path"):
            printed[key] = value.strip()
    assert "WS" in printed, f"simulator did not start: {printed}"
    return proc, printed


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    return out


def test_cli_with_given_key_serves_the_official_sdk(tmp_path: Path) -> None:
    creds, public_pem = generate_credentials()
    key_file = tmp_path / "public.pem"
    key_file.write_text(public_pem)
    env = dict(os.environ)
    proc, printed = start(
        [
            "--markets",
            "3",
            "--seed",
            "5",
            "--speed",
            "20",
            "--api-key-id",
            creds.api_key_id,
            "--api-public-key",
            str(key_file),
            "--set",
            "simulator.ping_interval_s=5",
        ],
        env,
    )
    try:
        assert printed["REST"].endswith("/trade-api/v2") and printed["WS"].endswith("/trade-api/ws/v2")
        cfg = Configuration(host=printed["REST"])
        cfg.api_key_id = creds.api_key_id
        cfg.private_key_pem = creds.private_key_pem.reveal()
        client = KalshiClient(cfg)
        assert client.get_balance().balance == 1_000_000
        deadline = time.monotonic() + 20
        while not (markets := client.get_markets(status="open").markets) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(markets) == 3
    finally:
        out = stop(proc)
    assert creds.private_key_pem.reveal() not in out and "PRIVATE KEY" not in out


def test_cli_without_keys_generates_one_and_prints_only_its_path(tmp_path: Path) -> None:
    env = dict(os.environ)
    key_dir = tmp_path / "keys"
    proc, printed = start(["--no-generator", "--set", f"simulator.key_dir={key_dir}"], env)
    try:
        pem_path = Path(printed["private key path"])
        assert pem_path.parent == key_dir and (pem_path.stat().st_mode & 0o777) == 0o600
        cfg = Configuration(host=printed["REST"])
        cfg.api_key_id = printed["API key id"]
        cfg.private_key_pem = pem_path.read_text()
        assert KalshiClient(cfg).get_balance().balance == 1_000_000
    finally:
        out = stop(proc)
    assert "PRIVATE KEY" not in out


def test_cli_rejects_unpaired_keys() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kalshiflow.exchange", "--api-key-id", "abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--api-public-key" in result.stderr
