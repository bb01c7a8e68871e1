"""The risk gate's day survives a restart: the loss stop cannot be bypassed by crashing."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kalshiflow.market.prices import MONEY_SCALE
from kalshiflow.trading.risk import InvalidTransition, Mode, RiskGate
from kalshiflow.trading.risk_day import RiskDay, RiskDayError, RiskDayStore, record_of, restore, risk_day_path
from tests.trading.test_risk import Clock, cfg, intent, state

DOLLAR = MONEY_SCALE


def restarted(gate: RiskGate, clock: Clock, tmp_path: Path) -> RiskGate:
    """Save ``gate``'s day as the Trader does, then build the gate a restarted Trader would."""
    store = RiskDayStore(tmp_path / "risk.json")
    store.save(record_of(gate))
    fresh = RiskGate(gate.config, clock)
    rec = RiskDayStore(tmp_path / "risk.json").load()
    assert rec is not None
    restore(fresh, rec)
    return fresh


def test_loss_before_a_restart_still_counts_after_it(tmp_path: Path) -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    gate.evaluate(state(clock, value=1000 * DOLLAR))
    gate.evaluate(state(clock, value=970 * DOLLAR))  # 3 % down: trading on
    assert gate.mode is Mode.ACTIVE
    clock.t += 60
    after = restarted(gate, clock, tmp_path)
    assert after.start_value == 1000 * DOLLAR
    # Without the saved day, 970 would become the new start and the stop would never trigger.
    actions = after.evaluate(state(clock, value=950 * DOLLAR))
    assert after.mode is Mode.HALTED and after.loss_latched and actions


def test_a_latched_loss_stop_stays_latched_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    gate = RiskGate(cfg(), clock)
    gate.evaluate(state(clock, value=1000 * DOLLAR))
    gate.evaluate(state(clock, value=900 * DOLLAR))
    assert gate.loss_latched
    after = restarted(gate, clock, tmp_path)
    assert after.mode is Mode.HALTED and after.loss_latched
    assert not after.check(intent(1), state(clock, value=1100 * DOLLAR)).allowed
    with pytest.raises(InvalidTransition):
        after.resume()


def test_volume_is_kept_and_a_new_day_starts_afresh_but_a_kill_stands(tmp_path: Path) -> None:
    clock = Clock()
    gate = RiskGate(cfg(daily_volume_cap_dollars="100.00"), clock)
    gate.evaluate(state(clock, value=1000 * DOLLAR))
    gate.record_fill(99 * DOLLAR)
    after = restarted(gate, clock, tmp_path)
    assert after.volume == 99 * DOLLAR
    after.kill("operator pressed the button")
    clock.t += 86_400  # next UTC day
    next_day = restarted(after, clock, tmp_path)
    assert next_day.volume == 0 and next_day.start_value is None and not next_day.loss_latched
    assert next_day.mode is Mode.HALTED and "operator pressed the button" in next_day.mode_reason
    next_day.resume()
    assert record_of(next_day).killed is None


def test_store_writes_only_changes_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = risk_day_path(tmp_path / "risk", "demo", "key/with spaces")
    assert path.parent == tmp_path / "risk" and path.name == "demo-key_with_spaces.json"
    store = RiskDayStore(path)
    assert store.load() is None
    rec = RiskDay(day=5, start_value=7, volume=3, loss_latched=False)
    assert store.save(rec) and not store.save(rec)
    assert store.save(msgspec.structs.replace(rec, volume=4))
    assert not list(path.parent.glob("*.tmp*"))
    path.write_bytes(b'{"day": 5, "start_value": ')
    with pytest.raises(RiskDayError, match="unreadable"):
        RiskDayStore(path).load()
    path.write_bytes(msgspec.json.encode(msgspec.structs.replace(rec, version=99)))
    with pytest.raises(RiskDayError, match="version 99"):
        RiskDayStore(path).load()


@given(start=st.integers(1, 10**10), before=st.integers(0, 10**10), after=st.integers(0, 10**10))
@settings(max_examples=200, deadline=None)
def test_a_restart_never_loosens_the_loss_stop(start: int, before: int, after: int) -> None:
    """Same account values with or without a restart in between -> the same verdict."""
    clock = Clock()
    straight = RiskGate(cfg(), clock)
    for v in (start, before, after):
        straight.evaluate(state(clock, value=v))
    gate = RiskGate(cfg(), clock)
    gate.evaluate(state(clock, value=start))
    gate.evaluate(state(clock, value=before))
    again = RiskGate(cfg(), clock)
    restore(again, record_of(gate))
    again.evaluate(state(clock, value=after))
    assert (again.mode, again.loss_latched) == (straight.mode, straight.loss_latched)
