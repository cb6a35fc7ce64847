// sbx dashboard. Every data call sends the API key as X-API-Key; the key
// stays in this browser's localStorage. The sandbox table and event feed are
// updated by push from /events/stream, read with fetch because EventSource
// cannot send headers.
"use strict";

const KEY_STORE = "sbx.apiKey";
let apiKey = localStorage.getItem(KEY_STORE) || "";
let streamAbort = null;
const rows = new Map(); // sandboxId -> <tr>

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-API-Key": apiKey } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    setStatus("invalid API key");
    throw new Error("unauthorized");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new Error((data && data.message) || resp.statusText);
  return data;
}

function setStatus(s) { $("#status").textContent = s; }

function fmtTime(t) { return t ? new Date(t).toLocaleTimeString() : ""; }
function fmtUSD(x) {
  x = x || 0;
  return "$" + (x === 0 ? "0" : x < 0.01 ? x.toFixed(7) : x.toFixed(x < 1 ? 4 : 2));
}
function fmtSecs(s) { return s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : Math.round(s) + " s"; }

// --- sandbox table -------------------------------------------------------

function upsertRow(sb) {
  const id = sb.sandboxID;
  let tr = rows.get(id);
  const kill = el("button", { class: "kill", "data-id": id, textContent: "Kill" });
  kill.onclick = () => act("DELETE", `/sandboxes/${id}`, kill);
  const pause = el("button", { class: "pause", "data-id": id, textContent: sb.state === "paused" ? "Resume" : "Pause" });
  pause.onclick = () => sb.state === "paused"
    ? act("POST", `/sandboxes/${id}/resume`, pause, {})
    : act("POST", `/sandboxes/${id}/pause`, pause);
  const cells = [
    el("td", { class: "id" }, id), el("td", {}, sb.alias || sb.templateID || ""), el("td", { class: "state" }, sb.state || "running"),
    el("td", {}, fmtTime(sb.startedAt)), el("td", {}, sb.cpuCount ?? ""), el("td", {}, sb.memoryMB ? sb.memoryMB + " MB" : ""),
    el("td", { class: "used" }, tr ? tr.querySelector(".used").textContent : ""),
    el("td", { class: "cost" }, tr ? tr.querySelector(".cost").textContent : ""),
    el("td", {}, pause, " ", kill),
  ];
  const fresh = el("tr", { "data-id": id, class: sb.state === "paused" ? "paused" : "" }, ...cells);
  if (tr) tr.replaceWith(fresh); else $("#sandboxes tbody").prepend(fresh);
  rows.set(id, fresh);
  updateEmpty();
  if (!tr) safe(() => loadUsage(id));
}

// loadUsage fills the measured (cgroup) and cost cells of a row.
async function loadUsage(id) {
  const u = await api("GET", `/sandboxes/${id}/usage`);
  const tr = rows.get(id);
  if (!tr) return;
  const m = u.measured;
  tr.querySelector(".used").textContent = m
    ? `${(100 * m.cpuUtilization).toFixed(0)}% CPU, ${(m.memoryBytes / 1048576).toFixed(0)} MB`
    : "";
  tr.querySelector(".cost").textContent = fmtUSD(u.allocated.costUsd);
}

function removeRow(id) {
  const tr = rows.get(id);
  if (tr) tr.remove();
  rows.delete(id);
  updateEmpty();
}

function updateEmpty() {
  $("#no-sandboxes").hidden = rows.size > 0;
  $("#stat-running").textContent = rows.size;
}

async function act(method, path, button, body) {
  button.disabled = true;
  try { await api(method, path, body); } catch (e) { alert(`${method} ${path}: ${e.message}`); }
  finally { button.disabled = false; }
  // The table changes when the event arrives on the stream.
}

async function loadSandboxes() {
  const list = await api("GET", "/v2/sandboxes?state=running,paused&limit=100");
  for (const id of [...rows.keys()]) removeRow(id);
  for (const sb of list || []) upsertRow(sb);
}

// --- events ------------------------------------------------------------

function addEvent(ev) {
  const li = el("li", {}, el("span", { class: "muted" }, fmtTime(ev.timestamp) + " "),
    el("span", { class: "type" }, ev.type), " ", ev.sandboxId || "",
    " ", reasonOf(ev));
  $("#events").prepend(li);
  while ($("#events").children.length > 200) $("#events").lastChild.remove();
}

function reasonOf(ev) {
  const d = ev.eventData || {};
  return d.kill_reason ? `(${d.kill_reason})` : d.pause_reason ? `(${d.pause_reason})` : d.limit ? `(${d.limit})` : d.rule ? `(${d.rule})` : "";
}

// Charts and totals follow the stream too, at most once a second.
let refreshTimer = null;
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; safe(loadCharts); safe(loadBudget); safe(loadDeliveries); }, 1000);
}

async function onEvent(ev) {
  addEvent(ev);
  scheduleRefresh();
  const id = ev.sandboxId;
  switch (ev.type) {
    case "sandbox.lifecycle.created":
    case "sandbox.lifecycle.resumed":
    case "sandbox.lifecycle.updated":
    case "sandbox.lifecycle.paused": {
      const state = ev.type.endsWith("paused") ? "paused" : "running";
      const prev = rows.get(id);
      upsertRow({ sandboxID: id, templateID: ev.sandboxTemplateId, state, startedAt: ev.timestamp });
      try {
        const sb = await api("GET", `/sandboxes/${id}`);
        if (rows.has(id)) upsertRow({ ...sb, state: sb.state || state });
      } catch { if (!prev) { /* keep the row from the event */ } }
      break;
    }
    case "sandbox.lifecycle.killed":
      removeRow(id);
      break;
    case "team.budget.exceeded":
    case "team.budget.warning":
      loadBudget();
      break;
  }
}

// stream reads /events/stream with fetch and reconnects after errors,
// resuming from the last event id.
async function stream() {
  let last = "";
  while (apiKey) {
    const ctl = new AbortController();
    streamAbort = ctl;
    try {
      const resp = await fetch("/events/stream" + (last ? `?lastEventId=${last}` : ""), { headers: { "X-API-Key": apiKey }, signal: ctl.signal });
      if (resp.status === 401) { setStatus("invalid API key"); return; }
      if (!resp.ok || !resp.body) throw new Error(`stream: HTTP ${resp.status}`);
      setStatus("connected (live)");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const rec = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let data = "", id = "";
          for (const line of rec.split("\n")) {
            if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
          }
          if (id) last = id;
          if (data) { try { await onEvent(JSON.parse(data)); } catch (e) { console.warn(e); } }
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      console.warn(e);
    }
    setStatus("reconnecting…");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// --- charts, summary, budget, deliveries --------------------------------

function chart(svg, points, key, fmt) {
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, pad = 18;
  const vals = points.map((p) => p[key] || 0);
  const max = Math.max(1e-12, ...vals);
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, vals.length - 1);
  const y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const d = vals.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const area = document.createElementNS(ns, "path");
  area.setAttribute("class", "area");
  area.setAttribute("d", d + ` L${x(vals.length - 1)},${H - pad} L${x(0)},${H - pad} Z`);
  const line = document.createElementNS(ns, "path");
  line.setAttribute("class", "line");
  line.setAttribute("d", d);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.textContent = "max " + fmt(max === 1e-12 ? 0 : max);
  svg.append(area, line, label);
}

async function loadCharts() {
  const ts = await api("GET", "/analytics/timeseries?step=1m");
  chart($("#chart-concurrency"), ts.points, "peakConcurrency", (v) => String(v));
  chart($("#chart-cost"), ts.points, "costUsd", fmtUSD);
  const s = await api("GET", "/analytics/summary");
  $("#stat-created").textContent = s.created;
  $("#stat-peak").textContent = s.peakConcurrency;
  $("#stat-lifetime").textContent = s.killed ? `${fmtSecs(s.avgLifetimeSeconds)} / ${fmtSecs(s.p95LifetimeSeconds)}` : "–";
  $("#stat-cost").textContent = fmtUSD(s.cost.costUsd);
}

function bar(label, cur, max, warnAt, fmt) {
  if (!max) return el("div", { class: "muted" }, `${label}: ${fmt(cur)} (no limit)`);
  const pct = Math.min(100, (100 * cur) / max);
  const cls = pct >= 100 ? "bar over" : warnAt && pct >= warnAt ? "bar warn" : "bar";
  const inner = el("div");
  inner.style.width = pct + "%";
  return el("div", {}, `${label}: ${fmt(cur)} of ${fmt(max)}`, el("div", { class: cls }, inner));
}

async function loadBudget() {
  const b = await api("GET", "/teams/me/budget");
  const s = b.status || {};
  const n = (v) => String(v ?? 0);
  $("#budget").replaceChildren(
    bar("Concurrent sandboxes", s.concurrent, b.maxConcurrent, b.warnAtPercent, n),
    bar("Created today", s.dailyCreates, b.maxDailyCreates, b.warnAtPercent, n),
    bar("Spend today", s.dailySpendUsd, b.maxDailySpendUsd, b.warnAtPercent, fmtUSD),
    bar("Spend this month", s.monthlySpendUsd, b.maxMonthlySpendUsd, b.warnAtPercent, fmtUSD),
    el("div", { class: "muted" }, `On spend breach: ${b.action || "none"}; warn at ${b.warnAtPercent || 0}%`),
  );
}

async function loadDeliveries() {
  const tbody = $("#deliveries tbody");
  let hooks;
  try { hooks = await api("GET", "/events/webhooks"); } catch { tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, "Webhooks not available here."))); return; }
  const out = [];
  for (const h of hooks || []) {
    let ds = [];
    try { ds = await api("GET", `/events/webhooks/${h.id}/deliveries?limit=20`); } catch { continue; }
    for (const d of ds || []) out.push({ ...d, hook: h.name || h.id });
  }
  out.sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1));
  tbody.replaceChildren(...out.slice(0, 50).map((d) => el("tr", {},
    el("td", {}, fmtTime(d.timestamp)), el("td", {}, d.hook), el("td", {}, d.eventType), el("td", { class: "id" }, d.sandboxId || ""),
    el("td", {}, d.attempt), el("td", { class: "status-" + d.status }, d.status), el("td", {}, d.responseHttpStatusCode ?? ""),
    el("td", {}, d.errorMessage || ""))));
  if (!out.length) tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 8, class: "muted" }, "No deliveries yet.")));
}

function safe(fn) { return fn().catch((e) => console.warn(e)); }

async function connect() {
  if (!apiKey) return;
  try {
    await loadSandboxes();
  } catch (e) {
    setStatus("cannot connect: " + e.message);
    return;
  }
  $("#main").hidden = false;
  $("#logout").hidden = false;
  const evs = await api("GET", "/events/sandboxes?limit=50").catch(() => []);
  for (const ev of (evs || []).reverse()) addEvent(ev);
  stream();
  safe(loadCharts); safe(loadBudget); safe(loadDeliveries);
}

$("#login").onsubmit = (e) => {
  e.preventDefault();
  apiKey = $("#key").value.trim();
  localStorage.setItem(KEY_STORE, apiKey);
  if (streamAbort) streamAbort.abort();
  connect();
};
$("#logout").onclick = () => {
  localStorage.removeItem(KEY_STORE);
  apiKey = "";
  if (streamAbort) streamAbort.abort();
  location.reload();
};
setInterval(() => { if (apiKey && !$("#main").hidden) for (const id of rows.keys()) safe(() => loadUsage(id)); }, 10000);
setInterval(() => { if (apiKey && !$("#main").hidden) { safe(loadCharts); safe(loadBudget); safe(loadDeliveries); } }, 30000);
if (apiKey) { $("#key").value = apiKey; connect(); }
