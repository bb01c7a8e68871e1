"""Reference trajectories: the env's fast paths must reproduce, bit for bit, what the env produced
before they existed.

``tests/rl/data/env_trajectories.npz`` holds one 64-bit digest per step (observation, mask,
reward, flags, info) of fixed-seed episodes recorded with the straightforward engine replay
(every recorded event through the Venue, features recomputed each step). Each scenario below is
replayed and compared step by step, so a failure names the first step that differs.

Regenerate ONLY when the env's semantics change on purpose (and say so in the commit):
``python tests/rl/test_env_equivalence.py --write``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from kalshiflow.exchange.replay import InMemoryMarketStream, RecGap, RecordedEvent, RecSnapshot
from kalshiflow.market.prices import grid_by_name
from kalshiflow.market.types import Side
from kalshiflow.rl.baselines import EdgeFade, make_policy
from kalshiflow.rl.data import EpisodePool, StreamFeed, SyntheticConfig, generate_streams
from kalshiflow.rl.env import EnvConfig, KalshiMarketEnv
from kalshiflow.rl.env_batch import make_vector_env

DATA = Path(__file__).parent / "data" / "env_trajectories.npz"
SMALL = SyntheticConfig(markets_per_seed=2, lifetime_min_s=600.0, lifetime_max_s=700.0)
_pools: dict[str, EpisodePool] = {}


def _digest(*parts: Any) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(p.dtype.str.encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, dict):
            for k in sorted(p):
                h.update(k.encode())
                v = p[k]
                h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return int.from_bytes(h.digest(), "little")


def _synth() -> EpisodePool:
    if "synth" not in _pools:
        _pools["synth"] = EpisodePool("synthetic:driftless:0-1", "all", synthetic=SMALL)
    return _pools["synth"]


def _gapped() -> EpisodePool:
    """Seed 0's first market with a feed gap a third of the way in and a re-snapshot at half
    way that disagrees with the book (two levels grew while the feed was blind): the resync path."""
    if "gap" not in _pools:
        stream = generate_streams("driftless", 0, SMALL)[0]
        events: list[RecordedEvent] = list(stream)
        n = len(events)
        feed = StreamFeed(stream.market.ticker, grid_by_name(stream.market.price_level_structure))
        cut, resnap = n // 3, n // 2
        for ev in events[:resnap + 1]:  # the snapshot replaces event resnap: it includes it
            feed.on_event(ev)
        yes = list(feed.book.levels(Side.YES))
        no = list(feed.book.levels(Side.NO))
        if yes:
            yes[-1] = (yes[-1][0], yes[-1][1] + 700)  # the best YES level grew while we were blind
        if no:
            no[0] = (no[0][0], no[0][1] + 300)  # and a deep NO level
        gap_ev = RecGap(seq=events[cut].seq, ts=events[cut].ts, reason="test")
        snap = RecSnapshot(seq=events[resnap].seq, ts=events[resnap].ts, yes=tuple(yes), no=tuple(no))
        out = [*events[:cut], gap_ev, *events[cut + 1:resnap], snap, *events[resnap + 1:]]
        _pools["gap"] = EpisodePool("mem", streams=[InMemoryMarketStream(stream.market, out)])
    return _pools["gap"]


def _static() -> EpisodePool:
    if "static" not in _pools:
        _pools["static"] = EpisodePool("static", "all")
    return _pools["static"]


def _single(pool: Callable[[], EpisodePool], cfg: EnvConfig, seed: int, hold_p: float,
            options: dict[str, Any] | None = None, episodes: int = 1) -> Iterator[int]:
    env = KalshiMarketEnv(cfg, pool())
    rng = np.random.default_rng(seed + 1000)
    for e in range(episodes):
        obs, info = env.reset(seed=seed if e == 0 else None, options=options)
        yield _digest(obs, info)
        done = False
        while not done:
            allowed = np.flatnonzero(obs["action_mask"])
            a = 0 if rng.random() < hold_p else int(rng.choice(allowed))
            obs, r, term, trunc, info = env.step(a)
            yield _digest(a, obs, r, term, trunc, info)
            done = term or trunc


def _bench() -> EpisodePool:
    """Seed 0 of what ``bench env`` runs on (longer, busier markets)."""
    if "bench" not in _pools:
        _pools["bench"] = EpisodePool("synthetic:driftless:0", "all", synthetic=SyntheticConfig())
    return _pools["bench"]


def _vector(pool: Callable[[], EpisodePool], cfg: EnvConfig, n: int, policy: str, steps: int,
            seed: int) -> Iterator[int]:
    env = make_vector_env(cfg, n, pool())
    pol: Any = make_policy(policy, env.observer.table, seed=seed)
    if policy == "baseline:edge":  # a twitchy fade, so that it trades in short driftless windows
        pol = EdgeFade(env.observer.table, entry=0.01, exit=0.005, max_spread=0.1)
    obs, info = env.reset(seed=seed)
    yield _digest(obs, info)
    new = np.ones(n, bool)
    for _ in range(steps):
        actions = pol.act(obs["observations"], obs["action_mask"], new)
        obs, r, term, trunc, info = env.step(actions)
        new = term | trunc
        yield _digest(actions, obs, r, term, trunc, info)


BASE = EnvConfig(data="synthetic:driftless:0-1", split="all", synthetic=SMALL, window_s=400.0,
                 decision_interval_s=2.0)
ENGINE = msgspec.structs.replace(BASE, fast_replay=False)


def _scenarios() -> dict[str, Callable[[], Iterator[int]]]:
    out: dict[str, Callable[[], Iterator[int]]] = {}
    for mode, cfg in (("fast", BASE), ("engine", ENGINE)):
        for seed in (1, 2):
            for hold_p in (0.0, 0.8):
                out[f"single_{mode}_s{seed}_h{hold_p}"] = (
                    lambda cfg=cfg, seed=seed, hold_p=hold_p: _single(_synth, cfg, seed, hold_p))
        out[f"gap_{mode}"] = lambda cfg=cfg: _single(
            _gapped, msgspec.structs.replace(cfg, window_s=900.0, episode_start="open"), 3, 0.5)
    out["single_latency0"] = lambda: _single(_synth, msgspec.structs.replace(BASE, latency_s=0.0), 4, 0.3)
    out["single_offgrid_t0"] = lambda: _single(
        _synth, msgspec.structs.replace(BASE, window_s=301.0), 5, 0.5,
        options={"market": 1, "t0": _synth().market(1).start_ts + 33.3})
    caps = msgspec.structs.replace(BASE, max_position=7, max_open_orders=1, starting_cash=3, sizes=(1, 3))
    out["single_small_caps"] = lambda: _single(_synth, caps, 6, 0.2, episodes=2)
    out["static_random"] = lambda: _single(
        _static, EnvConfig(data="static", split="all", window_s=300.0, decision_interval_s=1.0), 7, 0.0)
    vcfg = msgspec.structs.replace(BASE, window_s=300.0, decision_interval_s=5.0)
    out["vector_random"] = lambda: _vector(_synth, vcfg, 4, "random", 160, 11)
    ecfg = msgspec.structs.replace(vcfg, window_s=600.0, episode_start="open")
    out["vector_edge"] = lambda: _vector(_synth, ecfg, 4, "baseline:edge", 150, 12)
    bcfg = EnvConfig(data="synthetic:driftless:0", split="all", window_s=1800.0, decision_interval_s=5.0)
    out["vector_random_bench"] = lambda: _vector(_bench, bcfg, 8, "random", 200, 14)
    out["vector_hold_bench"] = lambda: _vector(_bench, bcfg, 8, "hold", 200, 15)
    out["vector_edge_bench"] = lambda: _vector(_bench, bcfg, 8, "baseline:edge", 200, 16)
    out["vector_momentum"] = lambda: _vector(_synth, vcfg, 3, "baseline:momentum", 150, 13)
    return out


SCENARIOS = _scenarios()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_trajectory_matches_the_reference(name: str, reference: dict[str, np.ndarray]) -> None:
    want = reference[name]
    got = np.fromiter(SCENARIOS[name](), np.uint64)
    n = min(len(got), len(want))
    diff = np.flatnonzero(got[:n] != want[:n])
    assert not len(diff), f"{name}: first differing step {diff[0]} of {len(want)}"
    assert len(got) == len(want), f"{name}: {len(got)} steps, reference {len(want)}"


def test_reference_covers_trading_and_settlement() -> None:
    """The scenarios exercise what they should (guards against a reference of idle episodes)."""
    env = KalshiMarketEnv(BASE, _synth())
    rng = np.random.default_rng(1001)
    obs, _ = env.reset(seed=1)
    traded, done = 0.0, False
    while not done:
        obs, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        traded, done = info["traded"], term or trunc
    assert traded > 10


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    DATA.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.fromiter(make(), np.uint64) for name, make in sorted(SCENARIOS.items())}
    np.savez_compressed(DATA, **arrays)  # type: ignore[arg-type]
    for name, a in arrays.items():
        print(f"{name}: {len(a)} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
