"""The latent ("true") probability of one market: a logit random walk with jumps.

Why a two-point martingale step: a plain Gaussian walk in logit space is *not* a martingale in
probability space (E[sigmoid(x + e)] != sigmoid(x) away from 1/2), so prices quoted around it
would drift predictably and hand the RL agent a free edge in the "driftless" scenario. Each step
instead moves the logit by +h or -h with the probability q that makes E[p'] = p exactly:

    q = (p - sigmoid(x - h)) / (sigmoid(x + h) - sigmoid(x - h))

Jumps use the same rule with a heavy-tailed |h|. Sums of such steps look like a Gaussian walk in
logit (central limit), keep p in (0, 1), and p is an exact martingale for any step sizes, so the
settlement result drawn as Bernoulli(p_close) has P(yes) = p_open.

Determinism independent of who asks when: the diffusion draws come from one stream consumed one
per step, jump times/sizes from another consumed in time order, the result from a third. Querying
the value at different times (or a user trading) never changes the path.
"""

from __future__ import annotations

import math
import random

from kalshiflow.exchange.generator.config import LatentConfig, Scenario

_X_LIMIT = 30.0  # |logit| cap: p within 1e-13 of 0/1; only guards exp() overflow


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def martingale_up_probability(x: float, h: float) -> float:
    """Probability of +h (vs -h) that keeps sigmoid(x) a martingale."""
    lo = sigmoid(x - h)
    hi = sigmoid(x + h)
    if hi - lo <= 1e-300:  # saturated: any q keeps p (numerically) unchanged
        return 0.5
    return (sigmoid(x) - lo) / (hi - lo)


class LatentProcess:
    """Latent probability of one market between open and close, stepped on demand.

    ``value(t)`` advances the process to ``t`` (never backwards) and returns p. Steps happen on
    the fixed grid open_time + k * step_s; jumps at Poisson times. ``next_jump_time`` lets the
    generator schedule the market's reaction (bursts, requotes) at the jump itself.
    """

    __slots__ = (
        "cfg", "scenario", "open_time", "close_time", "x", "x_anchor", "t", "_next_step",
        "next_jump_time", "_step_rng", "_jump_rng", "_result_rng", "_base_h", "_ou_keep",
        "jumps", "_lifetime",
    )

    def __init__(
        self,
        cfg: LatentConfig,
        scenario: Scenario,
        open_time: float,
        close_time: float,
        x0: float,
        step_seed: int,
        jump_seed: int,
        result_seed: int,
    ) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.open_time = open_time
        self.close_time = close_time
        self._lifetime = max(close_time - open_time, 1e-9)
        self.x = x0
        self.x_anchor = x0  # the edge scenario reverts toward the opening value
        self.t = open_time
        self._next_step = open_time + cfg.step_s
        self._step_rng = random.Random(step_seed)
        self._jump_rng = random.Random(jump_seed)
        self._result_rng = random.Random(result_seed)
        vol = cfg.edge_vol_per_sqrt_hour if scenario == "edge" else cfg.vol_per_sqrt_hour
        self._base_h = vol * math.sqrt(cfg.step_s / 3600.0)
        # OU: fraction of the deviation from the anchor kept after one step.
        self._ou_keep = 0.5 ** (cfg.step_s / cfg.edge_half_life_s) if cfg.edge_half_life_s > 0 else 1.0
        self.jumps = 0
        self.next_jump_time = self._draw_jump_time(open_time)

    @property
    def p(self) -> float:
        return sigmoid(self.x)

    def value(self, t: float) -> float:
        """Advance to time t (clamped to [t, close]) and return the latent probability."""
        if self.scenario == "static":
            return sigmoid(self.x)
        end = min(t, self.close_time)
        while True:
            step_t = self._next_step
            jump_t = self.next_jump_time
            if step_t <= jump_t:
                if step_t > end:
                    break
                self._step(step_t)
            else:
                if jump_t > end:
                    break
                self._jump(jump_t)
        if end > self.t:
            self.t = end
        return sigmoid(self.x)

    def _ramp(self, t: float) -> float:
        """Volatility multiplier: rises toward close so prices converge on the outcome."""
        tau = self.cfg.close_ramp_tau_s
        if tau <= 0 or self.scenario == "edge":
            return 1.0
        remaining = max(self.close_time - t, 0.0)
        return min(self.cfg.close_ramp_max, math.sqrt(self._lifetime / (remaining + tau)))

    def _step(self, step_t: float) -> None:
        x = self.x
        if self.scenario == "edge":
            # Predictable pull toward the anchor: the documented, exploitable edge.
            x = self.x_anchor + (x - self.x_anchor) * self._ou_keep
        h = self._base_h * self._ramp(step_t)
        q = martingale_up_probability(x, h)
        x = x + h if self._step_rng.random() < q else x - h
        self.x = max(-_X_LIMIT, min(_X_LIMIT, x))
        self.t = step_t
        self._next_step = step_t + self.cfg.step_s

    def _jump(self, jump_t: float) -> None:
        cfg = self.cfg
        rng = self._jump_rng
        # Student-t magnitude: heavy tails (a few huge moves, many small ones), capped.
        size = min(abs(rng.gauss(0.0, 1.0) / math.sqrt(rng.gammavariate(cfg.jump_tail_df / 2, 2.0)
                                                       / cfg.jump_tail_df)) * cfg.jump_scale, cfg.jump_max)
        q = martingale_up_probability(self.x, size)
        self.x = max(-_X_LIMIT, min(_X_LIMIT, self.x + size if rng.random() < q else self.x - size))
        self.t = max(self.t, jump_t)
        self.jumps += 1
        self.next_jump_time = self._draw_jump_time(jump_t)

    def _draw_jump_time(self, after: float) -> float:
        rate = self.cfg.jumps_per_hour / 3600.0
        if rate <= 0 or self.scenario == "static":
            return math.inf
        t = after + self._jump_rng.expovariate(rate)
        return t if t < self.close_time else math.inf

    def settle(self) -> bool:
        """Advance to close and draw the result: True (YES) with probability p_close."""
        p = self.value(self.close_time)
        return self._result_rng.random() < p
