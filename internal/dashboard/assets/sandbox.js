// sbx dashboard: the per-sandbox page (details, metrics, log, files and a
// terminal). The agent's RPCs (envd's Connect protocol, JSON codec) go to
// /dashboard/envd/<id>/<RPC>; the server adds the sandbox's access token
// after checking the session's key owns the sandbox.
"use strict";

function envd(id, path, body, headers) {
  return request("POST", `/dashboard/envd/${id}/${path}`, body, { "Connect-Protocol-Version": "1", ...(headers || {}) });
}

// rpc makes a unary Connect call and returns the decoded reply.
async function rpc(id, method, msg) {
  const resp = await envd(id, method, msg);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.message || `${method}: HTTP ${resp.status}`);
  return data;
}

// Connect streaming frames: one flag byte, a big-endian uint32 length, the
// JSON message. Flag 2 marks the end-of-stream message (with any error).
function envelope(msg) {
  const json = new TextEncoder().encode(JSON.stringify(msg));
  const out = new Uint8Array(5 + json.length);
  new DataView(out.buffer).setUint32(1, json.length);
  out.set(json, 5);
  return out;
}

async function* frames(body) {
  const reader = body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    while (buf.length >= 5) {
      const n = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + n) break;
      const flags = buf[0];
      const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + n)) || "{}");
      buf = buf.slice(5 + n);
      yield { end: (flags & 2) !== 0, msg };
    }
    const { value, done } = await reader.read();
    if (done) return;
    const next = new Uint8Array(buf.length + value.length);
    next.set(buf);
    next.set(value, buf.length);
    buf = next;
  }
}

const b64 = {
  enc(bytes) { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s); },
  dec(s) { return Uint8Array.from(atob(s), (c) => c.charCodeAt(0)); },
};

// showSandbox renders #/sandbox/<id> and returns its cleanup.
function showSandbox(id) {
  let closed = false;
  const samples = [];
  $("#sb-id").textContent = id;
  $("#sb-state").textContent = "";
  for (const s of ["#sb-details tbody", "#sb-metadata tbody", "#sb-procs tbody", "#files tbody", "#sb-log"]) $(s).replaceChildren();
  $("#sb-chart-cpu").replaceChildren();
  $("#sb-chart-mem").replaceChildren();

  const kv = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v));
  async function loadDetails() {
    let sb;
    try {
      sb = await api("GET", `/sandboxes/${id}`);
    } catch (e) {
      $("#sb-state").textContent = "gone (" + e.message + ")";
      $("#sb-actions").replaceChildren();
      return;
    }
    $("#sb-state").textContent = sb.state || "";
    const paused = sb.state === "paused";
    const pause = el("button", { class: "pause", textContent: paused ? "Resume" : "Pause" });
    pause.onclick = () => act("POST", `/sandboxes/${id}/${paused ? "resume" : "pause"}`, pause, paused ? {} : undefined);
    const kill = confirmButton("Kill", "Confirm kill", "kill", id, (b) => act("DELETE", `/sandboxes/${id}`, b));
    $("#sb-actions").replaceChildren(pause, " ", kill);
    $("#sb-details tbody").replaceChildren(
      kv("Template", sb.alias ? `${sb.alias} (${sb.templateID})` : sb.templateID),
      kv("State", sb.state || ""), kv("Runtime", sb.runtime || ""),
      kv("Started", fmtDateTime(sb.startedAt)), kv("Ends", fmtDateTime(sb.endAt)),
      kv("On timeout", sb.lifecycle ? sb.lifecycle.onTimeout : ""),
      kv("vCPU", String(sb.cpuCount)), kv("Memory", `${sb.memoryMB} MB`), kv("Disk", `${sb.diskSizeMB} MB`),
      kv("Internet", sb.allowInternetAccess === false ? "blocked" : "allowed"), kv("envd", sb.envdVersion || ""));
    api("GET", `/sandboxes/${id}/usage`).then((u) => {
      const m = u.measured;
      $("#sb-details tbody").append(kv("Cost so far", fmtUSD(u.allocated.costUsd)),
        kv("Used (measured)", m ? `${(100 * m.cpuUtilization).toFixed(0)}% CPU, ${fmtBytes(m.memoryBytes)}` : ""));
    }).catch((e) => console.warn(e));
    const meta = Object.entries(sb.metadata || {});
    $("#sb-metadata tbody").replaceChildren(...(meta.length ? meta.map(([k, v]) => kv(k, v)) : [el("tr", {}, el("td", { class: "muted" }, "none"))]));
  }

  // The API gives a sandbox's current counters; the history is what this
  // page has sampled since it opened (the last 10 minutes of it).
  async function sample() {
    const ms = await api("GET", `/sandboxes/${id}/metrics`);
    if (closed || !ms || !ms.length) return;
    samples.push(ms[ms.length - 1]);
    while (samples.length > 300) samples.shift();
    chart($("#sb-chart-cpu"), samples, "cpuUsedPct", (v) => v.toFixed(1) + " %");
    chart($("#sb-chart-mem"), samples, "memUsed", fmtBytes);
  }

  // The processes envd runs in the sandbox (the terminal's shell among them).
  async function loadProcs() {
    const r = await rpc(id, "process.Process/List", {});
    if (closed) return;
    const ps = (r.processes || []).sort((a, b) => a.pid - b.pid);
    $("#sb-procs tbody").replaceChildren(...(ps.length ? ps.map((p) => el("tr", { "data-pid": String(p.pid) },
      el("td", {}, String(p.pid)), el("td", { class: "mono" }, [p.config.cmd, ...(p.config.args || [])].join(" ")), el("td", {}, p.tag || "")))
      : [el("tr", {}, el("td", { colSpan: 3, class: "muted" }, "none started through envd"))]));
  }

  async function loadLog() {
    const evs = await api("GET", `/events/sandboxes/${id}?limit=100`);
    $("#sb-log").replaceChildren(...(evs || []).map(eventItem));
  }
  const onEv = (ev) => {
    if (ev.sandboxId !== id) return;
    $("#sb-log").prepend(eventItem(ev));
    safe(loadDetails);
  };
  eventListeners.add(onEv);

  // --- files ---
  let cwd = "";
  async function listDir(path) {
    const r = await rpc(id, "filesystem.Filesystem/ListDir", { path, depth: 1 });
    cwd = path;
    $("#files-path").textContent = path;
    const entries = (r.entries || []).sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name) : a.type === "FILE_TYPE_DIRECTORY" ? -1 : 1));
    $("#files tbody").replaceChildren(...entries.map((e) => {
      const dir = e.type === "FILE_TYPE_DIRECTORY";
      const link = dir
        ? el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); safe(() => listDir(e.path)); } }, e.name + "/")
        : el("a", { href: `/dashboard/envd/${id}/files?path=${encodeURIComponent(e.path)}`, download: e.name }, e.name);
      return el("tr", { "data-path": e.path }, el("td", {}, link), el("td", {}, dir ? "dir" : e.type === "FILE_TYPE_SYMLINK" ? "link" : "file"),
        el("td", {}, dir ? "" : fmtBytes(Number(e.size || 0))), el("td", {}, fmtDateTime(e.modifiedTime)));
    }));
  }
  $("#files-up").onclick = () => { if (cwd && cwd !== "/") safe(() => listDir(cwd.replace(/\/[^/]*\/?$/, "") || "/")); };
  $("#files-refresh").onclick = () => safe(() => listDir(cwd || "/"));
  async function openHome() {
    let home = "/";
    try { home = (await rpc(id, "filesystem.Filesystem/Stat", { path: "~" })).entry.path || "/"; } catch { /* not running */ }
    await listDir(home);
  }

  // --- terminal ---
  let term = null, pid = 0, ptyAbort = null, inbox = [], flushing = false;
  async function flushInput() {
    if (flushing || !pid) return;
    flushing = true;
    try {
      while (inbox.length && pid) {
        const bytes = new TextEncoder().encode(inbox.splice(0).join(""));
        await rpc(id, "process.Process/SendInput", { process: { pid }, input: { pty: b64.enc(bytes) } });
      }
    } catch (e) { $("#term-status").textContent = "input failed: " + e.message; }
    finally { flushing = false; }
  }
  // fitSize is the terminal size that fills #terminal's width, measured
  // with the terminal's font (xterm.js's fit addon is not vendored).
  function fitSize() {
    const probe = el("span", { class: "xterm-probe" }, "M".repeat(50));
    $("#terminal").append(probe);
    const cw = probe.getBoundingClientRect().width / 50;
    probe.remove();
    const cols = Math.max(20, Math.min(300, Math.floor(($("#terminal").clientWidth - 24) / (cw || 8))));
    return { cols, rows: 24 };
  }
  function onResize() {
    if (!term) return;
    const { cols, rows } = fitSize();
    if (cols === term.cols && rows === term.rows) return;
    term.resize(cols, rows);
    if (pid) rpc(id, "process.Process/Update", { process: { pid }, pty: { size: { cols, rows } } }).catch((e) => console.warn(e));
  }
  window.addEventListener("resize", onResize);
  async function startTerminal() {
    if (term) return;
    $("#terminal").replaceChildren();
    term = new Terminal({ ...fitSize(), fontSize: 13, fontFamily: "ui-monospace, monospace", convertEol: false, cursorBlink: true });
    term.open($("#terminal"));
    term.onData((d) => { inbox.push(d); flushInput(); });
    $("#term-start").hidden = true;
    $("#term-stop").hidden = false;
    $("#term-status").textContent = "connecting…";
    ptyAbort = new AbortController();
    try {
      const resp = await fetch(`/dashboard/envd/${id}/process.Process/Start`, {
        method: "POST", credentials: "same-origin", signal: ptyAbort.signal,
        headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1", "X-CSRF-Token": csrf },
        body: envelope({ process: { cmd: "/bin/bash", args: ["-i", "-l"], envs: { TERM: "xterm-256color" } },
          pty: { size: { cols: term.cols, rows: term.rows } } }),
      });
      if (!resp.ok || !resp.body) {
        const data = await resp.json().catch(() => ({}));
        throw new Error(data.message || `HTTP ${resp.status}`);
      }
      for await (const f of frames(resp.body)) {
        if (f.end) {
          if (f.msg.error) throw new Error(f.msg.error.message || f.msg.error.code);
          break;
        }
        const ev = f.msg.event || {};
        if (ev.start) {
          pid = ev.start.pid;
          $("#term-status").textContent = `live (pid ${pid})`;
          term.focus();
          flushInput();
        } else if (ev.data && ev.data.pty) {
          term.write(b64.dec(ev.data.pty));
        } else if (ev.end) {
          $("#term-status").textContent = `exited (${ev.end.status || ev.end.exitCode || 0})`;
        }
      }
    } catch (e) {
      if (!ptyAbort.signal.aborted) $("#term-status").textContent = "terminal failed: " + e.message;
    }
    pid = 0;
  }
  function stopTerminal() {
    if (pid) rpc(id, "process.Process/SendSignal", { process: { pid }, signal: "SIGNAL_SIGKILL" }).catch(() => {});
    if (ptyAbort) ptyAbort.abort();
    if (term) term.dispose();
    term = null; pid = 0; inbox = [];
    $("#term-start").hidden = false;
    $("#term-stop").hidden = true;
    $("#term-status").textContent = "closed";
  }
  $("#term-start").onclick = () => startTerminal();
  $("#term-stop").onclick = () => stopTerminal();
  $("#term-status").textContent = "not started";
  $("#term-start").hidden = false;
  $("#term-stop").hidden = true;

  safe(loadDetails); safe(loadLog); safe(sample); safe(openHome); safe(loadProcs);
  let ticks = 0;
  const timer = setInterval(() => { safe(sample); if (++ticks % 3 === 0) safe(loadProcs); }, 2000);
  return () => {
    closed = true;
    clearInterval(timer);
    window.removeEventListener("resize", onResize);
    eventListeners.delete(onEv);
    stopTerminal();
  };
}
