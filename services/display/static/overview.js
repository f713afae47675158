// Unit overview: one tile per bed, the alarm list, acknowledge; live over SSE.
"use strict";
(() => {
  const V = Vigil;
  const grid = document.getElementById("beds");
  const list = document.getElementById("alarms");
  const status = document.getElementById("ack-status");
  const tiles = new Map(); // patient id -> tile element
  const firstSeen = (window.vigilFirstSeen = window.vigilFirstSeen || {}); // alert id -> ms epoch
  window.vigilRender = { updates: 0, lastMs: 0, maxMs: 0, fullMs: 0, tiles: 0, tilesRendered: 0 };
  const unitSel = document.getElementById("unit");
  const units = new Map(); // patient id -> care unit
  let unitFilter = new URLSearchParams(location.search).get("unit") || "";
  let sound = false;
  let audio = null;

  function tileEl(pid) {
    let el = tiles.get(pid);
    if (!el) {
      el = document.createElement("a");
      el.href = "/patient/" + encodeURIComponent(pid);
      el.dataset.patientId = pid;
      tiles.set(pid, el);
    }
    return el;
  }
  function renderTile(t) {
    const el = tileEl(t.patient_id);
    const html = V.tileHtml(t);
    const cls = V.tileClass(t);
    units.set(t.patient_id, t.care_unit || "");
    el.hidden = !!unitFilter && units.get(t.patient_id) !== unitFilter;
    if (el._html === html && el.className === cls) return; // unchanged: no DOM work
    el._html = html;
    el.className = cls;
    el.setAttribute("aria-label", `Bed ${t.bed}` + (t.alarm ? `, ${t.alarm.priority} alarm: ${t.alarm.title}` : ", no active alarm"));
    el.innerHTML = html;
    window.vigilRender.tilesRendered += 1;
  }
  function refreshUnits() {
    const known = [...new Set(units.values())].filter((u) => u).sort();
    const current = [...unitSel.options].slice(1).map((o) => o.value);
    if (known.join("|") === current.join("|")) return;
    unitSel.replaceChildren(new Option("all units", ""), ...known.map((u) => new Option(u, u)));
    unitSel.value = unitFilter;
  }
  function applyFilter() {
    for (const [pid, el] of tiles) el.hidden = !!unitFilter && units.get(pid) !== unitFilter;
    for (const li of list.children) li.hidden = !!unitFilter && li.dataset.careUnit !== unitFilter;
    const shown = [...tiles.values()].filter((el) => !el.hidden).length;
    document.getElementById("summary").textContent = unitFilter ? `${shown} of ${tiles.size} beds` : `${tiles.size} beds`;
  }
  function applyOrder(order) {
    const keep = new Set(order);
    for (const [pid, el] of tiles) if (!keep.has(pid)) { el.remove(); tiles.delete(pid); }
    const frag = document.createDocumentFragment();
    for (const pid of order) frag.appendChild(tileEl(pid));
    grid.appendChild(frag); // re-appending moves existing nodes into order
  }

  function alarmRow(a) {
    const li = document.createElement("li");
    const acked = !!a.acknowledged_by;
    li.className = `alarm pri-row ${a.priority}${a.kind === "technical" ? " technical" : ""}${acked ? " acked" : " unacked"}${a.priority === "high" && !acked ? " flashing" : ""}`;
    li.dataset.alertId = a.alert_id;
    li.dataset.priority = a.priority;
    li.dataset.ruleId = a.rule_id;
    li.dataset.careUnit = a.care_unit || "";
    li.hidden = !!unitFilter && li.dataset.careUnit !== unitFilter;
    li.dataset.seenAt = String(firstSeen[a.alert_id]);
    const ackText = acked ? `acknowledged by ${V.esc(a.acknowledged_by)} ${V.time(a.acknowledged_at)}${a.ack_confirmed ? "" : " (sent)"}` : "unacknowledged";
    const silenced = a.silenced_until ? ` · reminders silenced until ${V.esc(V.time(a.silenced_until))}` : "";
    li.innerHTML =
      `<span class="pri ${V.esc(a.priority)}">${a.kind === "technical" ? "⚙ TECH " : ""}${V.esc(V.PRI[a.priority])}</span>` +
      `<a class="bed" href="/patient/${encodeURIComponent(a.patient_id)}">${V.esc(a.bed || a.patient_id)}</a>` +
      `<span class="what">${V.esc(a.title)}${a.latched ? " (resolved, latched)" : ""}<small>${V.values(a)}</small></span>` +
      `<span class="when" title="since ${V.esc(V.dateTime(a.began_at))}">${V.esc(V.time(a.began_at))}</span>` +
      `<span class="ack-state">${ackText}${silenced}</span>`;
    if (V.canAck && !acked) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "ack";
      b.textContent = "Acknowledge";
      b.setAttribute("aria-label", `Acknowledge ${a.priority} alarm ${a.title} at bed ${a.bed || ""}`);
      b.addEventListener("click", async () => { b.disabled = true; if (!(await V.acknowledge(a.alert_id, status))) b.disabled = false; });
      li.appendChild(b);
    }
    return li;
  }
  function renderAlarms(alarms) {
    const now = Date.now();
    let newHigh = false;
    for (const a of alarms) {
      if (!(a.alert_id in firstSeen)) {
        firstSeen[a.alert_id] = now;
        if (a.priority === "high" && !a.acknowledged_by) newHigh = true;
      }
    }
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("li.alarm");
    const focusId = focused ? focused.dataset.alertId : null;
    const frag = document.createDocumentFragment();
    for (const a of alarms) frag.appendChild(alarmRow(a));
    list.replaceChildren(frag);
    document.getElementById("alarm-count").textContent = `(${alarms.length})`;
    if (focusId) {
      const again = list.querySelector(`li[data-alert-id="${CSS.escape(focusId)}"] button, li[data-alert-id="${CSS.escape(focusId)}"] a`);
      if (again) again.focus();
    }
    if (newHigh && sound) beep();
  }

  function beep() {
    // IEC 60601-1-8-like high-priority burst: 3 + 2 pulses
    try {
      audio = audio || new AudioContext();
      const pulses = [0, 0.2, 0.4, 1.0, 1.2];
      for (const at of pulses) {
        const o = audio.createOscillator();
        const g = audio.createGain();
        o.frequency.value = 880;
        g.gain.value = 0.2;
        o.connect(g).connect(audio.destination);
        o.start(audio.currentTime + at);
        o.stop(audio.currentTime + at + 0.12);
      }
    } catch (e) { /* no audio device: the visual alarm remains */ }
  }

  function measure(full, fn) {
    const t0 = performance.now();
    fn();
    refreshUnits();
    applyFilter();
    const ms = performance.now() - t0;
    const r = window.vigilRender;
    if (full) r.fullMs = ms;
    else { r.updates += 1; r.lastMs = ms; r.maxMs = Math.max(r.maxMs, ms); }
    r.tiles = tiles.size;
  }

  V.connect({
    full(data) {
      measure(true, () => {
        applyOrder(data.order);
        for (const pid of data.order) renderTile(data.beds[pid]);
        renderAlarms(data.alarms);
      });
    },
    delta(data) {
      measure(false, () => {
        if (data.order) applyOrder(data.order);
        for (const t of Object.values(data.beds)) if (tiles.has(t.patient_id)) renderTile(t);
        if (data.alarms) renderAlarms(data.alarms);
      });
    },
  });

  const soundBtn = document.getElementById("sound");
  soundBtn.addEventListener("click", () => {
    sound = !sound;
    soundBtn.textContent = sound ? "Sound on" : "Sound off";
    soundBtn.setAttribute("aria-pressed", String(sound));
    if (sound) { audio = audio || new AudioContext(); }
  });
  unitSel.addEventListener("change", () => {
    unitFilter = unitSel.value;
    const url = new URL(location.href);
    if (unitFilter) url.searchParams.set("unit", unitFilter); else url.searchParams.delete("unit");
    history.replaceState(null, "", url);
    applyFilter();
  });
  const densityBtn = document.getElementById("density");
  densityBtn.addEventListener("click", () => {
    const on = grid.classList.toggle("compact");
    densityBtn.setAttribute("aria-pressed", String(on));
  });
  if (new URLSearchParams(location.search).has("compact")) densityBtn.click();
  V.clock();
})();
