"""Write small, real, untrained model versions into a registry folder (tests, drills, demos).

A version made here is laid out exactly like one from ``python -m kalshiflow.train``: the same
RLModule class and network settings (kalshiflow.rl.train), saved where the manifest's
``module_path`` points, so ``kalshiflow.rl.policy.load_policy`` and the PolicyServer load it with
the production code path. Only the weights are random (seeded) and there is no training log.
"""

from __future__ import annotations

import msgspec

from kalshiflow.rl.registry import MODULE_SUBPATH, Manifest, Registry, utc_now

__all__ = ["write_random_version"]


def write_random_version(registry: Registry, *, seed: int = 0, schema_hash: str | None = None,
                         env: dict[str, object] | None = None) -> str:
    """Reserve the next version, save a seeded random policy in it, write its manifest -> version.

    ``schema_hash`` overrides the hash the manifest records (default: what the running code
    builds for ``env``), which is how a test makes a model the server must refuse.
    """
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.rllib.examples.rl_modules.classes.action_masking_rlm import ActionMaskingTorchRLModule

    from kalshiflow.rl.env import EnvConfig, make_observer, spaces_for
    from kalshiflow.rl.features import SCHEMA_VERSION
    from kalshiflow.rl.train import PPOSettings

    config = msgspec.convert(env or {}, EnvConfig)
    observer = make_observer(config)
    obs_space, act_space = spaces_for(observer, flat=False)
    ppo = PPOSettings()
    spec = RLModuleSpec(module_class=ActionMaskingTorchRLModule, observation_space=obs_space,
                        action_space=act_space,
                        model_config={"fcnet_hiddens": list(ppo.hidden), "fcnet_activation": ppo.activation,
                                      "head_fcnet_hiddens": [], "vf_share_layers": False})
    torch.manual_seed(seed)
    module = spec.build()
    version, out = registry.reserve()
    module.save_to_path(str(out / MODULE_SUBPATH))
    registry.write_manifest(Manifest(
        version=version, created_at=utc_now().isoformat(), schema_hash=schema_hash or observer.schema_hash,
        schema_version=SCHEMA_VERSION, module_path=MODULE_SUBPATH, env=msgspec.to_builtins(config),
        metrics={"note": f"random weights, seed {seed}: not trained"}))
    return version
