-- 0001_initial: the kalshiflow schema.
--
-- Units (never floats, never NUMERIC on hot paths):
--   price   INTEGER ticks of $0.0001 (10000 = $1, see kalshiflow.market.prices). A YES price unless
--           the column name says otherwise; book levels are each side's own bid price (below).
--   qty     BIGINT hundredths of a contract (Kalshi counts carry 2 decimals). Signed where noted.
--   money   BIGINT micro-dollars ($1 = 1 000 000), so price x qty is exact.
--   *_ts_ms BIGINT epoch milliseconds from the exchange's clock (Kalshi's ts_ms), NULL when absent.
--   *_ts_ns BIGINT epoch nanoseconds from our clock (time.time_ns()) at receipt.
--           The recorded market-data tables use integer times: cheaper to encode, exact, and replay
--           compares them as integers. Bookkeeping tables use TIMESTAMPTZ (*_at / ts).
--
-- Every table has a natural key (no surrogate serials), so every write can be
-- INSERT ... ON CONFLICT DO NOTHING and a retried or replayed batch never duplicates a row.
--
-- No foreign keys between recorded tables: ingest is at-least-once and a spill replay may land a
-- session's deltas before its session row; a referential check would turn that ordering into lost
-- data. Consistency is checked by queries instead.

-- One durable collection run (it may span many WebSocket connections: see connection_epochs).
CREATE TABLE collection_sessions (
    session_id      UUID        PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    ended_at        TIMESTAMPTZ,
    status          TEXT        NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'closed', 'aborted', 'empty')),
    environment     TEXT        NOT NULL,             -- simulator | demo | production | ...
    exchange_url    TEXT        NOT NULL,             -- the WS URL (never holds credentials)
    markets         TEXT[]      NOT NULL DEFAULT '{}',
    config          JSONB       NOT NULL DEFAULT '{}',
    snapshot_count  BIGINT      NOT NULL DEFAULT 0,
    delta_count     BIGINT      NOT NULL DEFAULT 0,
    gap_count       BIGINT      NOT NULL DEFAULT 0,
    trade_count     BIGINT      NOT NULL DEFAULT 0,
    reconnect_count BIGINT      NOT NULL DEFAULT 0,
    error           TEXT,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX collection_sessions_started_idx ON collection_sessions (started_at DESC);

-- One WebSocket connection within a session. `epoch` must be unique within the session across all
-- of its collectors (sids and seqs restart on every connection, so (epoch, sid, seq) names a message).
CREATE TABLE connection_epochs (
    session_id      UUID        NOT NULL,
    epoch           INTEGER     NOT NULL CHECK (epoch >= 0),
    collector_id    TEXT        NOT NULL,
    connected_at    TIMESTAMPTZ NOT NULL,
    disconnected_at TIMESTAMPTZ,
    reason          TEXT,                              -- why it ended (NULL while connected)
    PRIMARY KEY (session_id, epoch)
);

CREATE TABLE markets (
    ticker                TEXT        PRIMARY KEY,
    event_ticker          TEXT,
    series_ticker         TEXT,
    title                 TEXT,
    status                TEXT,                        -- Kalshi's market status, verbatim
    open_time             TIMESTAMPTZ,
    close_time            TIMESTAMPTZ,
    result                TEXT,                        -- yes | no | scalar | '' (NULL = unknown)
    price_level_structure TEXT,                        -- Kalshi's tick-grid name
    price_ranges          JSONB,                       -- [{"start": ticks, "end": ticks, "step": ticks}]
    fee_type              TEXT,
    first_seen_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    raw                   JSONB                        -- the last market object as received
);

-- Full book of one market as the exchange sent it (orderbook_snapshot). Levels are stored
-- losslessly as parallel arrays in wire order (ascending price): *_price[i] ticks, *_qty[i]
-- hundredths. Prices on each side are that side's own bid price, as Kalshi sends them by default
-- (a NO level at 3000 is a bid for NO at $0.30, i.e. an offer of YES at $0.70).
CREATE TABLE book_snapshots (
    session_id     UUID      NOT NULL,
    seq            BIGINT    NOT NULL,
    received_ts_ns BIGINT    NOT NULL,
    exchange_ts_ms BIGINT,                             -- snapshots carry no exchange time today
    epoch          INTEGER   NOT NULL,
    sid            INTEGER   NOT NULL,
    ticker         TEXT      NOT NULL,
    yes_price      INTEGER[] NOT NULL,
    yes_qty        BIGINT[]  NOT NULL,
    no_price       INTEGER[] NOT NULL,
    no_qty         BIGINT[]  NOT NULL,
    PRIMARY KEY (session_id, epoch, sid, seq),
    CHECK (cardinality(yes_price) = cardinality(yes_qty)),
    CHECK (cardinality(no_price) = cardinality(no_qty))
);
CREATE INDEX book_snapshots_replay_idx ON book_snapshots (session_id, ticker, epoch, sid, seq);

-- The hot table: one row per orderbook_delta. Columns are ordered widest-first so the row has no
-- alignment padding. `delta` is Kalshi's signed change; `size_after` is the level size the
-- collector's book held after applying it (NULL while that book is invalid after a gap).
CREATE TABLE book_deltas (
    session_id      UUID    NOT NULL,
    seq             BIGINT  NOT NULL,
    received_ts_ns  BIGINT  NOT NULL,
    exchange_ts_ms  BIGINT,
    delta           BIGINT  NOT NULL,
    size_after      BIGINT,
    epoch           INTEGER NOT NULL,
    sid             INTEGER NOT NULL,
    price           INTEGER NOT NULL CHECK (price BETWEEN 0 AND 10000),
    side            TEXT    NOT NULL CHECK (side IN ('yes', 'no')),
    ticker          TEXT    NOT NULL,
    client_order_id TEXT,                              -- set only on deltas caused by our own orders
    PRIMARY KEY (session_id, epoch, sid, seq)
);
CREATE INDEX book_deltas_replay_idx ON book_deltas (session_id, ticker, epoch, sid, seq);

-- A hole in a sid's sequence: seq `expected_seq` was due, `received_seq` arrived.
CREATE TABLE gaps (
    session_id      UUID        NOT NULL,
    epoch           INTEGER     NOT NULL,
    sid             INTEGER     NOT NULL,
    expected_seq    BIGINT      NOT NULL,
    received_seq    BIGINT      NOT NULL,
    detected_at     TIMESTAMPTZ NOT NULL,
    tickers         TEXT[]      NOT NULL DEFAULT '{}', -- every book on the sid is invalidated
    recovered_at    TIMESTAMPTZ,
    recovery_method TEXT,                              -- resubscribe | get_snapshot | ...
    PRIMARY KEY (session_id, epoch, sid, expected_seq)
);

-- Public tape. Keyed per session so every session's record is complete on its own; the same
-- trade seen by two sessions is two rows (find it across sessions by trade_id).
CREATE TABLE public_trades (
    session_id     UUID    NOT NULL,
    trade_id       TEXT    NOT NULL,
    received_ts_ns BIGINT  NOT NULL,
    exchange_ts_ms BIGINT,
    count          BIGINT  NOT NULL,                   -- qty
    yes_price      INTEGER NOT NULL CHECK (yes_price BETWEEN 0 AND 10000),
    epoch          INTEGER,
    sid            INTEGER,
    seq            BIGINT,                             -- trades carry no seq before ~2026-09
    ticker         TEXT    NOT NULL,
    taker_side     TEXT    CHECK (taker_side IN ('yes', 'no')),
    PRIMARY KEY (session_id, trade_id)
);
CREATE INDEX public_trades_ticker_idx ON public_trades (session_id, ticker, exchange_ts_ms);
CREATE INDEX public_trades_trade_idx ON public_trades (trade_id);

-- Our orders (paper or real). order_id is the exchange's id; client_order_id ours (idempotent).
CREATE TABLE orders (
    order_id        TEXT        PRIMARY KEY,
    client_order_id TEXT        UNIQUE,
    account         TEXT        NOT NULL,
    environment     TEXT        NOT NULL,
    ticker          TEXT        NOT NULL,
    side            TEXT        NOT NULL CHECK (side IN ('yes', 'no')),
    action          TEXT        NOT NULL CHECK (action IN ('buy', 'sell')),
    order_type      TEXT        NOT NULL DEFAULT 'limit',
    yes_price       INTEGER     CHECK (yes_price BETWEEN 0 AND 10000),
    count           BIGINT      NOT NULL,              -- qty, initial
    fill_count      BIGINT      NOT NULL DEFAULT 0,    -- qty
    remaining_count BIGINT,                            -- qty
    tif             TEXT,
    status          TEXT        NOT NULL,              -- resting | canceled | executed | rejected ...
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    model_version   TEXT,
    decision_id     UUID,
    raw             JSONB
);
CREATE INDEX orders_account_idx ON orders (account, created_at);

-- Our fills. Kalshi's trade_id (= fill_id) may fill two of our orders, hence the pair.
CREATE TABLE fills (
    trade_id        TEXT        NOT NULL,
    order_id        TEXT        NOT NULL,
    client_order_id TEXT,
    account         TEXT        NOT NULL,
    environment     TEXT        NOT NULL,
    ticker          TEXT        NOT NULL,
    side            TEXT        NOT NULL CHECK (side IN ('yes', 'no')),
    action          TEXT        NOT NULL CHECK (action IN ('buy', 'sell')),
    yes_price       INTEGER     NOT NULL CHECK (yes_price BETWEEN 0 AND 10000),
    no_price        INTEGER     NOT NULL CHECK (no_price BETWEEN 0 AND 10000),
    count           BIGINT      NOT NULL,              -- qty
    fee             BIGINT      NOT NULL DEFAULT 0,    -- money
    is_taker        BOOLEAN     NOT NULL,
    post_position   BIGINT,                            -- signed qty: + YES, - NO
    ts              TIMESTAMPTZ NOT NULL,              -- exchange time of the fill
    received_at     TIMESTAMPTZ,
    PRIMARY KEY (trade_id, order_id)
);
CREATE INDEX fills_account_idx ON fills (account, ts);

-- Position per (account, ticker) at a time, from the exchange (truth) or our local book-keeping.
CREATE TABLE position_snapshots (
    account      TEXT        NOT NULL,
    ticker       TEXT        NOT NULL,
    source       TEXT        NOT NULL CHECK (source IN ('exchange', 'local')),
    ts           TIMESTAMPTZ NOT NULL,
    environment  TEXT        NOT NULL,
    position     BIGINT      NOT NULL,                 -- signed qty: + YES, - NO
    cost         BIGINT      NOT NULL DEFAULT 0,       -- money
    realized_pnl BIGINT      NOT NULL DEFAULT 0,       -- money
    fees         BIGINT      NOT NULL DEFAULT 0,       -- money
    PRIMARY KEY (account, ticker, source, ts)
);

-- Every trader decision, including HOLDs and risk rejections (the audit trail of the policy).
CREATE TABLE trader_decisions (
    decision_id      UUID        PRIMARY KEY,
    ts               TIMESTAMPTZ NOT NULL,
    account          TEXT        NOT NULL,
    ticker           TEXT        NOT NULL,
    observation_hash TEXT        NOT NULL,
    action           TEXT        NOT NULL,
    model_version    TEXT,
    risk_verdict     TEXT        NOT NULL,             -- allowed | rejected | skipped ...
    reason           TEXT,
    latency_us       BIGINT,
    client_order_id  TEXT                              -- the order it led to, if any
);
CREATE INDEX trader_decisions_ts_idx ON trader_decisions (account, ts);

-- Model registry: one row per trained policy version (artifact under models/<version>/).
CREATE TABLE models (
    version       TEXT        PRIMARY KEY,
    created_at    TIMESTAMPTZ NOT NULL,
    schema_hash   TEXT        NOT NULL,                -- feature + action schema hash
    algorithm     TEXT        NOT NULL,
    path          TEXT        NOT NULL,
    data_manifest JSONB       NOT NULL DEFAULT '{}',
    config        JSONB       NOT NULL DEFAULT '{}',
    metrics       JSONB       NOT NULL DEFAULT '{}',
    status        TEXT        NOT NULL DEFAULT 'trained',
    promoted_at   TIMESTAMPTZ
);

-- One evaluation run of a model version or a named baseline policy on a data spec.
CREATE TABLE evaluations (
    evaluation_id UUID        PRIMARY KEY,
    model_version TEXT,                                -- NULL for baselines (hold, random, ...)
    policy_name   TEXT        NOT NULL,
    data_spec     JSONB       NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL,
    metrics       JSONB       NOT NULL DEFAULT '{}',
    report_path   TEXT
);
CREATE INDEX evaluations_model_idx ON evaluations (model_version, created_at);
