// Patient view: trends with alarm marks, alert history and why each alert fired.
"use strict";
(() => {
  const V = Vigil;
  const root = document.getElementById("patient");
  const pid = root.dataset.patientId;
  const hoursSel = document.getElementById("hours");
  const status = document.getElementById("ack-status");
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = { high: "#ff3030", medium: "#ffd400", low: "#00d0ff" };
  let pending = null;
  let last = 0;

  function el(name, attrs, parent) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function chart(series, window, alerts) {
    const W = 560, H = 130, L = 46, R = 8, T = 18, B = 20;
    const box = document.createElement("figure");
    box.className = "chart";
    const pts = series.points.filter((p) => p[1] !== null);
    const last = pts.length ? pts[pts.length - 1][1] : null;
    const cap = document.createElement("figcaption");
    cap.textContent = `${series.label} (${series.unit})${last === null ? ": no data" : ": " + (+last.toFixed(2))}`;
    box.appendChild(cap);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${series.label} trend` }, box);
    const x0 = window.from, x1 = window.to;
    if (x0 === null || !pts.length) {
      box.classList.add("empty");
      cap.textContent = `${series.label} (${series.unit}): unknown, no data in this window`;
      return box;
    }
    let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.1; lo -= pad; hi += pad;
    const x = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }, svg);
    for (const v of [lo + pad, hi - pad]) {
      el("text", { x: L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, svg).textContent = +v.toFixed(v < 10 ? 2 : 0);
    }
    for (const [t, anchor] of [[x0, "start"], [(x0 + x1) / 2, "middle"], [x1, "end"]]) {
      el("text", { x: x(t), y: H - 4, class: "axis", "text-anchor": anchor }, svg).textContent = new Date(t * 1000).toISOString().slice(11, 16);
    }
    for (const a of alerts) { // alarm marks: a line where each alert began, coloured by priority
      const t = Date.parse(a.began_at) / 1000;
      if (t < x0 || t > x1) continue;
      const line = el("line", { x1: x(t), x2: x(t), y1: T, y2: H - B, stroke: COLORS[a.priority], class: "mark" }, svg);
      el("title", {}, line).textContent = `${a.priority} ${a.title} at ${V.dateTime(a.began_at)}`;
    }
    // break the line where data is missing for more than 5 min: unknown is not drawn as normal
    let d = "", prev = null;
    for (const [t, v] of series.points) {
      if (v === null) { prev = null; continue; }
      d += (prev === null || t - prev > 300 ? "M" : "L") + x(t).toFixed(1) + "," + y(v).toFixed(1);
      prev = t;
    }
    el("path", { d, class: "line" }, svg);
    return box;
  }

  function alertHtml(a) {
    const ev = a.events.map((e) => `<li>${V.esc(V.dateTime(e.triggered_at))} ${V.esc(e.phase)}${e.reason ? " (" + V.esc(e.reason) + ")" : ""} ${V.esc(V.PRI[e.priority])}${e.acknowledged_by ? " – acknowledged by " + V.esc(e.acknowledged_by) : ""}</li>`).join("");
    const vals = Object.entries(a.all_values).map(([k, v]) => `<tr><th scope="row">${V.esc(k)}</th><td>${v === null ? "unknown" : V.esc(+v.toFixed(3))}</td><td>${k in a.fired_thresholds ? V.esc(a.fired_thresholds[k]) : ""}</td></tr>`).join("");
    return `<article class="alert-card ${V.esc(a.priority)}${a.phase === "end" ? " ended" : ""}${a.kind === "technical" ? " technical" : ""}" data-alert-id="${V.esc(a.alert_id)}">` +
      `<h3><span class="pri ${V.esc(a.priority)}">${a.kind === "technical" ? "⚙ TECH " : ""}${V.esc(V.PRI[a.priority])}</span> ${V.esc(a.title)} <small>${V.esc(a.rule_id)} v${V.esc(a.rule_version)} – ${a.phase === "end" ? "ended" : "active"}${a.acknowledged_by ? ", acknowledged by " + V.esc(a.acknowledged_by) : ""}</small></h3>` +
      `<p>Condition since ${V.esc(V.dateTime(a.condition_since))}, ${a.fired_phase === "escalate" ? "escalated" : "fired"} ${V.esc(V.dateTime(a.fired_at))}.</p>` +
      `<details open><summary>Why it fired</summary><ol class="trace">${a.explanation.map((l) => `<li>${V.esc(l)}</li>`).join("")}</ol>` +
      `<table class="vals"><thead><tr><th>value</th><th>at firing</th><th>threshold</th></tr></thead><tbody>${vals}</tbody></table>` +
      `<p class="source">Source: ${V.esc(a.source)}</p>` +
      (a.latest_explanation.join("\n") !== a.explanation.join("\n") ? `<p>Latest: ${a.latest_explanation.map(V.esc).join("; ")}</p>` : "") + `</details>` +
      `<details><summary>History (${a.events.length} events)</summary><ol>${ev}</ol></details></article>`;
  }

  function render(d) {
    document.getElementById("bed-label").textContent = `${d.tile.bed}`;
    document.title = `Vigil: ${d.tile.bed}`;
    const tile = document.getElementById("tile");
    tile.className = V.tileClass(d.tile);
    tile.innerHTML = V.tileHtml(d.tile);
    const alerts = document.getElementById("alerts");
    alerts.innerHTML = d.alerts.length ? d.alerts.map(alertHtml).join("") : "<p>No alerts in the last 24 h.</p>";
    for (const card of alerts.querySelectorAll(".alert-card:not(.ended)")) {
      const a = d.alerts.find((x) => x.alert_id === card.dataset.alertId);
      if (V.canAck && a && !a.acknowledged_by) {
        const b = document.createElement("button");
        b.type = "button"; b.className = "ack"; b.textContent = "Acknowledge";
        b.addEventListener("click", async () => { b.disabled = true; if (await V.acknowledge(a.alert_id, status)) refresh(); else b.disabled = false; });
        card.querySelector("h3").after(b);
      }
    }
    const charts = document.getElementById("charts");
    const frag = document.createDocumentFragment();
    for (const s of Object.values(d.series)) frag.appendChild(chart(s, d.window, d.alerts));
    charts.replaceChildren(frag);
    const risk = document.getElementById("risk");
    if (!d.risk) {
      risk.innerHTML = "<p>No risk score received (risk unknown).</p>";
    } else {
      const r = d.risk;
      const others = Object.entries(r.other_outcomes || {}).map(([o, p]) => `${V.esc(o)} ${Math.round(p * 100)}%`).join(", ");
      risk.innerHTML = (others ? `<p>Other outcomes: ${others}</p>` : "") + `<p><strong>${Math.round(r.probability * 100)}%</strong> ${V.esc(r.outcome)}${r.horizon_h ? " within " + V.esc(r.horizon_h) + " h" : ""} – model ${V.esc(r.model)}${r.cold_start ? " (rule-based cold start)" : ""}, ${V.esc(V.dateTime(r.computed_at))}</p>` +
        `<table class="vals"><thead><tr><th>feature</th><th>value</th><th>contribution</th></tr></thead><tbody>` +
        r.contributions.map((c) => `<tr><th scope="row">${V.esc(c.feature)}</th><td>${c.value === null ? "unknown" : V.esc(+c.value.toFixed(3))}</td><td>${V.esc(c.contribution >= 0 ? "+" : "")}${V.esc(+c.contribution.toFixed(3))}</td></tr>`).join("") + "</tbody></table>";
    }
  }

  async function refresh() {
    last = Date.now();
    const r = await fetch(`/api/patient/${encodeURIComponent(pid)}?hours=${hoursSel.value}`, { credentials: "same-origin" });
    if (r.ok) render(await r.json());
    else document.getElementById("alerts").textContent = r.status === 404 ? "Unknown patient (no data yet)." : `error ${r.status}`;
  }
  function soon() { // coalesce: at most one refresh every 3 s
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, Math.max(0, 3000 - (Date.now() - last)));
  }
  hoursSel.addEventListener("change", refresh);
  V.connect({
    full() { soon(); },
    delta(data) { if (pid in data.beds) soon(); },
  });
  refresh();
  V.clock();
})();
