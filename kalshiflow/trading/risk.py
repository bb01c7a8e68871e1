"""The risk gate: every order passes here, and only what it approves can reach the exchange.

Pure code: no I/O, time from an injected ``clock`` (epoch seconds). docs/risk.md has every rule.

Bypass-proof by construction: the policy proposes an :class:`OrderIntent`, :meth:`RiskGate.check`
answers a :class:`Verdict`, and only an allowed verdict carries an :class:`ApprovedOrder`. The
order router gets the wire request from :meth:`RiskGate.redeem` alone, which refuses anything
this gate did not issue, anything already sent, anything older than ``approval_ttl_s`` and
anything the *current* mode forbids (an approval made just before a kill switch is void).

Modes (:data:`TRANSITIONS`): ACTIVE -> what the limits allow; REDUCING -> only orders that shrink
a position; HALTED -> nothing but cancels and the flatten orders the gate generated itself.
Days are UTC days of the clock (volume, start-of-day value and the loss-stop latch reset at the
first call of a new day; a halted gate stays halted until an operator resumes it).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from enum import StrEnum
from fractions import Fraction

import msgspec

from kalshiflow.config import RiskConfig
from kalshiflow.market.fees import max_order_fee
from kalshiflow.market.prices import CENT, MONEY_SCALE, PRICE_SCALE, QTY_SCALE, Price, Qty, parse_money
from kalshiflow.market.types import Action, Side, TimeInForce
from kalshiflow.protocol import rest_models as rm

# The gate's messages live with the package's other shared types; re-exported here.
from kalshiflow.trading import (
    ApprovedOrder,
    BookStatus,
    CancelAll,
    Flatten,
    OpenOrder,
    OrderIntent,
    RiskAction,
    RiskState,
)

__all__ = [
    "ApprovedOrder", "BookStatus", "CancelAll", "Flatten", "InvalidTransition", "Mode", "ModeEvent",
    "OrderIntent", "Reason", "RiskAction", "RiskGate", "RiskState", "RiskStats", "RiskViolation",
    "TRANSITIONS", "Transition", "Verdict",
]


class Mode(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class ModeEvent(StrEnum):
    REDUCE = "reduce"  # operator
    RESUME = "resume"  # operator; refused while the day's loss stop is latched
    KILL = "kill"  # kill switch
    LOSS_WARNING = "loss_warning"  # reducing_loss_fraction reached
    LOSS_STOP = "loss_stop"  # daily_loss_stop_fraction reached
    SHUTDOWN = "shutdown"


A, R, H = Mode.ACTIVE, Mode.REDUCING, Mode.HALTED
TRANSITIONS: dict[tuple[Mode, ModeEvent], Mode] = {
    (A, ModeEvent.REDUCE): R, (A, ModeEvent.LOSS_WARNING): R,
    (R, ModeEvent.RESUME): A, (R, ModeEvent.REDUCE): R, (R, ModeEvent.LOSS_WARNING): R,
    (H, ModeEvent.RESUME): A, (H, ModeEvent.REDUCE): R,
    **{(m, e): H for m in Mode for e in (ModeEvent.KILL, ModeEvent.LOSS_STOP, ModeEvent.SHUTDOWN)},
}


class Reason(StrEnum):
    OK = "ok"
    INVALID_INTENT = "invalid_intent"
    HALTED = "halted"
    REDUCING = "reducing_only"
    NOT_CONNECTED = "not_connected"
    NO_BOOK = "no_book"
    INVALID_BOOK = "invalid_book"
    STALE_BOOK = "stale_book"
    POSITION_CAP = "position_cap"
    EXPOSURE_CAP = "exposure_cap"
    OPEN_ORDERS = "open_orders_cap"
    DAILY_VOLUME = "daily_volume_cap"
    DAILY_LOSS = "daily_loss_stop"
    INSUFFICIENT_CASH = "insufficient_cash"
    RATE_LIMIT = "rate_limit"


class InvalidTransition(ValueError):
    """A mode change the state machine does not allow."""


class RiskViolation(RuntimeError):
    """The router tried to send something the gate did not (or no longer does) approve."""


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    reason: Reason
    explanation: str
    intent: OrderIntent
    adjusted: OrderIntent | None = None  # set when the gate shrank the order to fit a limit
    approved: ApprovedOrder | None = None
    actions: tuple[RiskAction, ...] = ()  # what this call triggered (e.g. loss stop -> cancel+flatten)


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    at: float
    before: Mode
    after: Mode
    event: ModeEvent
    reason: str


class RiskStats(msgspec.Struct, frozen=True, kw_only=True):
    mode: Mode
    mode_reason: str
    day: int  # UTC day number (epoch days)
    approvals: int
    refusals: dict[str, int]
    adjusted: dict[str, int]
    redeemed: int
    void_redeems: dict[str, int]
    limits: dict[str, float | int | str]
    usage: dict[str, float | int]
    transitions: tuple[Transition, ...]
    last_refusal: str | None


def _exact(x: float) -> Fraction:
    return Fraction(str(x))  # the decimal the config says, not its binary approximation


class RiskGate:
    """One per Trader (per account). Not thread-safe; call from one event loop."""

    def __init__(self, config: RiskConfig, clock: Callable[[], float], *,
                 start_of_day_value: int | None = None) -> None:
        self.config = config
        self.clock = clock
        self.mode = Mode.ACTIVE
        self.mode_reason = "start"
        self.cap = Qty(config.max_position_per_market * QTY_SCALE)
        self.max_exposure = parse_money(config.max_total_exposure_dollars)
        self.volume_cap = parse_money(config.daily_volume_cap_dollars)
        self.slippage = parse_money(config.flatten_slippage_dollars) * PRICE_SCALE // MONEY_SCALE
        self.rate = max(0.0, config.max_orders_per_s)
        self.burst = float(config.order_burst or max(1, math.ceil(self.rate)))
        self._tokens = self.burst
        self._refill_at = clock()
        self.day = self._day(clock())
        # Restarted mid-day? Pass the persisted start-of-day value, or today's loss is forgotten.
        self.start_value: int | None = start_of_day_value
        self.volume = 0  # filled today (Money)
        self.loss_latched = False
        self._issued: dict[str, ApprovedOrder] = {}
        self._pending: dict[str, tuple[ApprovedOrder, float]] = {}  # coid -> (approval, since)
        self._n: dict[str, dict[str, int]] = {"refusals": {}, "adjusted": {}, "void": {}}
        self.approvals = self.redeemed = 0
        self.transitions: list[Transition] = []
        self.last_refusal: str | None = None
        self._last_loss = 0

    # ---------------------------------------------------------------- mode machine

    def _go(self, event: ModeEvent, reason: str) -> bool:
        after = TRANSITIONS.get((self.mode, event))
        if after is None:
            raise InvalidTransition(f"{event.value} is not allowed in mode {self.mode.value}")
        if event is ModeEvent.RESUME and self.loss_latched:
            raise InvalidTransition("the daily loss stop is latched until the next UTC day")
        changed = after is not self.mode
        self.transitions.append(Transition(at=self.clock(), before=self.mode, after=after, event=event,
                                           reason=reason))
        del self.transitions[:-50]
        self.mode, self.mode_reason = after, reason
        return changed

    def reduce(self, reason: str = "operator") -> None:
        self._go(ModeEvent.REDUCE, reason)

    def resume(self, reason: str = "operator") -> None:
        self._go(ModeEvent.RESUME, reason)

    def kill(self, reason: str = "kill switch", state: RiskState | None = None) -> tuple[RiskAction, ...]:
        """HALTED; cancel everything; flatten too if ``flatten_on_kill`` (needs ``state``)."""
        self._go(ModeEvent.KILL, reason)
        flatten = self.config.flatten_on_kill and state is not None
        return self._halt_actions(reason, state if flatten else None)

    def shutdown(self, reason: str = "shutdown") -> tuple[RiskAction, ...]:
        self._go(ModeEvent.SHUTDOWN, reason)
        return (CancelAll(reason=reason),)

    def latch_loss_stop(self, reason: str) -> None:
        """HALTED with today's loss stop latched (a restarted Trader restoring its day)."""
        self.loss_latched = True
        self._go(ModeEvent.LOSS_STOP, reason)

    def connection_lost(self, reason: str = "connection lost") -> tuple[RiskAction, ...]:
        """Cancel every resting order; new orders are refused while ``state.connected`` is False."""
        return (CancelAll(reason=reason),)

    def _halt_actions(self, reason: str, state: RiskState | None) -> tuple[RiskAction, ...]:
        actions: list[RiskAction] = [CancelAll(reason=reason)]
        if state is not None:
            actions.append(Flatten(reason=reason, orders=self._flatten_orders(state)))
        return tuple(actions)

    def _flatten_orders(self, state: RiskState) -> tuple[ApprovedOrder, ...]:
        out = []
        now = self.clock()
        for ticker, qty in sorted(state.positions.items()):
            if not qty:
                continue
            held = Side.YES if qty > 0 else Side.NO
            book = state.books.get(ticker)
            bid = (book.yes_bid if held is Side.YES else book.no_bid) if book is not None else None
            # Whole cents are valid on every grid; an IOC at the floor still only takes real bids.
            limit = max(CENT, ((bid or 0) - self.slippage) // CENT * CENT)
            req = rm.OrderRequest(ticker=ticker, side=held, action=Action.SELL, count=Qty(abs(qty)),
                                  price=Price(limit), client_order_id=f"kf-flat-{uuid.uuid4().hex[:20]}",
                                  time_in_force=TimeInForce.IOC.value, reduce_only=True)
            out.append(self._issue(req, now, reducing=True, emergency=True))
        return tuple(out)

    # ---------------------------------------------------------------- day, loss, tokens

    @staticmethod
    def _day(t: float) -> int:
        return int(t // 86_400)

    def evaluate(self, state: RiskState) -> tuple[RiskAction, ...]:
        """Housekeeping every call runs (and the Trader should run on its clock even when idle):
        UTC day rollover, loss warning, loss stop. Returns the actions a transition triggered."""
        self._roll()
        if self.start_value is None and state.account_value > 0:  # 0 = portfolio not loaded yet
            self.start_value = state.account_value
        if self.start_value is None:
            return ()
        loss = self._last_loss = self.start_value - state.account_value
        if loss <= 0 or self.start_value <= 0:
            return ()
        start, stop = self.start_value, _exact(self.config.daily_loss_stop_fraction)
        text = f"daily loss {loss / MONEY_SCALE:.2f}$ of {start / MONEY_SCALE:.2f}$ at start of day"
        # Exact rational comparison: a loss of exactly 5 % stops; 4.9999 % does not.
        if not self.loss_latched and stop > 0 and loss * stop.denominator >= stop.numerator * start:
            self.loss_latched = True
            self._go(ModeEvent.LOSS_STOP, f"{text} >= {stop}")
            flatten = state if self.config.flatten_on_loss_stop else None
            return self._halt_actions(f"{text} >= {stop}", flatten)
        warn = _exact(self.config.reducing_loss_fraction)
        if self.mode is Mode.ACTIVE and warn > 0 and loss * warn.denominator >= warn.numerator * start:
            self._go(ModeEvent.LOSS_WARNING, f"{text} >= {warn}")
        return ()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._refill_at) * self.rate)
        self._refill_at = now

    def _roll(self) -> None:
        today = self._day(self.clock())
        if today != self.day:
            self.day, self.volume, self.start_value, self.loss_latched = today, 0, None, False

    def record_fill(self, notional: int) -> None:
        """A fill of ours (``TradeFill.notional``): counts toward today's traded volume."""
        self._roll()
        self.volume += notional

    # ---------------------------------------------------------------- checks

    def check(self, intent: OrderIntent, state: RiskState) -> Verdict:
        actions = self.evaluate(state)
        verdict = self._check(intent, state)
        if not verdict.allowed:
            self._n["refusals"][verdict.reason] = self._n["refusals"].get(verdict.reason, 0) + 1
            self.last_refusal = f"{verdict.reason}: {verdict.explanation}"
        elif verdict.adjusted is not None:
            self._n["adjusted"][verdict.reason] = self._n["adjusted"].get(verdict.reason, 0) + 1
        return msgspec.structs.replace(verdict, actions=actions) if actions else verdict

    def _no(self, intent: OrderIntent, reason: Reason, why: str) -> Verdict:
        return Verdict(allowed=False, reason=reason, explanation=why, intent=intent)

    def _resting(self, state: RiskState, now: float) -> list[OpenOrder]:
        """Resting orders, plus approvals the portfolio does not show yet (counted as resting)."""
        known = state.accounted_client_order_ids | {o.client_order_id for o in state.open_orders}
        for coid, (_, since) in list(self._pending.items()):
            if coid in known or now - since > self.config.pending_order_ttl_s:
                del self._pending[coid]
        extra = [OpenOrder(order_id=a.approval_id, client_order_id=coid, ticker=a.request.ticker,
                           side=a.request.side, action=a.request.action, price=a.request.price or 0,
                           remaining=a.request.count) for coid, (a, _) in self._pending.items()]
        return list(state.open_orders) + extra

    def _check(self, intent: OrderIntent, state: RiskState) -> Verdict:
        cfg, now, q = self.config, self.clock(), intent.count
        if not intent.ticker or q <= 0 or not 0 < intent.price < PRICE_SCALE:
            return self._no(intent, Reason.INVALID_INTENT, f"count {q} / price {intent.price} out of range")
        if self.mode is Mode.HALTED:
            halted_by_loss = self.transitions and self.transitions[-1].event is ModeEvent.LOSS_STOP
            reason = Reason.DAILY_LOSS if halted_by_loss else Reason.HALTED
            return self._no(intent, reason, f"trading halted: {self.mode_reason}")
        if not state.connected:
            return self._no(intent, Reason.NOT_CONNECTED, "exchange connection lost")
        book = state.books.get(intent.ticker)
        if book is None:
            return self._no(intent, Reason.NO_BOOK, f"no order book for {intent.ticker}")
        if not book.valid:
            return self._no(intent, Reason.INVALID_BOOK, "book invalid (sequence gap, no snapshot yet)")
        age = now - book.updated_at
        if age > cfg.stale_book_s:
            return self._no(intent, Reason.STALE_BOOK, f"book {age:.1f}s old > {cfg.stale_book_s}s")
        resting = self._resting(state, now)
        pos = state.positions.get(intent.ticker, 0)
        bought, bp = intent.bought_side, intent.bought_price
        sign = 1 if bought is Side.YES else -1
        mine = [o for o in resting if o.ticker == intent.ticker]
        same = sum(o.remaining for o in mine if o.bought_side is bought)
        # Contracts of the other side this order can net, after resting orders claimed theirs.
        nettable = max(0, -sign * pos - same)
        rooms: list[tuple[int, Reason, str]] = []
        reducing = q <= nettable
        if self.mode is Mode.REDUCING:
            rooms.append((nettable, Reason.REDUCING, f"reducing only: {nettable / QTY_SCALE:g} reducible"))
        worst = sign * pos + same  # long `bought` if every resting order on this side fills
        rooms.append((self.cap - worst, Reason.POSITION_CAP,
                      f"position cap {self.cap // QTY_SCALE}: worst case already {worst / QTY_SCALE:g}"))
        exposure = sum(state.position_costs.values()) + sum(o.bought_price * o.remaining for o in resting)
        rooms.append((nettable + max(0, self.max_exposure - exposure) // bp, Reason.EXPOSURE_CAP,
                      f"exposure {exposure / MONEY_SCALE:.2f}$ of {self.max_exposure / MONEY_SCALE:.2f}$"))
        used = self.volume + sum(o.bought_price * o.remaining for o in resting)
        rooms.append((max(0, self.volume_cap - used) // bp, Reason.DAILY_VOLUME,
                      f"daily volume {used / MONEY_SCALE:.2f}$ of {self.volume_cap / MONEY_SCALE:.2f}$"))
        cash_room = nettable + max(0, state.available_cash - max_order_fee(bp, q)) // bp
        rooms.append((cash_room, Reason.INSUFFICIENT_CASH,
                      f"available cash {state.available_cash / MONEY_SCALE:.2f}$"))
        room, reason, why = min(rooms, key=lambda r: r[0])
        adjusted: OrderIntent | None = None
        if room < q:
            step = QTY_SCALE if q % QTY_SCALE == 0 else 1  # keep whole-contract orders whole
            fit = max(0, room) // step * step
            if not cfg.resize_to_fit or fit <= 0:
                return self._no(intent, reason, why)
            adjusted = msgspec.structs.replace(intent, count=fit)
            q = fit
            reducing = q <= nettable
        rests = intent.time_in_force is TimeInForce.GTC
        if rests and len(resting) >= cfg.max_open_orders:
            return self._no(intent, Reason.OPEN_ORDERS, f"{len(resting)} open >= {cfg.max_open_orders}")
        self._refill()
        if self._tokens < 1.0:
            return self._no(intent, Reason.RATE_LIMIT, f"over {self.rate:g} orders/s (burst {self.burst:g})")
        self._tokens -= 1.0
        final = adjusted or intent
        req = rm.OrderRequest(ticker=final.ticker, side=final.side, action=final.action,
                              count=Qty(final.count), price=Price(final.price),
                              time_in_force=final.time_in_force.value,
                              post_only=final.post_only or None, reduce_only=final.reduce_only or None,
                              client_order_id=final.client_order_id or f"kf-{uuid.uuid4().hex[:24]}")
        approved = self._issue(req, now, reducing=reducing)
        self._pending[req.client_order_id] = (approved, now)
        self.approvals += 1
        text = "approved"
        if adjusted is not None:
            text = f"resized {intent.count / QTY_SCALE:g} -> {q / QTY_SCALE:g}: {why}"
        return Verdict(allowed=True, reason=reason if adjusted else Reason.OK, explanation=text,
                       intent=intent, adjusted=adjusted, approved=approved)

    def _issue(self, req: rm.OrderRequest, now: float, *, reducing: bool,
               emergency: bool = False) -> ApprovedOrder:
        a = ApprovedOrder(approval_id=uuid.uuid4().hex, request=req, issued_at=now,
                          expires_at=now + self.config.approval_ttl_s, reducing=reducing, emergency=emergency)
        if len(self._issued) > 256:  # approvals the router never redeemed: void anyway once expired
            self._issued = {k: v for k, v in self._issued.items() if v.expires_at >= now}
        self._issued[a.approval_id] = a
        return a

    # ---------------------------------------------------------------- the router's side

    def redeem(self, approved: ApprovedOrder) -> rm.OrderRequest:
        """The ONLY way to get a sendable request: once, in time, if the mode still allows it."""
        mine = self._issued.pop(approved.approval_id, None)
        why: tuple[str, str] | None = None
        if mine is None or mine != approved:
            why = ("unknown", "not issued by this gate, or already sent")
        elif self.clock() > mine.expires_at:
            why = ("expired", f"approval expired ({self.config.approval_ttl_s}s)")
        elif not mine.emergency and self.mode is Mode.HALTED:
            why = ("halted", f"halted since approval: {self.mode_reason}")
        elif not mine.emergency and self.mode is Mode.REDUCING and not mine.reducing:
            why = ("reducing", "reducing-only since approval")
        if why is not None:
            self._n["void"][why[0]] = self._n["void"].get(why[0], 0) + 1
            if mine is not None:
                self._pending.pop(mine.request.client_order_id, None)
            raise RiskViolation(why[1])
        assert mine is not None
        self.redeemed += 1
        return mine.request

    def order_result(self, approved: ApprovedOrder, order: rm.Order | None) -> None:
        """The router reports what the exchange did. A rejected order (None), or one that ended
        without any fill, stops counting as pending at once; others wait until the portfolio
        shows them (``accounted_client_order_ids`` / open orders) or ``pending_order_ttl_s``."""
        coid = approved.request.client_order_id
        if order is None or (order.fill_count == 0 and order.remaining_count == 0):
            self._pending.pop(coid, None)

    # ---------------------------------------------------------------- reporting

    def stats(self) -> RiskStats:
        self._refill()
        cfg = self.config
        limits: dict[str, float | int | str] = {
            "max_position_per_market": cfg.max_position_per_market,
            "max_total_exposure_dollars": cfg.max_total_exposure_dollars,
            "max_orders_per_s": cfg.max_orders_per_s, "order_burst": self.burst,
            "max_open_orders": cfg.max_open_orders, "daily_volume_cap_dollars": cfg.daily_volume_cap_dollars,
            "daily_loss_stop_fraction": cfg.daily_loss_stop_fraction, "stale_book_s": cfg.stale_book_s,
        }
        usage: dict[str, float | int] = {
            "daily_volume": self.volume, "start_of_day_value": self.start_value or 0,
            "daily_loss": self._last_loss, "tokens": self._tokens, "pending_orders": len(self._pending),
            "loss_latched": int(self.loss_latched),
        }
        return RiskStats(mode=self.mode, mode_reason=self.mode_reason, day=self.day, approvals=self.approvals,
                         refusals=dict(self._n["refusals"]), adjusted=dict(self._n["adjusted"]),
                         redeemed=self.redeemed, void_redeems=dict(self._n["void"]), limits=limits,
                         usage=usage, transitions=tuple(self.transitions), last_refusal=self.last_refusal)
