// kalshiflow dashboard: one WebSocket (/ws), messages {"type", "data"} (kalshiflow/dashboard/messages.py).
// Plain DOM, no framework; the chart is uPlot (ui/node_modules, served at /vendor/uplot).
// Every value comes from the server; a value the server does not have (null) shows as a dash.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const DASH = "—";
  const PNL_CAP = 3600;
  const CHART_H = 300;

  // ------------------------------------------------------------------ formatting

  const int = (n) => (n === null || n === undefined ? DASH : Number(n).toLocaleString("en-US"));
  const dollars = (s, signed = false) => {
    if (s === null || s === undefined) return DASH;
    const v = Number(s);
    const txt = Math.abs(v).toLocaleString("en-US", { style: "currency", currency: "USD" });
    return v < 0 ? `−${txt}` : signed && v > 0 ? `+${txt}` : txt;
  };
  const cents = (s) => {
    if (s === null || s === undefined) return DASH;
    const c = Math.round(Number(s) * 10000) / 100;
    return `${Number.isInteger(c) ? c : c.toFixed(2)}¢`;
  };
  const contracts = (s) => (s === null || s === undefined ? DASH : String(Number(s)));
  const pct = (x) => (x === null || x === undefined ? DASH : `${(x * 100).toFixed(1)}%`);
  const ms = (x) => (x === null || x === undefined ? DASH : `${Number(x).toFixed(1)} ms`);
  const clock = (t) => new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
  const span = (s) => {
    if (s === null || s === undefined) return DASH;
    s = Math.floor(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return h ? `${h}h ${String(m).padStart(2, "0")}m ${String(sec).padStart(2, "0")}s` : m ? `${m}m ${String(sec).padStart(2, "0")}s` : `${sec}s`;
  };
  const bytes = (n) => (n < 1024 ? `${n} B` : n < 2 ** 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);

  const set = (id, text) => {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  };
  const setPnl = (id, s) => {
    set(id, dollars(s, true));
    const v = s === null || s === undefined ? 0 : Number(s);
    $(id).dataset.sign = v > 0 ? "pos" : v < 0 ? "neg" : "";
  };
  const stateLabel = (state) => (state && state !== "running" ? state : "");

  function fillTable(tableId, rows, cells, onClick) {
    const tbody = $(tableId).tBodies[0];
    const frag = document.createDocumentFragment();
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = $(tableId).tHead.rows[0].cells.length;
      td.className = "empty";
      td.textContent = "none";
      tr.appendChild(td);
      frag.appendChild(tr);
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const [text, cls] of cells(row)) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
      }
      if (onClick) {
        tr.classList.add("clickable");
        tr.addEventListener("click", () => onClick(row));
      }
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
  }

  // ------------------------------------------------------------------ renderers

  let hello = null;

  function onHello(d) {
    hello = d;
    const badge = $("env-badge");
    const env = d.trading_mode || d.environment;
    badge.textContent = env.toUpperCase();
    badge.dataset.env = env;
    badge.title = `exchange: ${d.environment}` + (d.trading_mode ? ` · trading: ${d.trading_mode}` : "");
    const link = $("ray-link");
    if (d.ray_dashboard_url) {
      link.href = d.ray_dashboard_url;
      link.hidden = false;
    } else {
      link.hidden = true;
    }
    const absent = Object.entries(d.components).filter(([, up]) => !up).map(([name]) => name.replace("_", " "));
    set("foot-text", absent.length ? `not running: ${absent.join(", ")}` : "collectors, WriteQueue, PolicyServer, PositionReconciler and Trader running");
    $("kill-switch").disabled = !d.components.trader;
  }

  function onCollection(d) {
    set("run-state", d.state);
    $("run-state").dataset.state = d.state;
    set("collection-state", stateLabel(d.state));
    const conn = $("exchange-conn");
    conn.textContent = d.collectors ? (d.connected ? "connected" : `${d.collectors_connected}/${d.collectors} connected`) : "no collectors";
    conn.dataset.ok = d.connected ? "yes" : "no";
    set("exchange-url", d.exchange_url || "");
    set("session-id", d.session_id || DASH);
    set("markets-tracked", int(d.markets_tracked));
    set("collectors", `${d.collectors_connected} / ${d.collectors}`);
    set("snapshots-collected", int(d.snapshots_collected));
    set("deltas-collected", int(d.deltas_collected));
    set("trades-collected", int(d.trades_collected));
    set("messages-per-s", d.messages_per_s.toFixed(1));
    set("gaps", int(d.gaps));
    $("gaps").dataset.warn = d.gaps > 0 ? "yes" : "";
    set("reconnects", int(d.reconnects));
    set("lag", `${ms(d.lag_ms_mean)} / ${d.lag_ms_max === null ? DASH : `${d.lag_ms_max} ms`}`);
    const wq = d.write_queue;
    set("wq-depth", wq ? `${int(wq.depth)} rows` + (wq.waiting_rows ? ` (+${int(wq.waiting_rows)} held back)` : "") : DASH);
    set("wq-written", wq ? int(wq.rows_written) : DASH);
    set("wq-spill", wq ? (wq.spill_segments ? `${wq.spill_segments} segments, ${bytes(wq.spill_bytes)}` : `none (${int(wq.rows_spilled)} rows spilled so far)`) : DASH);
    set("db-up", wq ? (wq.database_up ? "up" : `DOWN${wq.last_error ? `: ${wq.last_error}` : ""}`) : DASH);
    $("db-up").dataset.warn = wq && !wq.database_up ? "yes" : "";
    set("uptime", span(d.uptime_s));
    set("memory", d.memory_mb === null ? DASH : `${d.memory_mb.toFixed(0)} MiB`);
    set("ui-clients", `${d.ui_clients}` + (d.ui_dropped ? ` (${int(d.ui_dropped)} messages dropped for slow clients)` : ""));
    fillTable("markets-table", d.markets, (m) => [
      [m.ticker, m.ticker === book.ticker ? "mono selected" : "mono"], [int(m.deltas), "num"], [int(m.snapshots), "num"],
      [int(m.gaps), m.gaps ? "num warn" : "num"], [m.valid ? "valid" : "resyncing", m.valid ? "ok" : "warn"],
    ], (m) => selectMarket(m.ticker));
    const list = $("ticker-list");
    if (list.childElementCount !== d.markets.length) {
      list.replaceChildren(...d.markets.map((m) => Object.assign(document.createElement("option"), { value: m.ticker })));
    }
    if (!book.ticker && d.markets.length) selectMarket(d.markets[0].ticker);
  }

  function onTrader(d) {
    set("trader-state", stateLabel(d.state));
    set("pf-value", dollars(d.portfolio_value));
    set("pf-cash", dollars(d.cash));
    setPnl("pf-unrealized", d.unrealized_pnl);
    setPnl("pf-realized", d.realized_pnl);
    setPnl("pf-daily", d.metrics ? d.metrics.daily_pnl : null);
    const risk = $("risk-mode");
    risk.textContent = d.risk_mode ? d.risk_mode.toUpperCase() : DASH;
    risk.dataset.mode = (d.risk_mode || "").toLowerCase();
    set("model-version", d.model_version || DASH);
    set("trading-mode", d.environment || DASH);
    const m = d.metrics;
    set("orders-placed", m ? int(m.orders_placed) : DASH);
    set("orders-outcomes", m ? `${int(m.orders_filled)} / ${int(m.orders_cancelled)} / ${int(m.orders_rejected)}` : DASH);
    set("fill-rate", m ? pct(m.fill_rate) : DASH);
    set("win-rate", m ? pct(m.win_rate) : DASH);
    set("decisions", m ? int(m.decisions) : DASH);
    set("fees", dollars(d.fees));
    set("risk-reason", d.risk_reason || DASH);
    set("policy-requests", int(d.policy_requests));
    set("policy-p50", ms(d.policy_latency_ms_p50));
    fillTable("positions-table", d.positions, (p) => [
      [p.ticker, "mono"], [p.side.toUpperCase(), `side-${p.side}`], [contracts(p.contracts), "num"],
      [cents(p.avg_price), "num"], [cents(p.current_price), "num"],
      [dollars(p.unrealized_pnl, true), `num ${Number(p.unrealized_pnl) < 0 ? "neg" : Number(p.unrealized_pnl) > 0 ? "pos" : ""}`],
    ], (p) => selectMarket(p.ticker));
    fillTable("orders-table", d.open_orders, (o) => [
      [o.ticker, "mono"], [o.action, ""], [o.side.toUpperCase(), `side-${o.side}`], [cents(o.price), "num"], [contracts(o.remaining), "num"],
    ]);
    const halted = (d.risk_mode || "").toLowerCase() === "halted";
    const btn = $("kill-switch");
    btn.disabled = d.state === "absent" || halted;
    if (halted) btn.textContent = "Trading halted";
  }

  function onTrades(d) {
    set("trades-state", stateLabel(d.state));
    const s = d.execution_stats;
    set("total-fills", int(s.total_fills));
    set("maker-taker", `${int(s.maker_fills)} / ${int(s.taker_fills)}`);
    set("avg-fill-time", ms(s.avg_fill_time_ms));
    fillTable("fills-table", d.recent_fills, (f) => [
      [clock(f.ts), "mono"], [f.ticker, "mono"], [`${f.action} ${f.side}`, `side-${f.side}`], [contracts(f.quantity), "num"],
      [cents(f.price), "num"], [f.decision || DASH, "mono"], [f.order_id.slice(-8), "mono dim"],
    ]);
  }

  // ------------------------------------------------------------------ book ladder (snapshot + diffs)

  const book = { ticker: null, seq: -1, bids: new Map(), asks: new Map(), valid: null };

  function selectMarket(ticker) {
    ticker = (ticker || "").trim();
    if (!ticker) return;
    Object.assign(book, { ticker, seq: -1, bids: new Map(), asks: new Map(), valid: null });
    $("book-ticker").value = ticker;
    set("book-state", `${ticker} · waiting for snapshot`);
    renderLadder();
    send({ type: "select_market", ticker });
  }

  function applyLevels(map, levels) {
    for (const [price, size] of levels) {
      if (Number(size) === 0) map.delete(price);
      else map.set(price, size);
    }
  }

  function onBook(d) {
    if (d.ticker !== book.ticker) return;
    if (d.snapshot) {
      book.bids = new Map(d.bids);
      book.asks = new Map(d.asks);
    } else if (d.seq === book.seq + 1) {
      applyLevels(book.bids, d.bids);
      applyLevels(book.asks, d.asks);
    } else {
      // Missed a diff: ask again, the server answers with a snapshot.
      send({ type: "select_market", ticker: book.ticker });
      return;
    }
    book.seq = d.seq;
    book.valid = d.valid;
    set("book-state", `${d.ticker} · ${d.valid === false ? "waiting for exchange snapshot (gap)" : d.valid === null ? "no data" : `last change ${clock(d.ts)}`}`);
    renderLadder();
  }

  function renderLadder() {
    const asks = [...book.asks.entries()].sort((a, b) => Number(a[0]) - Number(b[0])).slice(0, 10).reverse();
    const bids = [...book.bids.entries()].sort((a, b) => Number(b[0]) - Number(a[0])).slice(0, 10);
    const max = Math.max(1, ...asks.map((l) => Number(l[1])), ...bids.map((l) => Number(l[1])));
    const rows = [];
    const row = (bid, price, ask, cls) => {
      const tr = document.createElement("tr");
      tr.className = cls;
      const cell = (text, size, side) => {
        const td = document.createElement("td");
        td.className = `num ${side}`;
        td.textContent = text;
        if (size) td.style.setProperty("--depth", `${(100 * Number(size)) / max}%`);
        return td;
      };
      tr.append(cell(bid ? contracts(bid) : "", bid, "bid"), cell(cents(price), null, "px"), cell(ask ? contracts(ask) : "", ask, "ask"));
      rows.push(tr);
    };
    for (const [p, q] of asks) row(null, p, q, "ask-row");
    if (asks.length && bids.length) {
      const spread = Number(asks[asks.length - 1][0]) - Number(bids[0][0]);
      const tr = document.createElement("tr");
      tr.className = "spread";
      const td = document.createElement("td");
      td.colSpan = 3;
      td.textContent = `spread ${cents(spread.toFixed(4))}`;
      tr.appendChild(td);
      rows.push(tr);
    }
    for (const [p, q] of bids) row(q, p, null, "bid-row");
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 3;
      td.className = "empty";
      td.textContent = book.ticker ? "empty book" : "select a market";
      tr.appendChild(td);
      rows.push(tr);
    }
    $("ladder").tBodies[0].replaceChildren(...rows);
  }

  // ------------------------------------------------------------------ PnL chart (uPlot)

  const pnl = { t: [], v: [], start: null, plot: null };

  function chart() {
    if (pnl.plot || !window.uPlot) return pnl.plot;
    const el = $("pnl-chart");
    pnl.plot = new window.uPlot({
      width: el.clientWidth || 600,
      height: CHART_H,
      scales: { x: { time: true } },
      // Whole-second ticks at least: the x values are poll times, one per interval.
      axes: [{ stroke: "#8b95a7", grid: { stroke: "#263041" }, space: 80, incrs: [1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200],
               values: (u, vals) => vals.map((t) => clock(t)) },
             { stroke: "#8b95a7", grid: { stroke: "#263041" }, size: 96, values: (u, vals) => vals.map((v) => dollars(v)) }],
      series: [{ value: (u, t) => (t === null ? DASH : clock(t)) },
               { label: "portfolio value", stroke: "#4cc2ff", width: 2, fill: "rgba(76,194,255,0.08)", value: (u, v) => (v === null ? DASH : dollars(v)) }],
      legend: { show: true },
    }, [pnl.t, pnl.v], el);
    new ResizeObserver(() => pnl.plot.setSize({ width: el.clientWidth, height: CHART_H })).observe(el);
    return pnl.plot;
  }

  function onPnl(d) {
    if (d.snapshot) {
      pnl.t = d.points.map((p) => p[0]);
      pnl.v = d.points.map((p) => p[1]);
    } else {
      for (const p of d.points) {
        pnl.t.push(p[0]);
        pnl.v.push(p[1]);
      }
      if (pnl.t.length > PNL_CAP) {
        pnl.t.splice(0, pnl.t.length - PNL_CAP);
        pnl.v.splice(0, pnl.v.length - PNL_CAP);
      }
    }
    pnl.start = d.start_value;
    const last = pnl.v.length ? pnl.v[pnl.v.length - 1] : null;
    set("pnl-summary", last === null ? "no portfolio data yet" : `${dollars(last)} · ${dollars(last - pnl.start, true)} since start · ${pnl.v.length} points`);
    const plot = chart();
    if (plot) plot.setData([pnl.t, pnl.v]);
    else set("pnl-summary", "chart library missing: run `npm ci` in ui/");
  }

  // ------------------------------------------------------------------ commands

  let armed = null;
  $("kill-switch").addEventListener("click", () => {
    const btn = $("kill-switch");
    if (!armed) {
      btn.classList.add("armed");
      btn.textContent = "Confirm: halt trading";
      armed = setTimeout(() => { armed = null; btn.classList.remove("armed"); btn.textContent = "Kill switch"; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    btn.classList.remove("armed");
    btn.textContent = "Halting…";
    btn.disabled = true;
    send({ type: "kill_switch", reason: "dashboard kill switch" });
  });

  $("book-form").addEventListener("submit", (e) => {
    e.preventDefault();
    selectMarket($("book-ticker").value);
  });

  function onResult(d) {
    if (d.command === "select_market") return;
    const n = $("notice");
    const name = { kill_switch: "Kill switch" }[d.command] || d.command;
    n.textContent = `${name}: ${d.ok ? "done" : "FAILED"} — ${d.detail}`;
    n.dataset.ok = d.ok ? "yes" : "no";
    n.hidden = false;
    if (d.command === "kill_switch" && !d.ok) {
      $("kill-switch").disabled = false;
      $("kill-switch").textContent = "Kill switch";
    }
  }

  // ------------------------------------------------------------------ connection (auto-reconnect)

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  const handlers = { hello: onHello, collection_status: onCollection, trader_state: onTrader, trades: onTrades,
                     book: onBook, pnl_history: onPnl, command_result: onResult };

  function connState(state, text) {
    $("conn").dataset.state = state;
    set("conn-text", text);
  }

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function connect() {
    clearTimeout(retryTimer);
    connState("connecting", attempt ? `reconnecting (attempt ${attempt + 1})…` : "connecting…");
    ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    ws.onopen = () => {
      attempt = 0;
      connState("live", "live");
      if (book.ticker) selectMarket(book.ticker);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        console.error("bad message", err);
        return;
      }
      const h = handlers[msg.type];
      if (h) h(msg.data);
    };
    ws.onclose = () => {
      ws = null;
      // Exponential backoff with jitter, capped at 10 s; never gives up.
      const delay = Math.min(10000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt += 1;
      connState("down", `disconnected · retrying in ${(delay / 1000).toFixed(1)} s`);
      retryTimer = setTimeout(connect, delay);
    };
    ws.onerror = () => ws && ws.close();
  }

  window.kalshiflow = { book, pnl, get hello() { return hello; } };  // for debugging and browser tests
  renderLadder();
  connect();
})();
