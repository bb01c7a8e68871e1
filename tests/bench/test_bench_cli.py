"""``python -m kalshiflow.bench``: dispatch and the book benchmark's JSON (keys, never timings)."""

from __future__ import annotations

import json
import subprocess
import sys

from kalshiflow.bench import BENCHMARKS, resolve
from kalshiflow.bench.book import generate_stream
from kalshiflow.market.book import OrderBook
from kalshiflow.protocol.market_data import OrderbookFrameDecoder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kalshiflow.bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_book_json_has_the_promised_keys() -> None:
    proc = run_cli("book", "--json", "--deltas", "3000", "--repeat", "1", "--markets", "4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("deltas_per_s", "decode_only_per_s", "ratio", "frames", "targets", "meets_targets"):
        assert key in result
    assert result["frames"] == 3000 and result["markets"] == 4
    assert result["targets"] == {"deltas_per_s": 500_000, "ratio": 0.5}
    assert isinstance(result["meets_targets"], bool)
    assert result["deltas_per_s"] > 0 and result["decode_only_per_s"] > 0 and result["ratio"] > 0


def test_book_readable_line() -> None:
    proc = run_cli("book", "--deltas", "500", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("book: ") and "deltas/s" in proc.stdout


def test_unknown_and_missing_names() -> None:
    proc = run_cli("no-such-bench")
    assert proc.returncode == 2 and "unknown benchmark" in proc.stderr and "book" in proc.stderr
    assert run_cli().returncode == 2
    assert "book" in run_cli("--help").stdout


def test_registry_resolves_lazily() -> None:
    assert "book" in BENCHMARKS
    assert callable(resolve("book"))


def test_generated_stream_is_valid_and_never_goes_negative() -> None:
    stream = generate_stream(5_000, 5, seed=3)
    decoder = OrderbookFrameDecoder()
    books: dict[str, OrderBook] = {}
    for data in stream.snapshots:
        msg = decoder.decode(data).msg
        books[msg.market_ticker] = OrderBook(msg.market_ticker, stream.grids[msg.market_ticker])
        books[msg.market_ticker].apply_snapshot(*decoder.snapshot_levels(msg))  # type: ignore[arg-type]
    seqs = []
    for data in stream.deltas:
        frame = decoder.decode(data)
        seqs.append(frame.seq)
        assert b'"price":' not in data and b'"delta":' not in data  # current fixed-point shape only
        books[frame.msg.market_ticker].apply_delta(*decoder.delta_update(frame.msg))  # type: ignore[arg-type]
        assert not books[frame.msg.market_ticker].is_crossed()
    assert seqs == list(range(len(stream.snapshots) + 1, len(stream.snapshots) + 1 + len(stream.deltas)))
    assert generate_stream(5_000, 5, seed=3).deltas == stream.deltas  # deterministic per seed
