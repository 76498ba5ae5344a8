// The streamc dashboard: one EventSource (SSE) per selection, snapshot then changes,
// charts with uPlot (updated in place: no flicker), late corrections and retractions
// marked as such. No build step: plain JavaScript served by the server.
"use strict";

const PALETTE = ["#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#0987a0", "#b7791f", "#d53f8c"];
const I64_MAX = 9.2e18; // the end-of-input watermark, as a JavaScript number
const MAX_WINDOWS = 60;  // windows per key kept in the page
const MAX_CHANGES = 80;  // lines of the live change list

const S = {
  source: "",
  feeds: {},          // id -> descriptor
  status: {},         // job -> {job, rate, progress}
  feed: null,
  mode: "top",
  topN: 5,
  sort: null,
  key: null,
  aggs: new Set(),    // charted aggregates
  keys: [],           // keys of the subscription (chart series); [] = every key
  windows: {},        // key -> Map(windowId -> {row, status, rev, start, end})
  leaders: [],
  knownKeys: [],
  es: null,
  lastId: null,
  conn: "connecting",
  charts: {},         // agg -> {u, keys, el}
  dirty: { charts: true, table: true, jobs: true },
};
window.__dash = S; // for tests and the curious

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---------------------------------------------------------------- formatting

function fmtNum(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  const a = Math.abs(v);
  const digits = a >= 100 ? 1 : a >= 1 ? 2 : 3;
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}
function fmtTime(ms, withMs) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= I64_MAX) return "end of input";
  const d = new Date(ms);
  const t = d.toLocaleTimeString([], { hour12: false });
  return withMs ? `${t}.${String(d.getMilliseconds()).padStart(3, "0")}` : t;
}
function fmtDur(ms) {
  if (ms === null || ms === undefined || !isFinite(ms)) return "–";
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (a < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  if (a < 86400000 * 2) return `${(ms / 3600000).toFixed(1)} h`;
  return `${Math.round(ms / 86400000)} d`;
}
function fmtWindow(start, end) {
  const withMs = (end - start) % 1000 !== 0;
  return `${fmtTime(start, withMs)}–${fmtTime(end, withMs)}`;
}
const winId = (r) => `${r.window_start}:${r.window_end}`;

// ---------------------------------------------------------------- state changes

function feedDesc() { return S.feeds[S.feed] || null; }
function aggregates() { const d = feedDesc(); return (d && d.aggregates) || []; }

function applyRow(key, row, op) {
  let m = S.windows[key];
  if (!m) { m = S.windows[key] = new Map(); }
  const id = winId(row);
  const prev = m.get(id);
  let entry;
  if (op === "retract") {
    entry = { row: prev ? prev.row : row, status: "retracted", rev: row.revision, start: row.window_start, end: row.window_end, at: Date.now() };
  } else {
    entry = { row, status: row.revision > 0 ? "corrected" : "fired", rev: row.revision, start: row.window_start, end: row.window_end, at: Date.now() };
  }
  m.set(id, entry);
  // Keep the newest windows only.
  if (m.size > MAX_WINDOWS) {
    const ids = [...m.values()].sort((a, b) => a.start - b.start || a.end - b.end);
    for (const e of ids.slice(0, m.size - MAX_WINDOWS)) m.delete(`${e.start}:${e.end}`);
  }
  return prev;
}

function onSnapshot(msg) {
  S.lastId = msg.id;
  setFeeds(msg.feeds);
  for (const s of msg.status || []) S.status[s.job] = s;
  S.windows = {};
  const byKey = (msg.windows || {})[S.feed] || {};
  for (const [key, rows] of Object.entries(byKey)) {
    // Newest first from the server: apply oldest first.
    for (const r of rows.slice().reverse()) applyRow(key, r, "upsert");
    // What the snapshot holds was settled before: not flashed as new.
    for (const e of S.windows[key].values()) e.at = 0;
  }
  if (msg.resync) {
    addChange({ note: `resynced (${msg.resync === "lagged" ? "the page fell behind" : msg.resync === "gone" ? "its position is no longer in the change log" : "the server lost its history"}): showing a fresh snapshot` });
    setConn("resync");
    setTimeout(() => S.conn === "resync" && setConn("live"), 1500);
  }
  markAll();
}

function onChange(msg) {
  S.lastId = msg.id;
  if (msg.feed !== S.feed) return;
  const prev = applyRow(msg.key, msg.row, msg.op);
  addChange({ key: msg.key, row: msg.row, op: msg.op, prev: prev && prev.row });
  markAll();
  refreshKeysSoon();
}

// The top keys follow changes within half a second (and every 3 s regardless).
let keysSoon = null;
function refreshKeysSoon() {
  if (keysSoon) return;
  keysSoon = setTimeout(() => { keysSoon = null; refreshKeys(); }, 500);
}

function setFeeds(list) {
  let changed = false;
  for (const f of list || []) {
    if (!S.feeds[f.id] || JSON.stringify(S.feeds[f.id]) !== JSON.stringify(f)) { S.feeds[f.id] = f; changed = true; }
  }
  if (changed) renderFeedSelect();
}

function markAll() { S.dirty.charts = S.dirty.table = true; schedule(); }

// ---------------------------------------------------------------- the stream

function setConn(state, text) {
  S.conn = state;
  const c = $("#conn");
  c.className = `conn ${state}`;
  $("#conn-text").textContent = text || { live: "live", resync: "resyncing", connecting: "connecting", off: "disconnected" }[state] || state;
  document.body.dataset.conn = state;
}

function subscribe() {
  if (S.es) { S.es.close(); S.es = null; }
  if (!S.feed) return;
  const q = new URLSearchParams();
  q.append("feed", S.feed);
  for (const k of S.keys) q.append("key", k);
  q.append("limit", String(MAX_WINDOWS));
  const es = new EventSource(`api/events?${q}`);
  S.es = es;
  S.subscribed = S.keys.slice();
  setConn("connecting");
  es.onopen = () => setConn("live");
  es.onerror = () => setConn(es.readyState === EventSource.CLOSED ? "off" : "connecting", es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting");
  const on = (name, f) => es.addEventListener(name, (ev) => {
    if (es !== S.es) return;
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    f(msg);
    $("#last-id").textContent = S.lastId || "-";
  });
  on("snapshot", onSnapshot);
  on("change", onChange);
  on("status", (m) => { S.status[m.status.job] = m.status; S.dirty.jobs = true; schedule(); });
  on("feeds", (m) => setFeeds(m.feeds));
  on("bye", () => setConn("connecting", "server restarting"));
}

// Which keys the charts show: the top N by the chosen aggregate, or one key. The
// subscription follows (a new snapshot) only when the set changes.
async function refreshKeys() {
  if (!S.feed) return;
  try {
    const sort = S.sort ? `&sort=${encodeURIComponent(S.sort)}` : "";
    const r = await fetch(`api/keys?feed=${encodeURIComponent(S.feed)}${sort}&limit=20`);
    if (!r.ok) return;
    S.leaders = (await r.json()).keys || [];
    const r2 = await fetch(`api/keys?feed=${encodeURIComponent(S.feed)}&limit=500`);
    if (r2.ok) S.knownKeys = ((await r2.json()).keys || []).map((k) => k.key).sort(naturalCmp);
  } catch (e) { return; }
  renderLeaders();
  renderKeySelect();
  let want;
  if (S.mode === "one") want = S.key ? [S.key] : [];
  else want = S.leaders.slice(0, S.topN).map((k) => k.key);
  const have = S.subscribed || [];
  const same = want.length === have.length && want.every((k, i) => k === have[i]);
  if (!same && (want.length > 0 || !S.es)) { S.keys = want; subscribe(); }
  else if (want.length === 0 && S.keys.length === 0 && !S.es) subscribe();
}

function naturalCmp(a, b) { return a.localeCompare(b, undefined, { numeric: true }); }

// ---------------------------------------------------------------- rendering

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    if (S.dirty.jobs) { renderJobs(); S.dirty.jobs = false; }
    if (S.dirty.charts) { renderCharts(); S.dirty.charts = false; }
    if (S.dirty.table) { renderTable(); S.dirty.table = false; }
    const any = Object.values(S.windows).some((m) => m.size > 0);
    $("#empty").style.display = any ? "none" : "";
  });
}

function renderFeedSelect() {
  const sel = $("#feed");
  const ids = Object.keys(S.feeds).sort();
  const cur = sel.value;
  sel.replaceChildren(...ids.map((id) => {
    const f = S.feeds[id];
    return el("option", { value: id }, f.flow ? `${f.job} · ${f.flow}` : id);
  }));
  if (!S.feed || !S.feeds[S.feed]) {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("feed");
    S.feed = (fromHash && S.feeds[fromHash]) ? fromHash : (cur && S.feeds[cur]) ? cur : ids[0] || null;
    selectFeed(S.feed);
  }
  sel.value = S.feed || "";
}

function selectFeed(id) {
  S.feed = id;
  S.windows = {};
  S.leaders = [];
  S.keys = [];
  S.subscribed = null;
  const d = feedDesc();
  const aggs = aggregates();
  $("#feed-info").textContent = d ? [d.window, d.key_fields && d.key_fields.length ? `by ${d.key_fields.join(", ")}` : "global", d.key ? `Redis ${d.key}` : ""].filter(Boolean).join(" · ") : "";
  const sort = $("#sort");
  sort.replaceChildren(...aggs.map((a) => el("option", { value: a }, a)));
  S.sort = aggs[0] || null;
  sort.value = S.sort || "";
  const box = $("#aggs");
  box.querySelectorAll("label").forEach((l) => l.remove());
  S.aggs = new Set(aggs.slice(0, 4));
  for (const a of aggs) {
    const cb = el("input", { type: "checkbox", value: a });
    cb.checked = S.aggs.has(a);
    cb.addEventListener("change", () => { cb.checked ? S.aggs.add(a) : S.aggs.delete(a); S.dirty.charts = true; schedule(); });
    const l = el("label");
    l.append(cb, ` ${a}`);
    box.append(l);
  }
  for (const c of Object.values(S.charts)) { c.u.destroy(); c.el.remove(); }
  S.charts = {};
  if (id) location.hash = `feed=${encodeURIComponent(id)}`;
  if (S.es) { S.es.close(); S.es = null; }
  refreshKeys();
  markAll();
}

function renderKeySelect() {
  const sel = $("#key");
  const cur = S.key;
  const keys = S.knownKeys.length ? S.knownKeys : S.leaders.map((l) => l.key);
  if (sel.options.length === keys.length && [...sel.options].every((o, i) => o.value === keys[i])) return;
  sel.replaceChildren(...keys.map((k) => el("option", { value: k }, k)));
  if (cur && keys.includes(cur)) sel.value = cur;
  else if (keys.length) { S.key = keys[0]; sel.value = S.key; }
}

function renderLeaders() {
  $("#leaders-agg").textContent = S.sort || "value";
  const tb = $("#leaders tbody");
  const rows = S.leaders.slice(0, 10).map((l, i) => {
    const tr = el("tr", { "data-key": l.key, title: "show this key" });
    const sw = el("span", { class: "badge", style: `background:${i < S.topN && S.mode === "top" ? PALETTE[i % PALETTE.length] : "#cbd5e0"};color:#fff` }, " ");
    const td = el("td");
    td.append(sw, ` ${l.key}`);
    tr.append(td, el("td", { class: "num" }, fmtNum(S.sort ? l.latest[S.sort] : null)), el("td", { class: "muted", title: fmtWindow(l.latest.window_start, l.latest.window_end) }, fmtTime(l.latest.window_start)));
    tr.addEventListener("click", () => { setMode("one", l.key); });
    return tr;
  });
  tb.replaceChildren(...rows);
}

function setMode(mode, key) {
  S.mode = mode;
  document.querySelector(`input[name=mode][value=${mode}]`).checked = true;
  if (key) { S.key = key; $("#key").value = key; }
  refreshKeys();
}

function seriesKeys() {
  if (S.keys.length) return S.keys;
  return Object.keys(S.windows).sort(naturalCmp).slice(0, S.topN);
}

// The points of a chart: one x per window start. A key without a window at some x is
// `undefined` there (uPlot draws the line across it); where no key has a window for
// more than ten window lengths (the job was stopped, or idle), a `null` point breaks
// every line, so that a line never claims data across hours of nothing.
function chartData(agg, keys) {
  const xsSet = new Set();
  const lengths = [];
  for (const k of keys) for (const e of (S.windows[k] || new Map()).values()) { xsSet.add(e.start); lengths.push(e.end - e.start); }
  const starts = [...xsSet].sort((a, b) => a - b);
  lengths.sort((a, b) => a - b);
  const typical = lengths.length ? Math.max(1, lengths[lengths.length >> 1]) : 1;
  const xs = [];
  const breaks = new Set();
  starts.forEach((x, i) => {
    if (i > 0 && x - starts[i - 1] > 10 * typical) { breaks.add(xs.length); xs.push(starts[i - 1] + typical); }
    xs.push(x);
  });
  const index = new Map(xs.map((x, i) => [x, i]));
  for (const i of breaks) index.delete(xs[i]);
  const marks = keys.map(() => new Array(xs.length).fill(null));
  const series = keys.map((k, si) => {
    const ys = xs.map((x, i) => (breaks.has(i) ? null : undefined));
    for (const e of (S.windows[k] || new Map()).values()) {
      const i = index.get(e.start);
      const v = e.row[agg];
      const y = typeof v === "number" ? v : null;
      if (e.status === "retracted") { if (marks[si][i] === null) marks[si][i] = { kind: "retracted", y }; continue; }
      ys[i] = y;
      marks[si][i] = e.status === "corrected" ? { kind: "corrected", y, rev: e.rev } : null;
    }
    return ys;
  });
  return { data: [xs.map((x) => x / 1000), ...series], marks };
}

function drawMarks(u, chart) {
  const ctx = u.ctx;
  ctx.save();
  const dpr = devicePixelRatio || 1;
  chart.marks.forEach((ms, si) => ms.forEach((m, i) => {
    if (!m || m.y === null || !u.series[si + 1].show) return;
    const x = u.valToPos(u.data[0][i], "x", true);
    const y = u.valToPos(m.y, "y", true);
    if (m.kind === "corrected") {
      ctx.strokeStyle = "#b7791f";
      ctx.lineWidth = 2 * dpr;
      ctx.beginPath();
      ctx.arc(x, y, 6 * dpr, 0, 2 * Math.PI);
      ctx.stroke();
    } else {
      const r = 5 * dpr;
      ctx.strokeStyle = "#c53030";
      ctx.lineWidth = 2 * dpr;
      ctx.beginPath();
      ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r);
      ctx.moveTo(x + r, y - r); ctx.lineTo(x - r, y + r);
      ctx.stroke();
    }
  }));
  ctx.restore();
}

function renderCharts() {
  const box = $("#charts");
  const keys = seriesKeys();
  const aggs = aggregates().filter((a) => S.aggs.has(a));
  for (const [agg, c] of Object.entries(S.charts)) {
    if (!aggs.includes(agg) || c.keys.join("\n") !== keys.join("\n")) { c.u.destroy(); c.el.remove(); delete S.charts[agg]; }
  }
  const width = Math.max(300, Math.floor((box.clientWidth || 900) / Math.max(1, Math.min(aggs.length, Math.floor((box.clientWidth || 900) / 420))) - 30));
  for (const agg of aggs) {
    const { data, marks } = chartData(agg, keys);
    let c = S.charts[agg];
    if (!c) {
      const wrap = el("div", { class: "chart", "data-agg": agg });
      wrap.append(el("h3", {}, agg));
      box.append(wrap);
      c = { keys: keys.slice(), el: wrap, marks };
      const opts = {
        width, height: 230,
        scales: { x: { time: true } },
        legend: { live: true },
        cursor: { points: { size: 7 } },
        series: [
          { label: "window", value: (u, v) => (v === null || v === undefined ? "" : fmtTime(v * 1000, false)) },
          ...keys.map((k, i) => ({ label: k, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false, points: { show: true, size: 5 }, value: (u, v) => fmtNum(v) })),
        ],
        axes: [
          { label: "window start (event time)", labelSize: 18, space: 90, stroke: "#667085", grid: { stroke: "#eef0f3" }, values: (u, vals) => vals.map((v) => fmtTime(v * 1000, false)) },
          { label: agg, labelSize: 18, size: 64, stroke: "#667085", grid: { stroke: "#eef0f3" }, values: (u, vals) => vals.map(fmtNum) },
        ],
        hooks: { draw: [(u) => drawMarks(u, c)] },
      };
      c.u = new uPlot(opts, data, wrap);
      S.charts[agg] = c;
    } else {
      c.marks = marks;
      c.u.setData(data);
    }
    if (Math.abs(c.u.width - width) > 4) c.u.setSize({ width, height: 230 });
  }
}

function renderTable() {
  const keys = seriesKeys();
  const key = S.mode === "one" ? S.key : keys[0];
  $("#focus-key").textContent = key || "-";
  const aggs = aggregates();
  const head = $("#windows-head");
  const want = ["window", ...aggs, "rev", "status"];
  if ([...head.children].map((t) => t.textContent).join("|") !== want.join("|")) {
    head.replaceChildren(...want.map((h, i) => el("th", { class: i > 0 && i <= aggs.length ? "num" : "" }, h)));
  }
  const tb = $("#windows tbody");
  const m = S.windows[key] || new Map();
  const entries = [...m.values()].sort((a, b) => b.start - a.start || b.end - a.end).slice(0, 15);
  const existing = new Map([...tb.children].map((tr) => [tr.dataset.window, tr]));
  const rows = entries.map((e) => {
    const id = `${e.start}:${e.end}`;
    const sig = `${e.status}|${e.rev}|${aggs.map((a) => e.row[a]).join("|")}`;
    let tr = existing.get(id);
    if (!tr) {
      tr = el("tr", { "data-window": id });
      tr.dataset.sig = "";
    }
    if (tr.dataset.sig !== sig) {
      const cells = [el("td", {}, fmtWindow(e.start, e.end)), ...aggs.map((a) => el("td", { class: "num" }, fmtNum(e.row[a]))), el("td", { class: "num" }, String(e.rev))];
      const badge = el("span", { class: `badge ${e.status}` }, e.status === "corrected" ? `corrected` : e.status);
      const st = el("td");
      st.append(badge);
      tr.replaceChildren(...cells, st);
      tr.className = e.status === "retracted" ? "retracted" : "";
      if (tr.dataset.sig !== "" || e.at) {
        if (e.at && Date.now() - e.at < 3000) { tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash"); }
      }
      tr.dataset.sig = sig;
      tr.dataset.revision = String(e.rev);
      tr.dataset.status = e.status;
    }
    return tr;
  });
  // Reorder only when needed (no flicker).
  const same = rows.length === tb.children.length && rows.every((r, i) => tb.children[i] === r);
  if (!same) tb.replaceChildren(...rows);
}

function addChange(c) {
  const ol = $("#changes");
  const li = el("li");
  li.append(el("span", { class: "t" }, fmtTime(Date.now())));
  if (c.note) {
    li.append(el("span", { class: "badge corrected" }, "resync"), el("span", {}, c.note));
  } else {
    const status = c.op === "retract" ? "retracted" : c.row.revision > 0 ? "corrected" : "fired";
    li.dataset.status = status;
    li.append(el("span", { class: `badge ${status}` }, status === "corrected" ? `rev ${c.row.revision}` : status));
    li.append(el("span", { class: "k" }, c.key), el("span", { class: "muted" }, fmtWindow(c.row.window_start, c.row.window_end)));
    const agg = S.sort || aggregates()[0];
    if (agg && c.op !== "retract") {
      const now = fmtNum(c.row[agg]);
      const text = c.prev && c.prev[agg] !== c.row[agg] ? `${agg} ${fmtNum(c.prev[agg])} → ${now}` : `${agg} ${now}`;
      li.append(el("span", {}, text));
    }
  }
  ol.prepend(li);
  while (ol.children.length > MAX_CHANGES) ol.lastChild.remove();
}

function renderJobs() {
  const box = $("#jobs");
  const now = Date.now();
  // Jobs that stopped reporting more than 10 minutes ago are not shown.
  const jobs = Object.values(S.status)
    .filter((s) => !(s.progress && s.progress.time && now - s.progress.time > 600000))
    .sort((a, b) => a.job.localeCompare(b.job));
  const cards = jobs.map((s) => {
    const p = s.progress || {};
    const sources = p.sources || [];
    const wm = sources.length ? Math.min(...sources.map((x) => (x.watermark === null || x.watermark === undefined ? -Infinity : x.watermark))) : null;
    const wmKnown = wm !== null && isFinite(wm);
    const lags = sources.map((x) => x.lag).filter((x) => x !== null && x !== undefined);
    const late = (p.flows || []).reduce((n, f) => n + (f.late || 0), 0);
    const recordsIn = sources.reduce((n, x) => n + (x.records_in || 0), 0);
    const stale = p.time ? now - p.time : null;
    const card = el("div", { class: "job", "data-job": s.job });
    const metric = (label, value, cls, title) => {
      const m = el("div", { class: `metric ${cls || ""}`, title: title || "" });
      m.append(el("span", { class: "v" }, value), el("span", { class: "l" }, label));
      return m;
    };
    const wmLag = wmKnown && wm < I64_MAX ? (p.time || now) - wm : null;
    card.append(
      el("span", { class: "name" }, s.job),
      metric("events/s", s.rate === null || s.rate === undefined ? "–" : fmtNum(Math.round(s.rate)), "", "records read per second"),
      metric("events in", fmtNum(recordsIn)),
      metric("watermark", wmKnown ? fmtTime(wm, true) : "–", "", "event time up to which the job has seen everything"),
      metric("watermark lag", wmLag === null ? (wm >= I64_MAX ? "done" : "–") : fmtDur(wmLag), wmLag > 60000 ? "warn" : "", "wall clock minus watermark"),
      metric("consumer lag", lags.length ? fmtNum(lags.reduce((a, b) => a + b, 0)) : "–", lags.length && lags.reduce((a, b) => a + b, 0) > 100000 ? "warn" : "", "Kafka records not read yet"),
      metric("too late", fmtNum(late), late > 0 ? "warn" : "", "events past the allowed lateness (sent to the late output)"),
    );
    if (stale !== null && stale > 5000) card.append(metric("last report", `${fmtDur(stale)} ago`, "bad"));
    return card;
  });
  box.replaceChildren(...cards);
}

// ---------------------------------------------------------------- start

async function start() {
  $("#feed").addEventListener("change", (e) => selectFeed(e.target.value));
  $("#sort").addEventListener("change", (e) => { S.sort = e.target.value; refreshKeys(); });
  $("#top-n").addEventListener("change", (e) => { S.topN = Number(e.target.value); refreshKeys(); });
  $("#key").addEventListener("change", (e) => setMode("one", e.target.value));
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", (e) => setMode(e.target.value)));
  window.addEventListener("resize", () => { S.dirty.charts = true; schedule(); });
  setInterval(refreshKeys, 3000);
  setInterval(() => { S.dirty.jobs = true; schedule(); }, 1000);
  for (;;) {
    try {
      const r = await fetch("api/feeds");
      const body = await r.json();
      S.source = body.source || "";
      $("#source").textContent = S.source;
      setFeeds(body.feeds);
      if (Object.keys(S.feeds).length) break;
      setConn("connecting", "waiting for a job");
    } catch (e) {
      setConn("off");
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  try {
    const st = await (await fetch("api/status")).json();
    for (const s of st.status || []) S.status[s.job] = s;
    S.dirty.jobs = true;
    schedule();
  } catch (e) { /* the stream brings it */ }
}

start();
