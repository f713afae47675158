// Vigil central station: shared helpers (no framework, no CDN).
"use strict";
const Vigil = (() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const canAck = document.body.dataset.canAck === "true";
  const config = (() => {
    const el = document.getElementById("tile-config");
    return el ? JSON.parse(el.textContent) : {
      numbers: [["hr", "", "HR /min", 0], ["map", "", "MAP mmHg", 0], ["spo2", "", "SpO2 %", 0],
        ["rso2_l", "", "rSO2 L %", 0], ["rso2_r", "", "rSO2 R %", 0], ["cvp", "", "CVP mmHg", 0],
        ["uo", "", "UO mL/kg/h", 2], ["net_uf", "", "UF mL/kg/h", 1], ["lactate", "", "Lac mmol/L", 1]],
      organs: [["cardiovascular", "CV"], ["renal", "Ren"], ["congestion", "Cong"], ["brain", "Brain"],
        ["respiratory", "Resp"], ["coagulation", "Coag"], ["liver", "Liver"], ["cns", "CNS"]],
    };
  })();
  const PRI = { high: "HIGH", medium: "MED", low: "LOW" };

  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  function num(value) { return value === null || value === undefined ? "?" : String(value); }
  function time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toISOString().slice(11, 16);
  }
  function dateTime(iso) { return iso ? new Date(iso).toISOString().slice(0, 16).replace("T", " ") + "Z" : ""; }
  function values(alarm) {
    return Object.entries(alarm.values || {}).map(([k, v]) =>
      `${esc(k)} ${v === null ? "unknown" : esc(+v.toFixed(2))}` +
      (k in (alarm.thresholds || {}) ? ` (limit ${esc(alarm.thresholds[k])})` : "")).join(", ");
  }

  function tileHtml(t) {
    const a = t.alarm;
    const numbers = config.numbers.map(([key, , label, , help]) => {
      const v = t.numbers[key];
      return `<div class="n${v === null ? " unknown" : ""}" title="${esc(help || label)}${v === null ? ": unknown" : ""}"><span class="l">${esc(label)}</span><span class="v">${esc(num(v))}</span></div>`;
    }).join("");
    const organs = config.organs.map(([key, label]) => {
      const o = t.organs[key] || { status: "unknown" };
      const title = `${label}: ${o.status}${o.subscore !== null && o.subscore !== undefined ? " (SOFA " + o.subscore + ")" : ""}${o.reason ? " – " + o.reason : ""}`;
      return `<span class="organ ${esc(o.status)}" title="${esc(title)}" aria-label="${esc(title)}">${esc(label)}${o.status === "unknown" ? "?" : ""}</span>`;
    }).join("");
    const risk = t.risk === null ? "?" : Math.round(t.risk * 100) + "%";
    const comp = t.completeness_pct === null ? "?" : t.completeness_pct + "%";
    const compTitle = Object.entries(t.completeness || {}).map(([k, v]) => `${k} ${Math.round(v * 100)}%`).join(", ") || "no data yet";
    const alarm = a ? `<div class="tile-alarm pri ${esc(a.priority)}${a.kind === "technical" ? " techn" : ""}">${a.kind === "technical" ? "⚙ " : ""}${esc(PRI[a.priority])} ${esc(a.title)}${t.alarm_count > 1 ? ` <span class="more">+${t.alarm_count - 1}</span>` : ""}</div>`
      : `<div class="tile-alarm none">no active alarm</div>`;
    return `<div class="tile-head"><span class="bed">${esc(t.bed)}</span>` +
      `<span class="risk${t.risk === null ? " unknown" : ""}" title="risk ${esc(t.risk_outcome || "not available")}">risk ${esc(risk)}</span>` +
      `<span class="comp" title="data completeness: ${esc(compTitle)}">data ${esc(comp)}</span></div>` +
      `<div class="nums">${numbers}</div><div class="organs">${organs}</div>${alarm}`;
  }
  function tileClass(t) {
    const a = t.alarm;
    let cls = "tile";
    if (a) {
      cls += " has-" + a.priority;
      if (a.priority === "high" && !a.acknowledged_by) cls += " flashing";
      if (a.kind === "technical") cls += " technical";
    }
    if (!t.computed_at) cls += " nodata";
    return cls;
  }

  async function acknowledge(alertId, statusEl) {
    statusEl.textContent = "acknowledging…";
    try {
      const r = await fetch(`/api/alerts/${encodeURIComponent(alertId)}/ack`, {
        method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin",
      });
      const body = await r.json().catch(() => ({}));
      statusEl.textContent = r.ok ? `acknowledged by ${body.user} at ${time(body.at)}` : `not acknowledged: ${body.error || r.status}`;
      return r.ok;
    } catch (e) {
      statusEl.textContent = "not acknowledged: connection lost";
      return false;
    }
  }

  function connect(handlers) {
    const conn = document.getElementById("conn");
    const source = new EventSource("/events");
    source.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn live"; });
    source.addEventListener("error", () => { conn.textContent = "connection lost – reconnecting"; conn.className = "conn lost"; });
    source.addEventListener("full", (e) => handlers.full(JSON.parse(e.data)));
    source.addEventListener("delta", (e) => handlers.delta(JSON.parse(e.data)));
    return source;
  }

  function clock() {
    const el = document.getElementById("clock");
    const tick = () => { el.textContent = new Date().toISOString().slice(11, 19) + "Z"; };
    tick();
    setInterval(tick, 1000);
  }

  return { csrf, canAck, config, esc, num, time, dateTime, values, tileHtml, tileClass, acknowledge, connect, clock, PRI };
})();
