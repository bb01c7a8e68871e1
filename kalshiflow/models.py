"""``python -m kalshiflow.models list|show|promote|rollback``: the model registry from the shell.

    python -m kalshiflow.models list [--all]            versions, current marked, validation PnL
    python -m kalshiflow.models show v0003              the manifest
    python -m kalshiflow.models promote v0003 [--force] [--episodes 32] [--data SPEC]
    python -m kalshiflow.models rollback

``promote`` evaluates the version, the current model and the hold/random baselines on the same
episodes of the version's held-out validation data and switches ``models/current`` only when the
version wins against every one of them outside the 95 % CI (kalshiflow.rl.registry.promote);
``--force`` switches anyway and records that it was forced. A model whose feature/action schema
differs from the running code's is refused, forced or not. Exit code 1 when not promoted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from kalshiflow.rl.registry import Registry, RegistryError, promote, rollback


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kalshiflow.models", description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", help="registry folder (default <repo>/models)")
    p.add_argument("--no-db", action="store_true", help="do not mirror status changes into PostgreSQL")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list versions")
    ls.add_argument("--all", action="store_true", help="include unfinished folders (no manifest)")
    ls.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="print a manifest")
    show.add_argument("version", help="vNNNN or current")
    pr = sub.add_parser("promote", help="make a version current if it beats current + baselines")
    pr.add_argument("version")
    pr.add_argument("--force", action="store_true", help="promote even when the gate says no")
    pr.add_argument("--episodes", type=int, default=32)
    pr.add_argument("--data", help="evaluate on this spec (default: the version's validation split)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--json", action="store_true")
    sub.add_parser("rollback", help="make the previously promoted version current again")
    return p.parse_args(argv)


def _list(registry: Registry, show_all: bool, as_json: bool) -> None:
    current = registry.current()
    rows: list[dict[str, Any]] = []
    for version in registry.versions(complete_only=not show_all):
        try:
            m = registry.manifest(version)
        except RegistryError:
            rows.append({"version": version, "complete": False})
            continue
        val = m.metrics.get("validation", {}).get("model", {})
        rows.append({"version": version, "complete": True, "current": version == current,
                     "created_at": m.created_at, "data": m.data.get("spec"), "schema": m.schema_hash[:12],
                     "env_steps": m.metrics.get("env_steps"), "validation_pnl": val.get("pnl"),
                     "validation_non_hold": val.get("non_hold_fraction")})
    if as_json:
        print(json.dumps({"current": current, "versions": rows}))
        return
    if not rows:
        print(f"no models in {registry.root}")
    for r in rows:
        if not r["complete"]:
            print(f"  {r['version']}  (unfinished: no manifest)")
            continue
        pnl = "-" if r["validation_pnl"] is None else f"{r['validation_pnl']:+.3f}"
        print(f"{'*' if r['current'] else ' '} {r['version']}  {r['created_at'][:19]}  {r['data']:<28} "
              f"steps {r['env_steps'] or 0:>10,}  val pnl {pnl:>8}  schema {r['schema']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    registry = Registry(args.models_dir)
    use_db = not args.no_db
    try:
        if args.command == "list":
            _list(registry, args.all, args.json)
        elif args.command == "show":
            version = registry.resolve(args.version)
            print(msgspec.json.format(msgspec.json.encode(registry.manifest(version)), indent=2).decode())
        elif args.command == "promote":
            import torch

            torch.set_num_threads(1)
            result = promote(registry, args.version, force=args.force, episodes=args.episodes, data=args.data,
                             seed=args.seed, use_db=use_db, progress=sys.stderr.isatty())
            if args.json:
                print(msgspec.json.encode(result).decode())
            else:
                for rival, c in result.comparisons.items():
                    print(f"  vs {rival:<18} PnL diff {c['diff_mean']:+.3f}  95% CI [{c['ci_low']:+.3f}, "
                          f"{c['ci_high']:+.3f}]  {'beats' if c['beats'] else 'does not beat'}")
                verdict = ("promoted (forced)" if result.forced else
                           "promoted" if result.promoted else "NOT promoted")
                print(f"{result.version}: {verdict}: {result.reason}")
            return 0 if result.promoted else 1
        elif args.command == "rollback":
            back, gone = rollback(registry, use_db=use_db)
            print(f"rolled back {gone}; current is now {back}")
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # SchemaMismatchError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
