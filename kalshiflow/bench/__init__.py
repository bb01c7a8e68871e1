"""Benchmarks: ``python -m kalshiflow.bench <name> [--json] [...]``.

Each benchmark measures our path and its physical limit (or a baseline) in the same run and reports
the ratio, because shared machines are noisy (DESIGN.md §5). A benchmark is a module with
``main(argv: list[str]) -> int`` that parses its own options (``--json`` included) and prints one
result. Register one by adding a line to ``BENCHMARKS``; modules are imported only when chosen, so
a cheap benchmark never pays for Ray or torch imports.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping

BENCHMARKS: dict[str, str] = {
    # name -> "module:function"
    "book": "kalshiflow.bench.book:main",
    "train": "kalshiflow.bench.train:main",
    "exchange": "kalshiflow.bench.exchange:main",
    "ingest": "kalshiflow.bench.ingest:main",
    "env": "kalshiflow.bench.env:main",
    "latency": "kalshiflow.bench.latency:main",
}


def resolve(name: str) -> Callable[[list[str]], int]:
    """The entry point registered under ``name``; KeyError if there is none."""
    module_name, _, function_name = BENCHMARKS[name].partition(":")
    module = importlib.import_module(module_name)
    entry: Callable[[list[str]], int] = getattr(module, function_name or "main")
    return entry


def emit(result: Mapping[str, object], as_json: bool, summary: str) -> None:
    """Print the result: one JSON object with --json, else a readable line."""
    print(json.dumps(result, sort_keys=True) if as_json else summary, flush=True)
