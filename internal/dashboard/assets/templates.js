// sbx dashboard: the templates page (#/templates): every template the team
// can use, how many sandboxes ran from each over 30 days, and for one
// template its builds (with their logs) and tags.
"use strict";

function showTemplates() {
  let closed = false;
  let logTimer = null;
  $("#tpl-detail").hidden = true;

  async function load() {
    const to = new Date();
    const from = new Date(to.getTime() - 30 * 24 * 3600e3);
    const [tpls, usage] = await Promise.all([
      api("GET", "/templates"),
      api("GET", `/usage?groupBy=template&from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`).catch(() => null),
    ]);
    const counts = new Map(((usage && usage.groups) || []).map((g) => [g.key, g.sandboxes]));
    if (closed) return;
    $("#templates tbody").replaceChildren(...(tpls || []).map((t) => {
      const link = el("a", { href: "#", class: "tpl", "data-id": t.templateID, onclick: (e) => { e.preventDefault(); safe(() => showTemplate(t)); } }, t.templateID);
      return el("tr", { "data-id": t.templateID }, el("td", { class: "id" }, link), el("td", {}, (t.names || t.aliases || []).join(", ")),
        el("td", { class: "status-" + t.buildStatus }, t.buildStatus || ""), el("td", {}, String(t.cpuCount)), el("td", {}, `${t.memoryMB} MB`),
        el("td", { class: "spawns" }, String(counts.get(t.templateID) || 0)), el("td", {}, fmtDateTime(t.updatedAt)));
    }));
  }

  async function showTemplate(t) {
    clearTimeout(logTimer);
    $("#tpl-detail").hidden = false;
    $("#tpl-id").textContent = (t.names && t.names[0]) ? `${t.names[0]} (${t.templateID})` : t.templateID;
    $("#build-log").textContent = "";
    $("#build-log-id").textContent = "";
    const [detail, tags] = await Promise.all([
      api("GET", `/templates/${t.templateID}`),
      api("GET", `/templates/${t.templateID}/tags`).catch(() => []),
    ]);
    const builds = (detail.builds || []).slice().sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    $("#builds tbody").replaceChildren(...builds.map((b) => {
      const show = el("button", { class: "show-log", "data-build": b.buildID, textContent: "Log" });
      show.onclick = () => { clearTimeout(logTimer); safe(() => showLog(t.templateID, b.buildID, 0)); };
      return el("tr", { "data-build": b.buildID }, el("td", { class: "id" }, b.buildID), el("td", { class: "status-" + b.status }, b.status),
        el("td", {}, fmtDateTime(b.createdAt)), el("td", {}, fmtDateTime(b.finishedAt)), el("td", {}, show));
    }));
    $("#tags tbody").replaceChildren(...(tags || []).map((g) => el("tr", {}, el("td", {}, g.tag), el("td", { class: "id" }, g.buildID), el("td", {}, fmtDateTime(g.createdAt)))));
    if (builds.length) await showLog(t.templateID, builds[0].buildID, 0);
  }

  // showLog appends a build's log from offset and follows it while the
  // build runs.
  async function showLog(tpl, build, offset) {
    if (offset === 0) {
      $("#build-log").textContent = "";
      $("#build-log-id").textContent = build;
    }
    const st = await api("GET", `/templates/${tpl}/builds/${build}/status?logsOffset=${offset}`);
    if (closed || $("#build-log-id").textContent !== build) return;
    const lines = (st.logEntries && st.logEntries.length)
      ? st.logEntries.map((e) => `${fmtTime(e.timestamp)} ${e.step ? "[" + e.step + "] " : ""}${e.message}`)
      : st.logs || [];
    if (lines.length) $("#build-log").append(lines.join("\n") + "\n");
    if (st.reason && st.status === "error") $("#build-log").append(`error${st.reason.step ? " at step " + st.reason.step : ""}: ${st.reason.message}\n`);
    if (st.status === "building" || st.status === "waiting") {
      logTimer = setTimeout(() => safe(() => showLog(tpl, build, offset + (st.logEntries || st.logs || []).length)), 1000);
    }
  }

  safe(load);
  return () => { closed = true; clearTimeout(logTimer); };
}
