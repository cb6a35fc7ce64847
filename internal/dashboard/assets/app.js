// sbx dashboard: sign-in, routing and the overview page.
//
// Sign-in POSTs the API key once to /dashboard/session; the server keeps it
// and sets an HttpOnly session cookie. This script never stores the key:
// it keeps only the session's CSRF token in memory (and asks the server
// for it again after a reload). Data calls go to /dashboard/api/<API path>
// with that token. The sandbox table and event feed are pushed from
// /events/stream, read with fetch.
"use strict";

let csrf = "";          // the session's CSRF token; "" when signed out
let streamAbort = null;
const rows = new Map(); // sandboxId -> <tr>
let metadataFilter = "";
let rangeHours = 1;
let adminSession = false; // signed in with the admin key (nodes.js)

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

// request sends a data call with the session cookie and CSRF token.
async function request(method, url, body, headers) {
  const opts = { method, headers: { "X-CSRF-Token": csrf, ...(headers || {}) }, credentials: "same-origin" };
  if (body !== undefined) {
    if (!opts.headers["Content-Type"]) opts.headers["Content-Type"] = "application/json";
    opts.body = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  if (resp.status === 401) {
    signedOut("session expired: sign in again");
    throw new Error("unauthorized");
  }
  return resp;
}

async function api(method, path, body) {
  const resp = await request(method, "/dashboard/api" + path, body);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!resp.ok) throw new Error((data && data.message) || resp.statusText);
  return data;
}

function setStatus(s) { $("#status").textContent = s; }

function fmtTime(t) { return t ? new Date(t).toLocaleTimeString() : ""; }
function fmtDateTime(t) { return t ? new Date(t).toLocaleString() : ""; }
function fmtUSD(x) {
  x = x || 0;
  return "$" + (x === 0 ? "0" : x < 0.01 ? x.toFixed(7) : x.toFixed(x < 1 ? 4 : 2));
}
function fmtSecs(s) { return s >= 3600 ? (s / 3600).toFixed(1) + " h" : s >= 60 ? (s / 60).toFixed(1) + " min" : Math.round(s) + " s"; }
function fmtBytes(b) { return b >= 1 << 30 ? (b / (1 << 30)).toFixed(1) + " GiB" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(1) + " MiB" : b >= 1024 ? (b / 1024).toFixed(1) + " KiB" : (b || 0) + " B"; }
function fmtMetadata(m) { return Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join(", "); }

// --- routing -------------------------------------------------------------

const views = { overview: "#view-overview", sandbox: "#view-sandbox", templates: "#view-templates", nodes: "#view-nodes" };
let leaveView = null; // cleanup of the current page (timers, terminal)

function route() {
  if (!csrf) return;
  if (leaveView) { leaveView(); leaveView = null; }
  const h = location.hash.replace(/^#/, "") || "/";
  let name = "overview";
  let m;
  if ((m = h.match(/^\/sandbox\/([a-z0-9]+)$/))) name = "sandbox";
  else if (h === "/templates") name = "templates";
  else if (h === "/nodes") name = "nodes";
  if (adminSession) name = "nodes"; // the admin key has no team: the cluster's nodes are its view
  for (const [k, sel] of Object.entries(views)) $(sel).hidden = k !== name;
  if (name === "sandbox") leaveView = showSandbox(m[1]);
  else if (name === "templates") leaveView = showTemplates();
  else if (name === "nodes") leaveView = showNodes();
}
window.addEventListener("hashchange", route);

// --- sandbox table -------------------------------------------------------

// confirmButton asks for a second click within 5 s before acting: a kill
// cannot be undone.
function confirmButton(label, confirmLabel, cls, id, action) {
  const b = el("button", { class: cls, "data-id": id, textContent: label });
  let timer = null;
  b.onclick = () => {
    if (!b.classList.contains("confirm")) {
      b.classList.add("confirm");
      b.textContent = confirmLabel;
      timer = setTimeout(() => { b.classList.remove("confirm"); b.textContent = label; }, 5000);
      return;
    }
    clearTimeout(timer);
    b.classList.remove("confirm");
    b.textContent = label;
    action(b);
  };
  return b;
}

function matchesFilter(sb) {
  if (!metadataFilter) return true;
  const want = new URLSearchParams(metadataFilter);
  for (const [k, v] of want) if ((sb.metadata || {})[k] !== v) return false;
  return true;
}

function upsertRow(sb) {
  const id = sb.sandboxID;
  let tr = rows.get(id);
  if (!matchesFilter(sb)) { if (tr) removeRow(id); return; }
  const kill = confirmButton("Kill", "Confirm kill", "kill", id, (b) => act("DELETE", `/sandboxes/${id}`, b));
  const pause = el("button", { class: "pause", "data-id": id, textContent: sb.state === "paused" ? "Resume" : "Pause" });
  pause.onclick = () => sb.state === "paused"
    ? act("POST", `/sandboxes/${id}/resume`, pause, {})
    : act("POST", `/sandboxes/${id}/pause`, pause);
  const cells = [
    el("td", { class: "id" }, el("a", { href: `#/sandbox/${id}` }, id)), el("td", {}, sb.alias || sb.templateID || ""),
    el("td", { class: "state" }, sb.state || "running"),
    el("td", {}, fmtTime(sb.startedAt)), el("td", {}, sb.cpuCount ?? ""), el("td", {}, sb.memoryMB ? sb.memoryMB + " MB" : ""),
    el("td", { class: "meta" }, fmtMetadata(sb.metadata)),
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
  $("#no-sandboxes").textContent = metadataFilter ? "No running sandboxes match the filter." : "No running sandboxes.";
  if (!metadataFilter) $("#stat-running").textContent = rows.size;
}

async function act(method, path, button, body) {
  button.disabled = true;
  try { await api(method, path, body); } catch (e) { alert(`${method} ${path}: ${e.message}`); }
  finally { button.disabled = false; }
  // The table changes when the event arrives on the stream.
}

async function loadSandboxes() {
  let q = "/v2/sandboxes?state=running,paused&limit=100";
  if (metadataFilter) q += "&metadata=" + encodeURIComponent(metadataFilter);
  const list = await api("GET", q);
  for (const id of [...rows.keys()]) removeRow(id);
  for (const sb of list || []) upsertRow(sb);
  $("#filter-note").textContent = metadataFilter ? `${rows.size} matching` : "";
}

$("#filter").onsubmit = (e) => {
  e.preventDefault();
  metadataFilter = $("#filter-metadata").value.trim();
  loadSandboxes().catch((err) => { $("#filter-note").textContent = err.message; });
};
$("#filter-clear").onclick = () => { $("#filter-metadata").value = ""; $("#filter").requestSubmit(); };

// --- events --------------------------------------------------------------

// describeEvent says what an event is about: a sandbox, or for template
// builds the template's name.
function describeEvent(ev) {
  const d = ev.eventData || {};
  if (ev.type.startsWith("template.build.")) {
    const name = (d.names && d.names[0]) || ev.sandboxTemplateId || d.template_id || "";
    return `template ${name}` + (d.step ? ` step ${d.step}` : "");
  }
  return ev.sandboxId || "";
}

function eventItem(ev) {
  return el("li", {}, el("span", { class: "muted" }, fmtTime(ev.timestamp) + " "),
    el("span", { class: "type" }, ev.type), " ", describeEvent(ev), " ", reasonOf(ev));
}

function addEvent(ev) {
  $("#events").prepend(eventItem(ev));
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

const eventListeners = new Set(); // pages that follow the stream (sandbox page)

async function onEvent(ev) {
  addEvent(ev);
  scheduleRefresh();
  for (const f of eventListeners) f(ev);
  const id = ev.sandboxId;
  switch (ev.type) {
    case "sandbox.lifecycle.created":
    case "sandbox.lifecycle.resumed":
    case "sandbox.lifecycle.updated":
    case "sandbox.lifecycle.paused": {
      const state = ev.type.endsWith("paused") ? "paused" : "running";
      if (!metadataFilter) upsertRow({ sandboxID: id, templateID: ev.sandboxTemplateId, state, startedAt: ev.timestamp });
      try {
        const sb = await api("GET", `/sandboxes/${id}`);
        upsertRow({ ...sb, state: sb.state || state });
      } catch { /* keep the row from the event */ }
      break;
    }
    case "sandbox.lifecycle.killed":
      removeRow(id);
      break;
    case "team.budget.exceeded":
    case "team.budget.warning":
      safe(loadBudget);
      break;
  }
}

// stream reads /events/stream and reconnects after errors, resuming from
// the last event id.
async function stream() {
  let last = "";
  while (csrf) {
    const ctl = new AbortController();
    streamAbort = ctl;
    try {
      const resp = await fetch("/dashboard/api/events/stream" + (last ? `?lastEventId=${last}` : ""), { signal: ctl.signal, credentials: "same-origin" });
      if (resp.status === 401) { signedOut("session expired: sign in again"); return; }
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
    if (!csrf) return;
    setStatus("reconnecting…");
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// --- charts, summary, budget, deliveries ---------------------------------

function chart(svg, points, key, fmt) {
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 160, pad = 18;
  const vals = points.map((p) => (typeof key === "function" ? key(p) : p[key]) || 0);
  const max = Math.max(1e-12, ...vals);
  const x = (i) => pad + (i * (W - 2 * pad)) / Math.max(1, vals.length - 1);
  const y = (v) => H - pad - (v / max) * (H - 2 * pad);
  const d = vals.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const area = document.createElementNS(ns, "path");
  area.setAttribute("class", "area");
  area.setAttribute("d", vals.length ? d + ` L${x(vals.length - 1)},${H - pad} L${x(0)},${H - pad} Z` : "");
  const line = document.createElementNS(ns, "path");
  line.setAttribute("class", "line");
  line.setAttribute("d", vals.length ? d : "");
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 4);
  label.setAttribute("y", 12);
  label.textContent = `max ${fmt(max === 1e-12 ? 0 : max)} · ${vals.length} points`;
  svg.append(area, line, label);
}

// The usage range picks a step that keeps charts near 60-170 points.
const steps = { 1: "1m", 6: "5m", 24: "15m", 168: "1h", 720: "6h" };

async function loadCharts() {
  const to = new Date();
  const from = new Date(to.getTime() - rangeHours * 3600e3);
  const q = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}&step=${steps[rangeHours] || "1h"}`;
  const ts = await api("GET", "/analytics/timeseries?" + q);
  chart($("#chart-concurrency"), ts.points, "peakConcurrency", (v) => String(v));
  chart($("#chart-cost"), ts.points, "costUsd", fmtUSD);
  const s = await api("GET", "/analytics/summary");
  $("#stat-created").textContent = s.created;
  $("#stat-peak").textContent = s.peakConcurrency;
  $("#stat-lifetime").textContent = s.killed ? `${fmtSecs(s.avgLifetimeSeconds)} / ${fmtSecs(s.p95LifetimeSeconds)}` : "–";
  $("#stat-cost").textContent = fmtUSD(s.cost.costUsd);
}

$("#range").onchange = () => {
  rangeHours = Number($("#range").value.replace("h", ""));
  const label = "(" + $("#range").selectedOptions[0].textContent + ")";
  for (const e of document.querySelectorAll(".range-label")) e.textContent = label;
  safe(loadCharts);
};

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

// loadDeliveries shows each webhook's latest deliveries. The API answers
// {data: [delivery]}; a delivery has its event and overall status, and
// its attempts carry the per-attempt fields (HTTP status, duration,
// error), newest last.
async function loadDeliveries() {
  const tbody = $("#deliveries tbody");
  const empty = (msg) => tbody.replaceChildren(el("tr", {}, el("td", { colSpan: 9, class: "muted" }, msg)));
  let hooks;
  try { hooks = await api("GET", "/events/webhooks"); } catch { empty("Webhooks not available here."); return; }
  const out = [];
  for (const h of hooks || []) {
    let page;
    try { page = await api("GET", `/events/webhooks/${h.id}/deliveries?limit=20`); } catch (e) { console.warn(e); continue; }
    for (const d of (page && page.data) || []) {
      const attempts = d.attempts || [];
      const last = attempts.reduce((a, b) => (!a || b.attempt > a.attempt ? b : a), null);
      out.push({ ...d, hook: h.name || h.id, last, time: last ? last.timestamp : "" });
    }
  }
  out.sort((a, b) => (a.time < b.time ? 1 : -1));
  if (!out.length) { empty("No deliveries yet."); return; }
  tbody.replaceChildren(...out.slice(0, 50).map((d) => el("tr", { "data-delivery": d.deliveryId },
    el("td", {}, fmtTime(d.time)), el("td", {}, d.hook), el("td", {}, d.eventType), el("td", { class: "id" }, d.sandboxId || ""),
    el("td", { class: "status-" + d.status }, d.status + (d.status === "pending" && d.nextAttemptAt ? ` (next ${fmtTime(d.nextAttemptAt)})` : "")),
    el("td", { class: "attempts" }, String((d.attempts || []).length)),
    el("td", { class: "http" }, d.last && d.last.responseHttpStatusCode != null ? String(d.last.responseHttpStatusCode) : ""),
    el("td", {}, d.last ? `${Math.round(d.last.durationMs)} ms` : ""),
    el("td", { class: "error" }, d.last && d.last.errorMessage ? `${d.last.errorClass || "error"}: ${d.last.errorMessage}` : ""))));
}

function safe(fn) { return fn().catch((e) => console.warn(e)); }

// --- session -------------------------------------------------------------

function signedOut(msg) {
  csrf = "";
  if (streamAbort) streamAbort.abort();
  if (leaveView) { leaveView(); leaveView = null; }
  $("#main").hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  setStatus(msg);
}

async function connect() {
  try {
    await loadSandboxes();
    adminSession = false;
  } catch (e) {
    // The admin key lists no team's sandboxes but sees the nodes.
    try { await api("GET", "/nodes"); adminSession = true; } catch { setStatus("cannot connect: " + e.message); return; }
  }
  $("#main").hidden = false;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#login").hidden = true;
  $("#nav-overview").hidden = $("#nav-templates").hidden = adminSession;
  $("#nav-nodes").hidden = !adminSession;
  if (adminSession) { setStatus("signed in with the admin key"); route(); return; }
  const evs = await api("GET", "/events/sandboxes?limit=50").catch(() => []);
  for (const ev of (evs || []).reverse()) addEvent(ev);
  stream();
  safe(loadCharts); safe(loadBudget); safe(loadDeliveries);
  route();
}

$("#login").onsubmit = async (e) => {
  e.preventDefault();
  const key = $("#key").value.trim();
  $("#key").value = ""; // the key leaves the page once, in this request
  const resp = await fetch("/dashboard/session", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ apiKey: key }),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) { setStatus(data.message || `sign-in failed (HTTP ${resp.status})`); return; }
  csrf = data.csrfToken;
  setStatus("signed in");
  connect();
};
$("#logout").onclick = async () => {
  await fetch("/dashboard/session", { method: "DELETE", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
  signedOut("signed out");
};
setInterval(() => { if (csrf && !$("#view-overview").hidden) for (const id of rows.keys()) safe(() => loadUsage(id)); }, 10000);
setInterval(() => { if (csrf && !$("#view-overview").hidden) { safe(loadCharts); safe(loadBudget); safe(loadDeliveries); } }, 30000);

// A reload keeps the sign-in: the cookie is still there, and the server
// hands this page the session's CSRF token again.
(async () => {
  const resp = await fetch("/dashboard/session", { credentials: "same-origin" }).catch(() => null);
  if (resp && resp.ok) {
    csrf = (await resp.json()).csrfToken;
    connect();
  }
})();
