"""``python -m kalshiflow.bench <name> [--json] [options]``: dispatch to a registered benchmark."""

from __future__ import annotations

import sys

from kalshiflow.bench import BENCHMARKS, resolve

USAGE = "usage: python -m kalshiflow.bench <name> [--json] [options]   (names: {names})"


def main(argv: list[str]) -> int:
    names = ", ".join(sorted(BENCHMARKS))
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.format(names=names))
        print("run `python -m kalshiflow.bench <name> --help` for a benchmark's options")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; known: {names}", file=sys.stderr)
        return 2
    return resolve(name)(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
