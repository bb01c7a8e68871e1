"""Small REAL model versions with a predictable choice, for trader tests and the latency benchmark.

:func:`write_model_version` makes a version with the serving team's
:func:`kalshiflow.serving.testing.write_random_version` (the exact RLModule class and network
training builds, a registry manifest with the schema hash) and, given ``prefer``, rewrites its
output layer: weights zeroed, bias ranking the named actions, so the greedy policy picks the most
preferred action the mask allows (the masking is the module's own). The PolicyServer loads it
through ``load_policy`` like any trained version, schema check included.

Nothing here is used by the production path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kalshiflow.rl.registry import Registry

__all__ = ["CHURN", "TAKER", "write_model_version"]

# Always has an order working or being cancelled: join the YES bid with 1 contract, else the NO
# bid, and cancel whatever rests (cancel_all is masked while nothing rests). Every decision of
# this policy sends one REST call, which is what the latency benchmark measures.
CHURN: tuple[str, ...] = ("cancel_all", "buy_yes_join_1", "buy_no_join_1")
# Crosses the spread back and forth: loses spread + fees on every round trip (loss-stop tests).
TAKER: tuple[str, ...] = ("sell_yes_take_10", "sell_no_take_10", "buy_yes_take_10", "buy_no_take_10")


def write_model_version(registry: Registry, env: Mapping[str, Any] | None = None, *,
                        prefer: Sequence[str] = (), seed: int = 0, schema_hash: str | None = None,
                        promote: bool = False) -> str:
    """Create ``models/<next version>/`` and return its name.

    ``env``: EnvConfig fields (``sizes`` and ``max_position`` define the schema). ``schema_hash``:
    record this hash instead of the real one (a model the server must refuse). ``promote``: make
    it current, forced, as an operator would (the registry's pointer; no evaluation gate).
    """
    from kalshiflow.serving.testing import write_random_version

    version = write_random_version(registry, seed=seed, schema_hash=schema_hash, env=dict(env or {}))
    if prefer:
        _prefer(registry, version, prefer)
    if promote:
        registry.set_current(version, reason="test model", forced=True)
    return version


def _prefer(registry: Registry, version: str, prefer: Sequence[str]) -> None:
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from kalshiflow.rl.actions import ActionTable

    manifest = registry.manifest(version)
    path = str(registry.path(version) / manifest.module_path)
    module = RLModule.from_checkpoint(path)
    names = ActionTable(tuple(manifest.env.get("sizes", ActionTable().sizes))).names
    bias = torch.zeros(len(names))
    for rank, name in enumerate(prefer):
        bias[names.index(name)] = 10.0 * (len(prefer) - rank)
    head = module.pi.net.mlp[0]  # type: ignore[attr-defined]  # the policy head's only layer
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(bias)
    module.save_to_path(path)
