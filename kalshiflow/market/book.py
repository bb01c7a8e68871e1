"""The L2 order book of one Kalshi market: two bid ladders, pure code, no I/O.

Kalshi books hold bids only. A market has a YES-bid ladder and a NO-bid ladder; a NO bid at q is an
offer to sell YES at 1 - q, so asks are derived from the opposite side's bids. Prices on each ladder
are in that leg's own terms (a NO bid at 0.30 is stored at 3000 ticks, not at 7000).

Layout, chosen for speed (reference-systems.md §2.2: a list indexed by level with a tracked best
index beats every sorted container and per-event numpy):

- each ladder is a plain ``list[int]`` of quantities (hundredths of a contract), indexed by the
  grid's level number (0 = lowest valid price), so a linear-cent book has 99 slots, not 10,001;
- each ladder tracks ``hi``, an upper bound on its best level: every level above ``hi`` is empty.
  A delta raises ``hi`` when it adds above it and otherwise leaves it alone; a best-bid read scans
  down from ``hi`` past emptied levels and stores the result. Reads are O(1) amortised, and the
  hot path never scans (a cancel at the touch is as cheap as any other delta).

Quantities are exact integers. ``mid`` and ``microprice`` return floats for use as *features only*;
money (orders, fills, accounting) never uses them.

``protocol.market_data.OrderbookFrameDecoder.apply_deltas`` inlines ``apply_delta`` (a Python call
per delta costs as much as the update) and so reads ``_yes``/``_no``/``_Ladder`` and the level
tables directly; change them together. A property test checks the two paths agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress, islice

from kalshiflow.market.prices import (
    LINEAR_CENT,
    PRICE_SCALE,
    PriceGrid,
    PriceRange,
    format_price,
    format_qty,
)
from kalshiflow.market.types import Side

__all__ = ["BookError", "OrderBook"]

_YES = Side.YES
_NO = Side.NO


class _LevelTables:
    """Price -> level lookups of one grid, shared by every book on it (1,000 books, one copy)."""

    __slots__ = ("by_ticks", "by_text", "by_complement_text")

    def __init__(self, grid: PriceGrid) -> None:
        # A price is only ever a lookup key here, never stored, so any number equal to a valid
        # tick (an int subclass, a numpy integer, 4200.0) finds the same level; others miss.
        self.by_ticks = {price: level for level, price in enumerate(grid.prices)}
        # Kalshi's canonical 4-decimal text of a price -> its level, and the text of 1 - price ->
        # the level of price (NO levels quoted at YES-equivalent prices, use_yes_price=true). They
        # let the wire fast path resolve a level with one dict lookup instead of parse + lookup.
        self.by_text = {format_price(p): level for level, p in enumerate(grid.prices)}
        self.by_complement_text = {format_price(PRICE_SCALE - p): lv for lv, p in enumerate(grid.prices)}


# A memo of immutable tables derived from a grid, keyed by its definition: not shared state.
_TABLES: dict[tuple[str, tuple[PriceRange, ...]], _LevelTables] = {}


def _tables_for(grid: PriceGrid) -> _LevelTables:
    key = (grid.name, grid.ranges)
    tables = _TABLES.get(key)
    if tables is None:
        tables = _TABLES[key] = _LevelTables(grid)
    return tables


class _Ladder:
    """One side's bids: ``sizes[level]`` in hundredths, and ``hi`` >= the best non-empty level."""

    __slots__ = ("sizes", "hi")

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes
        self.hi = len(sizes) - 1
        self.best_level()

    def best_level(self) -> int:
        """Best non-empty level, or -1; tightens ``hi`` so the next read is O(1)."""
        sizes = self.sizes
        level = self.hi
        while level >= 0 and not sizes[level]:
            level -= 1
        self.hi = level
        return level


class BookError(ValueError):
    """An update that would make the book invalid; the book is left unchanged."""


class OrderBook:
    """Bids-only L2 book of one market on a fixed price grid.

    Prices are integer ticks of $0.0001 in the ladder's own leg terms; sizes and deltas are integer
    hundredths of a contract (``prices.Qty``; exactly ``int``, checked). Zero deltas
    are rejected (``BookError``): Kalshi never sends one, so a zero delta means a broken stream or
    encoder and should surface, not pass silently.

    ``invalid`` is set by the collector via ``invalidate`` after a sequence gap; only
    ``apply_snapshot`` clears it. ``apply_delta`` still works on an invalid book (the owner decides
    whether to apply); readers should check the flag.
    """

    __slots__ = (
        "ticker", "grid", "invalid", "invalid_reason", "_prices",
        "_yes", "_no", "_level_of", "_level_of_text", "_level_of_complement_text",
    )

    def __init__(self, ticker: str, grid: PriceGrid = LINEAR_CENT) -> None:
        self.ticker = ticker
        self.grid = grid
        self._prices = grid.prices  # level -> price ticks
        self.invalid = False
        self.invalid_reason: str | None = None
        tables = _tables_for(grid)
        self._level_of = tables.by_ticks
        self._level_of_text = tables.by_text
        self._level_of_complement_text = tables.by_complement_text
        n = len(grid.prices)
        self._yes = _Ladder([0] * n)
        self._no = _Ladder([0] * n)

    # ------------------------------------------------------------------ updates

    def apply_delta(self, side: Side, price: int, delta: int) -> int:
        """Add ``delta`` (signed hundredths) at ``price`` on ``side``; return the new size."""
        if side is _YES:
            ladder = self._yes
        elif side is _NO:
            ladder = self._no
        else:
            ladder = self._ladder(side)
        try:
            level = self._level_of[price]
        except (KeyError, TypeError):  # off the grid / unhashable
            raise self._delta_error(side, price, delta) from None
        sizes = ladder.sizes
        if type(delta) is not int:  # a float (or numpy) count would poison every later sum
            raise self._delta_error(side, price, delta)
        new = sizes[level] + delta
        if new < 0 or not delta:
            raise self._delta_error(side, price, delta)
        sizes[level] = new
        if level > ladder.hi:  # everything above hi was empty, so this delta was an add
            ladder.hi = level
        return new

    def set_level(self, side: Side, price: int, size: int) -> int:
        """Set the absolute size at ``price`` (0 removes the level); return the previous size."""
        ladder, level = self._locate(side, price)
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BookError(
                f"{self.ticker}: set_level {_side_name(side)} @ {format_price(price)}: "
                f"size must be a non-negative integer, was {size!r}"
            )
        previous = ladder.sizes[level]
        ladder.sizes[level] = size
        if size and level > ladder.hi:
            ladder.hi = level
        return previous

    def apply_snapshot(self, yes: Iterable[tuple[int, int]], no: Iterable[tuple[int, int]]) -> None:
        """Replace both ladders wholesale. Everything is validated before anything is swapped."""
        n = len(self.grid.prices)
        fresh: list[list[int]] = []
        for side, levels in ((_YES, yes), (_NO, no)):
            sizes = [0] * n
            for price, size in levels:
                _, level = self._locate(side, price)
                if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                    raise BookError(
                        f"{self.ticker}: snapshot {side.value} @ {format_price(price)}: "
                        f"size must be a positive integer, was {size!r}"
                    )
                if sizes[level]:
                    raise BookError(
                        f"{self.ticker}: snapshot {side.value} @ {format_price(price)} appears twice "
                        f"(sizes {format_qty(sizes[level])} and {format_qty(size)})"
                    )
                sizes[level] = size
            fresh.append(sizes)
        self._yes = _Ladder(fresh[0])
        self._no = _Ladder(fresh[1])
        self.invalid = False
        self.invalid_reason = None

    def clear(self) -> None:
        """Empty both ladders (an empty market's snapshot)."""
        self.apply_snapshot((), ())

    def invalidate(self, reason: str) -> None:
        """Mark the book untrustworthy (e.g. after a seq gap) until the next snapshot."""
        self.invalid = True
        self.invalid_reason = reason

    # ------------------------------------------------------------------ reads

    def size(self, side: Side, price: int) -> int:
        ladder, level = self._locate(side, price)
        return ladder.sizes[level]

    def best_bid(self, side: Side) -> int | None:
        if side is _YES:
            ladder = self._yes
        elif side is _NO:
            ladder = self._no
        else:
            ladder = self._ladder(side)
        level = ladder.hi
        if level < 0:
            return None
        if not ladder.sizes[level]:  # hi is stale: the touch was emptied since the last read
            level = ladder.best_level()
            if level < 0:
                return None
        return self._prices[level]

    def best_bids(self) -> tuple[int | None, int | None]:
        """(best YES bid, best NO bid): the whole top of book in one call, for per-event readers."""
        yes, no = self._yes, self._no
        y, n = yes.hi, no.hi
        if y >= 0 and not yes.sizes[y]:
            y = yes.best_level()
        if n >= 0 and not no.sizes[n]:
            n = no.best_level()
        prices = self._prices
        return (prices[y] if y >= 0 else None), (prices[n] if n >= 0 else None)

    def best_bid_size(self, side: Side) -> int:
        ladder = self._ladder(side)
        level = ladder.best_level()
        return 0 if level < 0 else ladder.sizes[level]

    def best_ask(self, side: Side) -> int | None:
        """Best price at which ``side`` can be bought now, in that side's terms: 1 - opposite bid."""
        opposite = self.best_bid(_other(side))
        return None if opposite is None else PRICE_SCALE - opposite

    def best_ask_size(self, side: Side) -> int:
        return self.best_bid_size(_other(side))

    def spread(self) -> int | None:
        """YES ask - YES bid in ticks (= 1 - best NO bid - best YES bid); None if a side is empty."""
        yes_bid = self.best_bid(_YES)
        yes_ask = self.best_ask(_YES)
        if yes_bid is None or yes_ask is None:
            return None
        return yes_ask - yes_bid

    def mid(self) -> float | None:
        """YES mid in dollars. A feature, never used for money."""
        yes_bid = self.best_bid(_YES)
        yes_ask = self.best_ask(_YES)
        if yes_bid is None or yes_ask is None:
            return None
        return (yes_bid + yes_ask) / (2 * PRICE_SCALE)

    def microprice(self) -> float | None:
        """Size-weighted YES mid in dollars, leaning toward the thinner side. A feature only."""
        yes_bid = self.best_bid(_YES)
        yes_ask = self.best_ask(_YES)
        if yes_bid is None or yes_ask is None:
            return None
        bid_size = self.best_bid_size(_YES)
        ask_size = self.best_ask_size(_YES)
        return (yes_bid * ask_size + yes_ask * bid_size) / ((bid_size + ask_size) * PRICE_SCALE)

    def levels(self, side: Side) -> list[tuple[int, int]]:
        """Non-empty (price, size) levels, ascending by price (Kalshi's wire order)."""
        prices = self.grid.prices
        return [(prices[i], q) for i, q in enumerate(self._ladder(side).sizes) if q]

    def depth(self, side: Side, n: int) -> list[tuple[int, int]]:
        """Up to ``n`` non-empty (price, size) levels, best first."""
        ladder = self._ladder(side)
        prices = self.grid.prices
        sizes = ladder.sizes
        level = ladder.best_level()
        if level < 0 or n <= 0:
            return []
        # The non-empty levels from the best down, found in C (compress/islice), not a Python loop.
        return [(prices[i], sizes[i]) for i in islice(compress(range(level, -1, -1), sizes[level::-1]), n)]

    def top_levels(self, side: Side, n: int) -> tuple[int, list[int]]:
        """(best bid or 0, sizes of up to ``n`` non-empty levels best first): ``depth`` for readers
        that want the touch and the sizes only (the features' book summary, every step)."""
        ladder = self._yes if side is _YES else self._no if side is _NO else self._ladder(side)
        sizes = ladder.sizes
        level = ladder.hi
        if level >= 0 and not sizes[level]:
            level = ladder.best_level()
        if level < 0:
            return 0, []
        return self._prices[level], list(islice(filter(None, sizes[level::-1]), n))  # the scan in C

    def total_size(self, side: Side) -> int:
        return sum(self._ladder(side).sizes)

    def is_crossed(self) -> bool:
        """True when best YES bid + best NO bid >= $1: those two orders would trade (locked counts)."""
        yes_bid = self.best_bid(_YES)
        no_bid = self.best_bid(_NO)
        return yes_bid is not None and no_bid is not None and yes_bid + no_bid >= PRICE_SCALE

    def is_empty(self) -> bool:
        return self._yes.best_level() < 0 and self._no.best_level() < 0

    # ------------------------------------------------------------------ value semantics

    def copy(self) -> OrderBook:
        other = OrderBook(self.ticker, self.grid)
        other.invalid = self.invalid
        other.invalid_reason = self.invalid_reason
        other._yes = _Ladder(self._yes.sizes.copy())
        other._no = _Ladder(self._no.sizes.copy())
        return other

    def __eq__(self, other: object) -> bool:
        """Same market, same grid, same resting sizes. The validity flag is status, not content."""
        if not isinstance(other, OrderBook):
            return NotImplemented
        return (
            self.ticker == other.ticker
            and self.grid.prices == other.grid.prices
            and self._yes.sizes == other._yes.sizes
            and self._no.sizes == other._no.sizes
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        def fmt(price: int | None) -> str:
            return "-" if price is None else format_price(price)

        flag = " INVALID" if self.invalid else ""
        return (
            f"OrderBook({self.ticker!r}, yes bid {fmt(self.best_bid(_YES))}"
            f" / ask {fmt(self.best_ask(_YES))}{flag})"
        )

    # ------------------------------------------------------------------ helpers (cold path)

    def _ladder(self, side: object) -> _Ladder:
        """The ladder of a Side (or its "yes"/"no" value), or BookError."""
        if side == "yes":  # Side is a str enum: Side.YES == "yes"
            return self._yes
        if side == "no":
            return self._no
        raise BookError(f"{self.ticker}: unknown side {side!r}; expected Side.YES or Side.NO")

    def _locate(self, side: object, price: object) -> tuple[_Ladder, int]:
        """(ladder, level) or BookError naming what is wrong."""
        ladder = self._ladder(side)
        try:
            level = -1 if isinstance(price, bool) else self._level_of.get(price, -1)  # type: ignore[call-overload]
        except TypeError:  # unhashable
            level = -1
        if level < 0:
            shown = format_price(price) if type(price) is int else repr(price)
            raise BookError(
                f"{self.ticker}: {_side_name(side)} price {shown} is not a valid price on the "
                f"{self.grid.name} grid"
            )
        return ladder, level

    def _delta_error(self, side: object, price: object, delta: object) -> BookError:
        """The error for a rejected delta (built only after the hot path failed)."""
        try:
            ladder, level = self._locate(side, price)
        except BookError as err:
            return err
        where = f"{self.ticker}: delta {_side_name(side)} @ {format_price(price)}"  # type: ignore[arg-type]
        if isinstance(delta, bool) or not isinstance(delta, int):
            return BookError(f"{where}: delta must be an integer, was {delta!r}")
        current = ladder.sizes[level]
        if not delta:
            return BookError(f"{where}: zero delta (size stays {format_qty(current)}); Kalshi sends none")
        return BookError(
            f"{where}: size {format_qty(current)} + delta {format_qty(delta)} = "
            f"{format_qty(current + delta)} would be negative"
        )


def _other(side: Side) -> Side:
    if side == "yes":
        return _NO
    if side == "no":
        return _YES
    raise BookError(f"unknown side {side!r}; expected Side.YES or Side.NO")


def _side_name(side: object) -> str:
    return side.value if isinstance(side, Side) else repr(side)
