// The Live page's table, KPI tiles and alert toasts, kept up to date from the dashboard's live feed
// (websocket /llmproxy/live, ui/live/server.py) without a Streamlit rerun.
//
// Streamlit calls the default export on mount and again whenever the page passes new data; the state
// (rows, socket) lives per mount point, so a second call only updates the settings. Every value from
// the feed is inserted as text (textContent), never as HTML.

const MAX_ROWS = 200;
const STATES = new WeakMap();
const SVG = "http://www.w3.org/2000/svg";
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 5000;
const TOAST_MS = 10000;
const TOASTS_SHOWN = 5;
const FLUSH_GAP_MS = 32; // closer together than this, updates wait for the next frame (batched)
const COLUMNS = ["time", "client", "model", "status", "latency", "ttft", "tin", "tout", "cost", "flags", "open", "provider", "rid"];

const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const two = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

function missing(v) {
  return v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v));
}
function fmtMs(v) {
  if (missing(v)) return "–";
  return v >= 10000 ? `${two.format(v / 1000)} s` : `${int.format(v)} ms`;
}
function fmtUsd(v) {
  if (missing(v)) return "–";
  return Math.abs(v) < 1 ? `$${v.toFixed(4)}` : `$${two.format(v)}`;
}
function fmtPct(v) {
  return missing(v) ? "–" : `${(v * 100).toFixed(1)}%`;
}
function fmtTime(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
}
// newest first by start time, then request id (the table's order, as the database sorts it)
function newer(a, b) {
  return a.t !== b.t ? a.t > b.t : a.id > b.id;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function buildRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.rid = r.id;
  if (r.failed) tr.classList.add("failed");
  const cells = {
    time: fmtTime(r.t),
    client: r.client ?? "",
    model: r.model ?? "",
    status: missing(r.status) ? "–" : String(r.status),
    latency: fmtMs(r.latency_ms),
    ttft: fmtMs(r.ttft_ms),
    tin: missing(r.tokens_in) ? "–" : int.format(r.tokens_in),
    tout: missing(r.tokens_out) ? "–" : int.format(r.tokens_out),
    cost: missing(r.cost_usd) ? "–" : `$${r.cost_usd.toFixed(5)}`,
    flags: r.flags ?? "",
    provider: r.provider ?? "",
    rid: r.id,
  };
  for (const c of COLUMNS) {
    const td = document.createElement("td");
    if (c === "open") {
      const a = el("a", null, "open");
      a.href = `explorer?request_id=${encodeURIComponent(r.id)}`;
      a.target = "_blank";
      a.rel = "noopener";
      td.appendChild(a);
    } else {
      td.textContent = cells[c];
    }
    if (["status", "latency", "ttft", "tin", "tout", "cost"].includes(c)) td.classList.add("num");
    if (c === "status") td.classList.add("status");
    if (c === "model" && r.prompt) td.title = r.prompt;
    tr.appendChild(td);
  }
  return tr;
}

function spark(svg, values, bars) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const vals = (values || []).map((v) => (missing(v) ? null : v));
  const known = vals.filter((v) => v !== null);
  if (!vals.length || !known.length) return;
  const max = Math.max(...known) || 1;
  const w = 100 / vals.length;
  if (bars) {
    vals.forEach((v, i) => {
      if (v === null || v <= 0) return;
      const h = Math.max(0.8, (v / max) * 23);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", String(i * w + w * 0.1));
      rect.setAttribute("width", String(w * 0.8));
      rect.setAttribute("y", String(24 - h));
      rect.setAttribute("height", String(h));
      svg.appendChild(rect);
    });
    return;
  }
  const points = [];
  vals.forEach((v, i) => {
    if (v !== null) points.push([(i + 0.5) * w, 23 - (v / max) * 22]);
  });
  if (points.length === 1) points.unshift([Math.max(0, points[0][0] - w), points[0][1]]); // one bucket: a short dash
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => p.join(",")).join(" "));
  svg.appendChild(line);
}

class LiveView {
  constructor(root, config) {
    this.root = root;
    this.el = {
      box: root.querySelector(".llp"),
      tbody: root.querySelector("tbody"),
      empty: root.querySelector(".llp-empty"),
      status: root.querySelector(".llp-status-text"),
      banner: root.querySelector(".llp-banner"),
      bannerText: root.querySelector(".llp-banner-text"),
      toasts: root.querySelector(".llp-toasts"),
    };
    this.rows = []; // newest first
    this.byId = new Map(); // request id -> { row, tr }
    this.pending = [];
    this.flushScheduled = false;
    this.lastFlush = -Infinity;
    this.kpis = null;
    this.spend = null;
    this.lastEventId = null;
    this.ws = null;
    this.retryMs = RECONNECT_MIN_MS;
    this.retryTimer = null;
    this.closed = false;
    this.config = config;
    // counters for the status line's tooltip, tests and `llmproxy bench ui`
    this.stats = { messages: 0, rows: 0, flushes: 0, connects: 0, transitMs: 0, transitMaxMs: 0, flushMs: 0, flushMaxMs: 0 };
    this.kpisDirty = true;
    this.applySnapshot(config);
    this.flush();
    this.themeBackground();
    if (config.live) this.connect();
    else this.setState("offline", config.offline_reason || "live updates unavailable");
  }

  update(config) {
    const tokenChanged = config.token !== this.config.token;
    this.config = config;
    if (this.closed) return;
    if (tokenChanged && config.live) {
      // signed in again (or a new key): reconnect with it
      this.disconnect();
      this.connect();
    } else if (config.live && !this.ws && !this.retryTimer) {
      this.connect();
    }
  }

  applySnapshot(config) {
    if (Array.isArray(config.rows)) this.pending.push(...config.rows);
    if (config.kpis) this.kpis = config.kpis;
    if (config.spend) this.spend = config.spend;
    if (typeof config.last_event_id === "number") this.lastEventId = config.last_event_id;
    if (config.banner) this.showBanner(config.banner);
  }

  // ------------------------------------------------------------------ socket
  connect() {
    if (this.closed || this.ws) return;
    const url = new URL(this.config.path || "llmproxy/live", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    let ws;
    try {
      ws = new WebSocket(url.toString());
    } catch (err) {
      this.scheduleReconnect(String(err));
      return;
    }
    this.ws = ws;
    this.stats.connects += 1;
    this.setState("connecting", this.stats.connects > 1 ? "reconnecting…" : "connecting…");
    ws.onopen = () => {
      const oldest = this.rows.length ? this.rows[this.rows.length - 1].t : null;
      ws.send(
        JSON.stringify({
          type: "hello",
          token: this.config.token,
          since: this.rows.length >= MAX_ROWS ? oldest : null,
          last_event_id: this.lastEventId,
        }),
      );
    };
    ws.onmessage = (ev) => this.onMessage(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (ev.code === 4401) {
        this.setState("signed-out", this.authError || "signed out: reload the page and sign in again");
        return;
      }
      if (ev.code === 1008) {
        this.setState("offline", "the live feed refused this page (host or origin not allowed)");
        return;
      }
      this.scheduleReconnect(this.serverError || "connection lost");
    };
    ws.onerror = () => {};
  }

  disconnect() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close();
      } catch (_) {}
    }
  }

  scheduleReconnect(reason) {
    if (this.closed || this.retryTimer) return;
    const wait = this.retryMs * (0.75 + Math.random() * 0.5);
    this.retryMs = Math.min(RECONNECT_MAX_MS, this.retryMs * 2);
    this.setState("offline", `${reason} · reconnecting in ${(wait / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, wait);
  }

  onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (_) {
      return;
    }
    this.stats.messages += 1;
    if (typeof msg.at === "number") {
      const transit = Date.now() - msg.at;
      this.stats.transitMs += transit;
      this.stats.transitMaxMs = Math.max(this.stats.transitMaxMs, transit);
    }
    switch (msg.type) {
      case "ready":
        this.retryMs = RECONNECT_MIN_MS;
        this.serverError = null;
        this.setState("live");
        break;
      case "backfill":
        if (typeof msg.last_event_id === "number") this.lastEventId = msg.last_event_id;
        this.take(msg);
        break;
      case "update":
        this.take(msg);
        break;
      case "resync": {
        // fell behind: ask the database for everything the table should show
        const oldest = this.rows.length >= MAX_ROWS ? this.rows[this.rows.length - 1].t : null;
        if (this.ws) this.ws.send(JSON.stringify({ type: "backfill", since: oldest }));
        break;
      }
      case "error":
        this.serverError = msg.error;
        this.authError = msg.error;
        break;
      default:
        break;
    }
  }

  take(msg) {
    if (Array.isArray(msg.rows) && msg.rows.length) {
      this.pending.push(...msg.rows);
      this.stats.rows += msg.rows.length;
    }
    if (msg.kpis) this.kpis = msg.kpis;
    if (msg.spend) this.spend = msg.spend;
    if (msg.kpis || msg.spend) this.kpisDirty = true;
    if (msg.banner) this.showBanner(msg.banner);
    if (msg.status) this.feedMode = msg.status.mode;
    if (Array.isArray(msg.alerts)) {
      for (const a of msg.alerts) {
        if (typeof a.id === "number") this.lastEventId = Math.max(this.lastEventId || 0, a.id);
        this.toast(a);
      }
    }
    this.scheduleFlush();
  }

  // ------------------------------------------------------------------ rendering
  scheduleFlush() {
    if (this.flushScheduled) return;
    // A quiet feed renders at once (nothing to batch: no frame of delay). A busy one batches: at most one
    // DOM update per animation frame, with a timer as well, as hidden tabs get no frames.
    if (performance.now() - this.lastFlush > FLUSH_GAP_MS) {
      this.flush();
      return;
    }
    this.flushScheduled = true;
    const run = () => {
      if (!this.flushScheduled) return;
      this.flushScheduled = false;
      this.flush();
    };
    requestAnimationFrame(run);
    setTimeout(run, 50);
  }

  flush() {
    const started = performance.now();
    this.lastFlush = started;
    this.stats.flushes += 1;
    const batch = this.pending;
    this.pending = [];
    if (batch.length) this.insertRows(batch);
    this.el.empty.hidden = this.rows.length > 0;
    if (this.kpisDirty) {
      this.kpisDirty = false;
      this.renderTiles();
    }
    const took = performance.now() - started;
    this.stats.flushMs += took;
    this.stats.flushMaxMs = Math.max(this.stats.flushMaxMs, took);
  }

  insertRows(batch) {
    // only what can be among the newest MAX_ROWS matters
    batch.sort((a, b) => (newer(a, b) ? -1 : 1));
    // a new row is highlighted for a moment when they come one by one; at high rates that repaint is skipped
    const gap = this.sinceLastRows();
    const fresh = this.rows.length > 0 && batch.length <= 3 && gap > 250;
    let added = 0;
    for (const r of batch.slice(0, MAX_ROWS)) {
      if (!r || typeof r.id !== "string" || this.byId.has(r.id)) continue;
      if (this.rows.length >= MAX_ROWS && !newer(r, this.rows[this.rows.length - 1])) continue;
      // binary search for the first row older than r
      let lo = 0;
      let hi = this.rows.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (newer(this.rows[mid], r)) lo = mid + 1;
        else hi = mid;
      }
      const tr = buildRow(r);
      if (fresh) tr.classList.add("fresh");
      const before = lo < this.rows.length ? this.byId.get(this.rows[lo].id).tr : null;
      this.el.tbody.insertBefore(tr, before);
      this.rows.splice(lo, 0, r);
      this.byId.set(r.id, { row: r, tr });
      added += 1;
    }
    while (this.rows.length > MAX_ROWS) {
      const gone = this.rows.pop();
      const entry = this.byId.get(gone.id);
      if (entry) entry.tr.remove();
      this.byId.delete(gone.id);
    }
    return added;
  }

  sinceLastRows() {
    const now = performance.now();
    const gap = now - (this.lastRowsAt ?? -Infinity);
    this.lastRowsAt = now;
    return gap;
  }

  renderTiles() {
    const k = this.kpis;
    if (k) {
      const s = k.series || {};
      this.tile("req_per_s", missing(k.req_per_s) ? null : two.format(k.req_per_s), s.req_per_s, true);
      const none = !k.requests;
      this.tile("error_rate", none ? null : fmtPct(k.error_rate), s.error_rate, false);
      this.tile("p50_ms", none || missing(k.p50_ms) ? null : fmtMs(k.p50_ms), s.p50_ms, false);
      this.tile("p95_ms", none || missing(k.p95_ms) ? null : fmtMs(k.p95_ms), s.p95_ms, false);
      const feed = this.state === "live" ? "live: pushed over a WebSocket" : "waiting for the live feed";
      this.summary = `${int.format(k.requests || 0)} exchanges in the last ${k.window_minutes} min · ${feed}`;
      if (this.state === "live") this.el.status.textContent = this.summary;
    }
    if (this.spend) {
      const unpriced = this.spend.unpriced_requests;
      const t = this.root.querySelector('[data-kpi="spend"]');
      t.title = unpriced ? `${unpriced} exchanges of unpriced models are not included.` : "Since 00:00 UTC; sparkline per hour.";
      this.tile("spend", fmtUsd(this.spend.total_usd), this.spend.hourly, true);
    }
  }

  tile(name, text, series, bars) {
    const t = this.root.querySelector(`[data-kpi="${name}"]`);
    const v = t.querySelector(".llp-value");
    v.textContent = text === null ? "no data yet" : text;
    v.classList.toggle("nodata", text === null);
    spark(t.querySelector(".llp-spark"), series, bars);
  }

  showBanner(b) {
    const node = this.el.banner;
    if (!b || !b.open) {
      node.hidden = true;
      return;
    }
    node.hidden = false;
    node.classList.toggle("critical", b.critical > 0);
    const crit = b.critical ? `, ${b.critical} critical` : "";
    this.el.bannerText.textContent = `${b.open} open alert(s) in the last 24 h${crit} · newest: ${b.newest ?? ""}`;
  }

  toast(a) {
    const box = this.el.toasts;
    const t = el("div", `llp-toast ${a.severity === "critical" ? "critical" : ""}`);
    t.appendChild(el("b", null, String(a.severity || "").toUpperCase()));
    t.appendChild(document.createTextNode(a.title || ""));
    box.insertBefore(t, box.firstChild);
    while (box.children.length > TOASTS_SHOWN) box.removeChild(box.lastChild);
    setTimeout(() => t.remove(), TOAST_MS);
  }

  setState(state, text) {
    this.state = state;
    this.kpisDirty = true;
    this.el.box.dataset.state = state;
    this.el.status.textContent = state === "live" ? this.summary || "live: pushed over a WebSocket" : text || state;
    this.themeBackground();
  }

  themeBackground() {
    // the sticky header and toasts need an opaque background: the app's own
    const app = document.querySelector(".stApp") || document.body;
    const bg = getComputedStyle(app).backgroundColor;
    if (bg && bg !== "rgba(0, 0, 0, 0)") this.el.box.style.setProperty("--llp-bg", bg);
  }

  destroy() {
    this.closed = true;
    this.disconnect();
  }
}

export default function (component) {
  const { parentElement, data } = component;
  const config = data || {};
  let view = STATES.get(parentElement);
  if (!view) {
    view = new LiveView(parentElement, config);
    STATES.set(parentElement, view);
    // measurement and tests read the feed's counters here
    window.__llmproxyLive = view;
  } else {
    view.update(config);
  }
  return () => {
    view.destroy();
    STATES.delete(parentElement);
  };
}
