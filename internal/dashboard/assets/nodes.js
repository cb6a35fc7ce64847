// sbx dashboard: the nodes page (#/nodes), for the admin key. Every node
// of the cluster (on an api replica: the node registry; on one box: the
// server itself) with its status and load, drained or made ready again
// from here, and the sandboxes a node holds. The admin key has no event
// stream of its own (events are per team), so the page reads again every
// 3 s.
"use strict";

function showNodes() {
  let closed = false;
  let shown = "";

  function fmtMiB(bytes) { return `${Math.round((bytes || 0) / 1048576)} MiB`; }

  async function load() {
    const nodes = await api("GET", "/nodes");
    if (closed) return;
    $("#nodes-note").textContent = `${nodes.length} node${nodes.length === 1 ? "" : "s"}, updated ${new Date().toLocaleTimeString()}`;
    $("#nodes tbody").replaceChildren(...nodes.map((n) => {
      const l = n.load || {};
      const cpu = l.cpuMillis ? `${((l.reservedCpuMillis || 0) / 1000).toFixed(1)} / ${(l.cpuMillis / 1000).toFixed(0)}` : `${n.metrics.allocatedCPU} / ${n.metrics.cpuCount}`;
      const mem = `${fmtMiB(n.metrics.memoryUsedBytes)} / ${fmtMiB(n.metrics.memoryTotalBytes)}`;
      const link = el("a", { href: "#/nodes", class: "node", "data-id": n.nodeID, onclick: (e) => { e.preventDefault(); shown = n.nodeID; safe(detail); } }, n.nodeID);
      let action = "";
      if (n.status === "ready" || n.status === "draining") {
        const to = n.status === "ready" ? "draining" : "ready";
        action = el("button", { class: "node-status", "data-id": n.nodeID, textContent: to === "draining" ? "Drain" : "Take sandboxes" });
        action.onclick = async () => {
          action.disabled = true;
          try { await api("POST", `/nodes/${encodeURIComponent(n.nodeID)}`, { status: to }); } catch (e) { alert(`${n.nodeID}: ${e.message}`); }
          safe(load);
        };
      }
      return el("tr", { "data-id": n.nodeID }, el("td", { class: "id" }, link), el("td", { class: "status-" + n.status }, n.status),
        el("td", {}, String(n.sandboxCount ?? "")), el("td", {}, cpu), el("td", {}, mem), el("td", {}, n.version || ""),
        el("td", {}, l.heartbeatAt ? fmtTime(l.heartbeatAt) : ""), el("td", {}, action));
    }));
    if (shown) await detail();
  }

  async function detail() {
    const n = await api("GET", `/nodes/${encodeURIComponent(shown)}`);
    if (closed) return;
    $("#node-detail").hidden = false;
    $("#node-id").textContent = n.nodeID;
    $("#node-sandboxes tbody").replaceChildren(...(n.sandboxes || []).map((sb) => el("tr", { "data-id": sb.sandboxID },
      el("td", { class: "id" }, sb.sandboxID), el("td", {}, sb.alias || sb.templateID), el("td", {}, sb.state),
      el("td", {}, String(sb.cpuCount)), el("td", {}, `${sb.memoryMB} MB`), el("td", {}, fmtDateTime(sb.startedAt)))));
  }

  $("#node-detail").hidden = true;
  safe(load);
  const timer = setInterval(() => safe(load), 3000);
  return () => { closed = true; clearInterval(timer); };
}
