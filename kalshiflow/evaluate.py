"""``python -m kalshiflow.evaluate``: evaluate a model or baseline (see kalshiflow/rl/evaluate.py).

    python -m kalshiflow.evaluate --policy model:current --data synthetic:edge:41-60 --episodes 64 --json

Prints a readable summary (or ONE JSON object with ``--json``), writes a report folder
(summary.json, episodes.jsonl, equity.png, actions.png; default reports/eval/<time>-<policy>/)
and an ``evaluations`` row (unless ``--no-db``). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from kalshiflow.config import PROJECT_ROOT, ConfigError

__all__ = ["main", "write_report"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kalshiflow.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", required=True,
                   help="model:<version> | model:current | baseline:hold | baseline:random | "
                        "baseline:<name> | constant:<action>")
    p.add_argument("--data", required=True, help="synthetic[:<scenario>]:<seeds> | session:<ids> | static")
    p.add_argument("--split", default="all", choices=("all", "train", "validation"),
                   help="which time split of DATA (default all: pass held-out seeds/sessions as DATA)")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="episode selection seed (same seed = same episodes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", metavar="DIR", help="report folder (default reports/eval/<time>-<policy>)")
    p.add_argument("--models-dir", help="registry folder (default <repo>/models)")
    p.add_argument("--config", help="train config whose [env] baselines use (default configs/train.toml)")
    p.add_argument("--set", action="append", default=[], metavar="env.KEY=VALUE", help="env override")
    p.add_argument("--no-db", action="store_true", help="do not write the evaluations row")
    p.add_argument("--progress", action="store_true", help="progress bar even when stderr is not a terminal")
    return p.parse_args(argv)


def _env_settings(args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """EnvConfig fields: a model's manifest env (so the schema matches), else the train config's."""
    from kalshiflow.rl.registry import Registry
    from kalshiflow.rl.train import load_train_config

    sets = [s for s in args.set]
    bad = [s for s in sets if not s.startswith("env.")]
    if bad:
        raise ConfigError(f"--set only takes env.* keys here, got {bad}")
    cfg = load_train_config(args.config, sets)
    env = msgspec.to_builtins(cfg.env)
    version = None
    if args.policy.startswith("model:"):
        registry = Registry(args.models_dir)
        version = registry.resolve(args.policy)
        manifest_env = dict(registry.manifest(version).env)
        overridden = {s.partition("=")[0].split(".", 1)[1].split(".")[0] for s in sets}
        env = {**manifest_env, **{k: v for k, v in env.items() if k in overridden}}
    return env, version


def main(argv: list[str] | None = None) -> int:
    import torch

    from kalshiflow.rl.env import make_observer
    from kalshiflow.rl.evaluate import EvalRequest, data_spec, make_policy, run_evaluation, summarize

    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)  # small batches: one thread is fastest and does not fight other processes
    try:
        env, version = _env_settings(args)
        request = EvalRequest(data=args.data, split=args.split, episodes=args.episodes, seed=args.seed,
                              env=env, models_dir=args.models_dir or "")
        policy = make_policy(f"model:{version}" if version else args.policy, request)
    except (ConfigError, ValueError, KeyError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = make_observer(request.env_config()).table.names
    progress = args.progress or sys.stderr.isatty()
    results = run_evaluation(policy, request, progress=progress)
    summary = {"policy": args.policy, "model_version": version, "data": args.data, "split": args.split,
               "seed": args.seed, **summarize(results, names)}
    report = Path(args.report) if args.report else _default_report_dir(args.policy)
    write_report(report, summary, results, names)
    summary["report_dir"] = str(report)
    if not args.no_db:
        from kalshiflow.rl.registry import record_evaluation, run_db

        evaluation_id = run_db(lambda db: record_evaluation(
            db, policy=args.policy, model_version=version, data_spec=data_spec(request), metrics=summary,
            report_path=str(report)))
        summary["evaluation_id"] = str(evaluation_id)
    print(json.dumps(_clean(summary), sort_keys=True) if args.json else _readable(summary), flush=True)
    return 0


def _default_report_dir(policy: str) -> Path:
    from kalshiflow.rl.registry import utc_now

    stamp = utc_now().strftime("%Y%m%dT%H%M%S")
    return PROJECT_ROOT / "reports" / "eval" / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', policy)}"


def _clean(value: Any) -> Any:
    """NaN/inf -> null so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _readable(s: dict[str, Any]) -> str:
    def row(key: str, fmt: str = "+.3f") -> str:
        ci = s.get(f"{key}_ci")
        v = s.get(key)
        if v is None:
            return f"  {key:<18} -"
        tail = f"   95% CI [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else ""
        return f"  {key:<18} {v:{fmt}}{tail}"

    lines = [f"{s['policy']} on {s['data']} ({s['split']}): {s['episodes']} episodes, {s['steps']:,} steps",
             row("pnl"), row("fees", ".3f"), row("trades", ".2f"), row("non_hold_fraction", ".3f"),
             row("win_rate", ".3f"), row("max_drawdown", ".3f"), row("sharpe", "+.3f"),
             f"  ship criteria      non-HOLD > 20%: {s['ship_criteria']['non_hold_gt_20pct']}   "
             f"win rate > 30%: {s['ship_criteria']['win_rate_gt_30pct']}",
             f"  report             {s.get('report_dir', '-')}"]
    return "\n".join(lines)


def write_report(folder: Path, summary: dict[str, Any], results: list[Any], names: tuple[str, ...]) -> None:
    """summary.json, episodes.jsonl and two plots (matplotlib Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(_clean(summary), indent=2, sort_keys=True) + "\n")
    with open(folder / "episodes.jsonl", "w") as fh:
        for r in results:
            fh.write(msgspec.json.encode(r).decode() + "\n")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if results:
        longest = max(len(r.equity) for r in results)
        curves = np.array([r.equity + [r.equity[-1] if r.equity else 0.0] * (longest - len(r.equity))
                           for r in results])
        for c in curves[:20]:
            ax.plot(c, color="tab:blue", alpha=0.15, linewidth=0.8)
        steps = np.arange(longest)
        ax.fill_between(steps, np.quantile(curves, 0.1, axis=0), np.quantile(curves, 0.9, axis=0),
                        color="tab:blue", alpha=0.15, label="10-90% of episodes")
        ax.plot(steps, curves.mean(axis=0), color="tab:blue", linewidth=2, label="mean")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(title=f"Equity (PnL, $) - {summary['policy']} on {summary['data']}", xlabel="decision step",
           ylabel="PnL ($)")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(folder / "equity.png", dpi=110)
    plt.close(fig)

    counts = summary.get("actions", {})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [n for n in names if counts.get(n)] or ["hold"]
    total = max(1, sum(counts.values()))
    ax.bar(range(len(labels)), [counts.get(n, 0) / total for n in labels], color="tab:orange")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set(title=f"Action histogram - {summary['policy']}", ylabel="share of steps")
    fig.tight_layout()
    fig.savefig(folder / "actions.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
