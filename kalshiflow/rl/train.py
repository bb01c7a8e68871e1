"""``python -m kalshiflow.train``: PPO (RLlib, new API stack) on synthetic or recorded markets.

    python -m kalshiflow.train [--config configs/train.toml] [--data synthetic:edge:1-40]
        [--timesteps N] [--env-runners K] [--set ppo.lr=3e-4] [--no-db] [--models-dir DIR]

One readable loop (CleanRL style, reference-systems §3.3): load the config -> reserve
``models/<version>/`` -> build the PPO algorithm -> ``algo.train()`` until the step budget is
spent, printing and logging fixed-name metrics every iteration -> save the RLlib checkpoint ->
evaluate greedily on the held-out validation split (time-based: the data's LAST markets) against
HOLD -> write ``manifest.json`` (last: its presence marks a complete version) -> ``models`` row.

The reward is the env's: change of marked account value in dollars, fees included. Nothing here
adds to it -- no exploration bonus, no reward for acting (prior-system-lessons §4.6, §8.5).

Metric names (stable; train_log.jsonl and the console line use them):
  charts/episode_return_mean  charts/episode_len_mean  charts/episodes  charts/env_steps
  charts/SPS (env steps per wall second, this iteration, learning included)
  charts/non_hold_fraction  charts/actions (histogram: action name -> count this iteration)
  losses/entropy  losses/approx_kl  losses/policy_loss  losses/vf_loss  losses/explained_variance
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
from ray.rllib.callbacks.callbacks import RLlibCallback

from kalshiflow.config import PROJECT_ROOT, ConfigError
from kalshiflow.rl.data import DataSpecError, split_refs
from kalshiflow.rl.env import EnvConfig, make_observer, make_pool
from kalshiflow.rl.registry import CHECKPOINT, MODULE_SUBPATH, Manifest, Registry, utc_now

__all__ = ["PPOSettings", "RunSettings", "RunnerSettings", "TrainConfig", "build_algorithm",
           "load_train_config", "main", "train"]

DEFAULT_TRAIN_CONFIG = PROJECT_ROOT / "configs" / "train.toml"
ENV_NAME = "kalshiflow-market"


class PPOSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PPO hyper-parameters; configs/train.toml says why each differs from the original plan."""

    lr: float = 1e-4
    entropy_coeff: float = 0.1
    clip_param: float = 0.2
    minibatch_size: int = 256
    train_batch_size: int = 2048  # env steps per PPO iteration ("rollout")
    num_epochs: int = 10
    gamma: float = 0.99
    lambda_: float = 0.95
    vf_loss_coeff: float = 0.5
    vf_clip_param: float = 10.0
    grad_clip: float = 0.5
    use_kl_loss: bool = True
    kl_coeff: float = 0.2
    kl_target: float = 0.01
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"


class RunnerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    num_env_runners: int = 2  # 0 = sample in the driver process
    num_envs_per_env_runner: int = 16
    rollout_fragment_length: int = 0  # 0 = "auto" (train batch / runners / envs)
    # "vector_entry_point": the env's own batched KalshiVectorEnv (one Python loop, no per-env
    # wrappers); "sync" = gymnasium's SyncVectorEnv, which halves throughput for cheap envs.
    vectorize: Literal["vector_entry_point", "sync", "async"] = "vector_entry_point"
    num_cpus: int = 0  # for ray.init; 0 = os.cpu_count()
    sample_timeout_s: float = 600.0


class RunSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    timesteps: int = 1_000_000
    seed: int = 0
    models_dir: str = ""  # "" = <repo>/models
    eval_episodes: int = 32  # greedy held-out evaluation at the end (0 = skip)
    torch_threads: int = 1  # intra-op threads: >1 spins against Ray's processes on 2 cores


class TrainConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    env: EnvConfig = EnvConfig()  # data spec, window, sizes, ... (``split`` is set by training)
    ppo: PPOSettings = PPOSettings()
    runners: RunnerSettings = RunnerSettings()
    run: RunSettings = RunSettings()


def _literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_train_config(path: str | Path | None = None, sets: list[str] | None = None) -> TrainConfig:
    """TOML file (default configs/train.toml) + ``section.key[.sub]=value`` overrides, validated."""
    chosen = Path(path) if path else DEFAULT_TRAIN_CONFIG
    try:
        data: dict[str, Any] = tomllib.loads(chosen.read_text()) if chosen.is_file() or path else {}
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{chosen}: {err}") from None
    for item in sets or []:
        key, eq, raw = item.partition("=")
        parts = key.strip().split(".")
        if not eq or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a table")
        node[parts[-1]] = _literal(raw.strip())
    try:
        return msgspec.convert(data, TrainConfig)
    except (msgspec.ValidationError, ConfigError) as err:
        raise ConfigError(f"{chosen} (+ --set): {err}") from None


# ---------------------------------------------------------------------------- the algorithm


def build_algorithm(cfg: TrainConfig, env_name: str = ENV_NAME,
                    env_config: dict[str, Any] | None = None) -> Any:
    """The RLlib PPO Algorithm for ``cfg`` (new API stack; masked-logits RLModule)."""
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule

    p, r = cfg.ppo, cfg.runners
    train_env = msgspec.structs.replace(cfg.env, split="train")
    config = (
        PPOConfig()
        .environment(env_name,
                     env_config=msgspec.to_builtins(train_env) if env_config is None else env_config)
        .env_runners(num_env_runners=r.num_env_runners, num_envs_per_env_runner=r.num_envs_per_env_runner,
                     gym_env_vectorize_mode=r.vectorize,
                     rollout_fragment_length=r.rollout_fragment_length or "auto",
                     sample_timeout_s=r.sample_timeout_s)
        # GPU when there is one: the learner is the only GPU-worthy part (env runners are CPU).
        .learners(num_learners=0, num_gpus_per_learner=1 if torch.cuda.is_available() else 0)
        .training(lr=p.lr, entropy_coeff=p.entropy_coeff, clip_param=p.clip_param,
                  minibatch_size=p.minibatch_size, train_batch_size_per_learner=p.train_batch_size,
                  num_epochs=p.num_epochs, gamma=p.gamma, lambda_=p.lambda_, vf_loss_coeff=p.vf_loss_coeff,
                  vf_clip_param=p.vf_clip_param, grad_clip=p.grad_clip, use_kl_loss=p.use_kl_loss,
                  kl_coeff=p.kl_coeff, kl_target=p.kl_target)
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=ActionMaskingTorchRLModule,
            model_config={"fcnet_hiddens": list(p.hidden), "fcnet_activation": p.activation,
                          "head_fcnet_hiddens": [], "vf_share_layers": False}))
        .callbacks(ActionStats)
        .debugging(seed=cfg.run.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=100)
    )
    return config.build_algo()


class ActionStats(RLlibCallback):
    """Counts every sampled action once (``on_sample_end`` sees each step of each chunk)."""

    def on_sample_end(self, *, env_runner: Any = None, metrics_logger: Any = None, samples: Any = None,
                      **kwargs: Any) -> None:
        if metrics_logger is None or not samples:
            return
        chunks = [np.asarray(episode.get_actions(), dtype=np.int64) for episode in samples]
        acts = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        for action, count in enumerate(np.bincount(acts).tolist()):
            if count:
                metrics_logger.log_value(("action_counts", str(action)), count, reduce="sum")


def iteration_metrics(result: dict[str, Any], names: tuple[str, ...], wall_s: float,
                      steps_before: int) -> dict[str, Any]:
    """The fixed-name metrics of one ``algo.train()`` result (see the module docstring)."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    steps = int(runners.get("num_env_steps_sampled_lifetime", steps_before))
    counts = runners.get("action_counts", {})
    # An action not sampled this iteration reduces to NaN (RLlib's empty "sum"): skip it.
    hist = {names[int(k)]: int(v) for k, v in sorted(counts.items(), key=lambda kv: int(kv[0]))
            if int(k) < len(names) and math.isfinite(float(v)) and float(v) > 0}
    total = sum(hist.values())

    def num(value: Any) -> float | None:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) else None

    return {
        "iteration": int(result.get("training_iteration", 0)),
        "charts/env_steps": steps,
        "charts/SPS": round((steps - steps_before) / wall_s, 1) if wall_s > 0 else None,
        "charts/episode_return_mean": num(runners.get("episode_return_mean")),
        "charts/episode_len_mean": num(runners.get("episode_len_mean")),
        "charts/episodes": int(runners.get("num_episodes", 0) or 0),
        "charts/non_hold_fraction": round(1.0 - hist.get(names[0], 0) / total, 4) if total else None,
        "charts/actions": hist,
        "losses/entropy": num(learner.get("entropy")),
        "losses/approx_kl": num(learner.get("mean_kl_loss")),
        "losses/policy_loss": num(learner.get("policy_loss")),
        "losses/vf_loss": num(learner.get("vf_loss")),
        "losses/explained_variance": num(learner.get("vf_explained_var")),
    }


def _line(m: dict[str, Any]) -> str:
    def f(key: str, fmt: str) -> str:
        v = m.get(key)
        return "-" if v is None else format(v, fmt)

    top = sorted(m["charts/actions"].items(), key=lambda kv: -kv[1])[:3]
    return (f"it {m['iteration']:>4} steps {m['charts/env_steps']:>9,} SPS {f('charts/SPS', ',.0f'):>7} "
            f"return {f('charts/episode_return_mean', '+.3f'):>8} "
            f"non-hold {f('charts/non_hold_fraction', '.2f')} "
            f"entropy {f('losses/entropy', '.3f')} kl {f('losses/approx_kl', '.4f')} "
            f"ev {f('losses/explained_variance', '.2f')} top {', '.join(f'{k}:{v}' for k, v in top)}")


# ---------------------------------------------------------------------------- the run


def data_manifest(env: EnvConfig) -> dict[str, Any]:
    """Which markets trained and which are held out (the split is by time: validation is later)."""
    refs = make_pool(msgspec.structs.replace(env, split="all")).refs  # loads a recorded session once
    out: dict[str, Any] = {"spec": env.data, "kind": env.data.partition(":")[0],
                           "validation_fraction": env.validation_fraction}
    if out["kind"] == "synthetic":
        out["scenario"] = env.data.split(":")[1] if env.data.count(":") == 2 else "driftless"
    for split in ("train", "validation"):
        part = split_refs(refs, split, env.validation_fraction)
        keys = sorted({r.key[0] for r in part}, key=lambda k: str(k).zfill(24))  # numeric order for seeds
        out[split] = {"markets": len(part), "keys": keys,
                      "time_range": [min(r.time for r in part), max(r.time for r in part)]}
    return out


def train(cfg: TrainConfig, *, registry: Registry | None = None, use_db: bool = True,
          progress: bool = True) -> Manifest:
    """Train one version end to end (see the module docstring); returns its manifest."""
    import ray
    import torch
    from ray.tune.registry import register_env
    from tqdm import tqdm

    from kalshiflow.rl.env import rllib_env_creator

    torch.set_num_threads(cfg.run.torch_threads)
    registry = registry or Registry(cfg.run.models_dir or None)
    observer = make_observer(cfg.env)
    names = observer.table.names
    data = data_manifest(cfg.env)  # fails fast on a bad data spec, before Ray starts
    version, out = registry.reserve()
    print(f"training {version} on {cfg.env.data} ({data['train']['markets']} train / "
          f"{data['validation']['markets']} validation markets) -> {out}", flush=True)

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(num_cpus=cfg.runners.num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    register_env(ENV_NAME, rllib_env_creator)
    algo = build_algorithm(cfg)
    history: list[dict[str, Any]] = []
    steps, t_start = 0, time.perf_counter()
    try:
        with open(out / "train_log.jsonl", "w") as log, \
                tqdm(total=cfg.run.timesteps, unit="step", disable=not progress, file=sys.stderr) as bar:
            while steps < cfg.run.timesteps:
                t0 = time.perf_counter()
                result = algo.train()
                m = iteration_metrics(result, names, time.perf_counter() - t0, steps)
                history.append(m)
                log.write(json.dumps(m) + "\n")
                log.flush()
                bar.update(m["charts/env_steps"] - steps)
                steps = m["charts/env_steps"]
                (bar.write if progress else print)(_line(m))
        algo.save_to_path(str(out / CHECKPOINT))
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()
    wall = time.perf_counter() - t_start

    metrics: dict[str, Any] = {"env_steps": steps, "iterations": len(history), "wall_s": round(wall, 1),
                               "sps_overall": round(steps / wall, 1) if wall else None, "final": history[-1]}
    manifest = Manifest(version=version, created_at=utc_now().isoformat(), schema_hash=observer.schema_hash,
                        schema_version=_schema_version(), module_path=MODULE_SUBPATH,
                        env=msgspec.to_builtins(msgspec.structs.replace(cfg.env, split="train")),
                        data=data, config=msgspec.to_builtins(cfg), metrics=metrics, code=_code_info())
    if cfg.run.eval_episodes > 0:
        validation = _validate(manifest, out, cfg, progress=progress)
        manifest = msgspec.structs.replace(manifest, metrics={**metrics, "validation": validation})
    registry.write_manifest(manifest)
    if use_db:
        from kalshiflow.rl.registry import record_model, run_db

        run_db(lambda db: record_model(db, manifest, out))
    return manifest


def _validate(manifest: Manifest, out: Path, cfg: TrainConfig, *, progress: bool) -> dict[str, Any]:
    """Greedy evaluation of the fresh checkpoint and of HOLD on the held-out validation split."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from kalshiflow.rl.evaluate import EvalRequest, make_policy, run_evaluation, summarize
    from kalshiflow.rl.policy import ModelPolicy

    module: Any = RLModule.from_checkpoint(str(out / MODULE_SUBPATH))
    module.eval()  # a TorchRLModule is a torch nn.Module
    model = ModelPolicy(manifest.version, manifest, module)
    request = EvalRequest(data=cfg.env.data, split="validation", episodes=cfg.run.eval_episodes,
                          seed=cfg.run.seed, env=manifest.env)
    summary: dict[str, Any] = {"data": cfg.env.data, "split": "validation", "episodes": cfg.run.eval_episodes}
    for name, policy in (("model", model), ("baseline:hold", make_policy("baseline:hold", request))):
        s = summarize(run_evaluation(policy, request, progress=progress))
        summary[name] = {k: s[k] for k in ("pnl", "pnl_ci", "non_hold_fraction", "win_rate", "trades")}
    print(f"validation: model pnl {summary['model']['pnl']:+.3f} {summary['model']['pnl_ci']}  "
          f"hold {summary['baseline:hold']['pnl']:+.3f}  "
          f"non-hold {summary['model']['non_hold_fraction']:.2f}",
          flush=True)
    return summary


def _schema_version() -> int:
    from kalshiflow.rl.features import SCHEMA_VERSION

    return SCHEMA_VERSION


def _code_info() -> dict[str, Any]:
    import subprocess

    import ray
    import torch

    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"git_commit": commit, "ray": str(ray.__version__), "torch": str(torch.__version__),
            "python": sys.version.split()[0]}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kalshiflow.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help=f"TOML config (default {DEFAULT_TRAIN_CONFIG.relative_to(PROJECT_ROOT)})")
    p.add_argument("--data", help="data spec: synthetic[:<scenario>]:<seeds> | session:<ids> | static")
    p.add_argument("--timesteps", type=int, help="env steps to train for (run.timesteps)")
    p.add_argument("--env-runners", type=int, help="parallel EnvRunner actors (runners.num_env_runners)")
    p.add_argument("--seed", type=int, help="run.seed")
    p.add_argument("--models-dir", help="registry folder (default <repo>/models)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    p.add_argument("--no-db", action="store_true", help="do not write the models table row")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics lines still print)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sets = list(args.set)
    for flag, key in ((args.data, "env.data"), (args.timesteps, "run.timesteps"),
                      (args.env_runners, "runners.num_env_runners"), (args.seed, "run.seed")):
        if flag is not None:
            sets.append(f"{key}={json.dumps(flag)}")
    if args.models_dir:
        sets.append(f"run.models_dir={json.dumps(args.models_dir)}")
    try:
        cfg = load_train_config(args.config, sets)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        manifest = train(cfg, use_db=not args.no_db, progress=not args.no_progress)
    except DataSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = Registry(cfg.run.models_dir or None).path(manifest.version)
    metrics = {k: v for k, v in manifest.metrics.items() if k != "final"}
    print(json.dumps({"version": manifest.version, "path": str(path), "metrics": metrics}), flush=True)
    return 0
