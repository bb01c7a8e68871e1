"""Load a trained model version for inference: the one entry point the live PolicyServer uses.

    policy = load_policy("current", expected_schema_hash=observer.schema_hash)
    actions = policy.act(obs_batch, mask_batch)        # (B, F) float32, (B, A) {0,1} -> (B,) int64

What is loaded is the torch RLModule RLlib trained (``RLModule.from_checkpoint`` on the
checkpoint's policy module), not a re-implementation of it, so the masking and the network are
exactly the training ones. Before any weights are read, the schema hash stored in the manifest is
compared with the hash the running code builds (features + action table + position cap); a
mismatch raises :class:`~kalshiflow.rl.features.SchemaMismatchError` (prior-system-lessons §8.3:
a 52-input model silently fed a different 52 features).

Inference is greedy by default (argmax of the masked logits): the live trader and the evaluation
must be reproducible. ``greedy=False`` samples from the masked distribution instead.

Torch intra-op threads: a batch of a few observations through a 64x64 MLP is faster on one
thread, and extra OpenMP threads spin against Ray's processes on small machines, so callers on
the hot path should ``torch.set_num_threads(1)`` (the CLIs do).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from kalshiflow.rl.features import SCHEMA_VERSION, SchemaMismatchError, check_schema
from kalshiflow.rl.registry import Manifest, Registry

__all__ = ["ModelPolicy", "SchemaMismatchError", "code_schema_hash", "load_policy"]


def code_schema_hash(env_settings: dict[str, Any]) -> str:
    """The schema hash the RUNNING code builds for an env configured like ``env_settings``."""
    import msgspec

    from kalshiflow.rl.env import EnvConfig, make_observer

    return make_observer(msgspec.convert(env_settings, EnvConfig)).schema_hash


class ModelPolicy:
    """A loaded model version. ``act`` is thread-compatible (no state between calls)."""

    def __init__(self, version: str, manifest: Manifest, module: Any, device: str = "cpu") -> None:
        self.version = version
        self.name = f"model:{version}"
        self.manifest = manifest
        self.schema_hash = manifest.schema_hash
        self.module = module
        self.device = torch.device(device)
        space = module.observation_space  # Dict(observations=Box(F), action_mask=Box(A))
        self.n_features = int(space["observations"].shape[0])
        self.n_actions = int(space["action_mask"].shape[0])

    def _logits(self, obs: np.ndarray, mask: np.ndarray) -> torch.Tensor:
        obs = np.asarray(obs, dtype=np.float32)
        mask = np.asarray(mask, dtype=np.float32)
        if obs.ndim == 1:
            obs, mask = obs[None], mask[None]
        if obs.shape[1] != self.n_features or mask.shape[1] != self.n_actions:
            raise ValueError(f"{self.name} expects obs (B, {self.n_features}) and mask "
                             f"(B, {self.n_actions}), got {obs.shape} and {mask.shape}")
        batch = {"obs": {"observations": torch.from_numpy(obs).to(self.device),
                         "action_mask": torch.from_numpy(mask).to(self.device)}}
        with torch.inference_mode():
            out = self.module.forward_inference(batch)
        return out["action_dist_inputs"]

    def act(self, obs: np.ndarray, mask: np.ndarray, new_episode: np.ndarray | None = None, *,
            greedy: bool = True, rng: np.random.Generator | None = None) -> np.ndarray:
        """Actions (int64, shape (B,)) for a batch; masked actions are never chosen.

        ``new_episode`` is accepted for interface parity with the baselines and ignored: the
        network is feed-forward, everything it needs is in the observation.
        """
        logits = self._logits(obs, mask)
        if greedy:
            return logits.argmax(dim=-1).cpu().numpy().astype(np.int64)
        probs = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)
        gen = rng or np.random.default_rng()
        u = gen.random((probs.shape[0], 1))
        return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1).astype(np.int64)

    def probabilities(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked action probabilities, (B, A) float32: what the UI shows as the policy's view."""
        return torch.softmax(self._logits(obs, mask), dim=-1).cpu().numpy()


def load_policy(ref: str = "current", models_dir: str | Path | None = None, *,
                expected_schema_hash: str | None = None, device: str = "cpu") -> ModelPolicy:
    """Load ``ref`` (``v0003``, ``model:v0003`` or ``current``) from the registry folder.

    ``expected_schema_hash``: the hash of the observation/action schema the caller will feed (the
    live trader passes its Observer's); default: what the running code builds for the env settings
    recorded in the manifest. Either way a mismatch raises SchemaMismatchError before loading.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    registry = Registry(models_dir)
    version = registry.resolve(ref)
    manifest = registry.manifest(version)
    if manifest.schema_version != SCHEMA_VERSION and expected_schema_hash is None:
        raise SchemaMismatchError(f"model {version} was trained with features v{manifest.schema_version}; "
                                  f"this code builds v{SCHEMA_VERSION}; retrain it")
    want = expected_schema_hash or code_schema_hash(manifest.env)
    check_schema(manifest.schema_hash, want, what=f"model {version}")
    module: Any = RLModule.from_checkpoint(str(registry.path(version) / manifest.module_path))
    module.eval()  # a TorchRLModule is a torch nn.Module
    if device != "cpu":
        module.to(device)
    return ModelPolicy(version, manifest, module, device)
