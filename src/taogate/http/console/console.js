// taogate operator console: polls /v1/admin/state about once a second.
// The admin token lives in this tab's sessionStorage and travels in the Authorization header only.
"use strict";

(() => {
  const TOKEN_KEY = "taogate-console-token";
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  let timer = null;

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

  async function api(path, options = {}) {
    const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    const resp = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      const detail = body && (body.detail || body.title) ? (body.detail || body.title) : resp.statusText;
      const err = new Error(resp.status + ": " + detail);
      err.status = resp.status;
      throw err;
    }
    return body;
  }

  // --- formatting -----------------------------------------------------------------------------
  const num = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
  const secs = (v) => (v ? Number(v).toFixed(1) + " s" : "");
  // a wait of hours at a glance: 7h 31m, 12m 05s, 45 s
  function span(v) {
    const s = Math.floor(v);
    const two = (n) => String(n).padStart(2, "0");
    if (s >= 3600) return Math.floor(s / 3600) + "h " + two(Math.floor((s % 3600) / 60)) + "m";
    if (s >= 60) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
    return s + " s";
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function barCell(use) {
    const td = document.createElement("td");
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    const share = Math.max(0, Math.min(1, use || 0));
    fill.style.width = (100 * share).toFixed(1) + "%";
    if (share >= 0.98) fill.className = "full";
    else if (share >= 0.85) fill.className = "high";
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(document.createTextNode(" " + pct(use)));
    return td;
  }

  // a cell with a second, smaller line when there is something to add (and why, on hover)
  function noteCell(text, note, why, cls) {
    const td = cell(text, cls);
    if (note) {
      const small = document.createElement("small");
      small.className = "note";
      small.textContent = note;
      td.appendChild(small);
      td.title = why;
    }
    return td;
  }

  // a key's status; the day's wait when the platform said its quota is spent, and what to do
  // when its IP whitelist refuses every egress
  function statusCell(c) {
    const cls = "status-" + c.status;
    if (c.exhausted_for_s !== null && c.exhausted_for_s !== undefined) {
      return noteCell(c.status, "day resets in " + span(c.exhausted_for_s),
        "the platform says this key's quota for today is spent; it rests until midnight in Beijing", cls);
    }
    if (c.status === "not-whitelisted") {
      return noteCell(c.status, "fix its IP whitelist",
        "no egress is in this key's IP whitelist (code 11): add the egresses' addresses to the app's whitelist on the platform", cls);
    }
    return cell(c.status, cls);
  }

  function badge(el, text, cls) {
    el.textContent = text;
    el.className = "badge" + (cls ? " " + cls : "");
  }

  function fillList(dl, pairs) {
    dl.replaceChildren();
    for (const [label, value] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dl.append(dt, dd);
    }
  }

  // --- rendering ------------------------------------------------------------------------------
  function render(s) {
    const mode = s.replica.mode;
    badge($("mode"), "limits " + mode, mode === "local" ? "warn" : "ok");
    badge($("replicas"), s.replica.live_replicas === null ? "1 replica" : s.replica.live_replicas + " replicas live");
    badge($("breaker"), "breaker " + s.breaker, s.breaker === "closed" ? "ok" : "bad");
    badge($("code7"), "code 7: " + s.code7, s.code7 > 0 ? "bad" : "ok");
    const code11 = s.code11 || 0;  // an older service sends none
    $("code11").hidden = code11 === 0;
    badge($("code11"), "code 11: " + code11, "bad");
    $("updated").textContent = "updated " + new Date(s.now * 1000).toLocaleTimeString();

    const q = s.quota;
    $("quota-text").textContent = num(q.calls_per_s, 2) + " of " + num(q.rate, 2) + " calls/s";
    const qbar = $("quota-bar");
    const use = Math.max(0, Math.min(1, q.use || 0));
    qbar.style.width = (100 * use).toFixed(1) + "%";
    qbar.className = use >= 0.98 ? "full" : use >= 0.85 ? "high" : "";

    const keys = $("keys").tBodies[0];
    keys.replaceChildren();
    for (const c of s.credentials) {
      const tr = document.createElement("tr");
      tr.dataset.credential = c.credential;
      const budget = c.daily_budget === null ? "" : " / " + c.daily_budget;
      const refused = c.refused_egresses || [];
      const code7 = cell(String(c.rate_limited), "num");
      if (c.method_limited) {
        code7.textContent += " +" + c.method_limited;
        code7.title = c.rate_limited + " bans of the key, " + c.method_limited + " of its calls of the API method";
      }
      const code11 = cell(c.ip_refused === undefined ? "" : String(c.ip_refused), refused.length ? "num alert" : "num");
      tr.append(
        cell(c.credential),
        cell(c.account || ""),
        noteCell(c.egress || "", refused.length ? "refused by " + refused.join(", ") : "",
          "code 11: the key's IP whitelist refuses these egresses' addresses"),
        statusCell(c),
        cell(num(c.calls_per_s, 2), "num"),
        cell(num(c.rate, 2) + " / " + num(c.configured_qps, 0), "num"),
        barCell(c.use),
        cell(secs(c.banned_for_s), "num"),
        cell(c.probe_in_s === null ? "" : secs(c.probe_in_s), "num"),
        cell(c.calls_today + budget, "num"),
        code7,
        code11,
        cell(String(c.cost_today), "num"),
      );
      keys.appendChild(tr);
    }

    const egresses = $("egresses").tBodies[0];
    egresses.replaceChildren();
    for (const e of s.egresses) {
      const tr = document.createElement("tr");
      tr.append(
        cell(e.egress),
        cell(e.via || "direct"),
        cell(String(e.credentials), "num"),
        cell(num(e.calls_per_s, 2), "num"),
        cell(num(e.rate, 1) + " / " + num(e.max_qps, 0), "num"),
        barCell(e.use),
        cell(secs(e.paused_for_s), "num"),
        cell(String(e.unreachable), "num"),
      );
      egresses.appendChild(tr);
    }

    const scopes = $("scopes").tBodies[0];
    scopes.replaceChildren();
    for (const x of s.scopes || []) {
      const tr = document.createElement("tr");
      tr.dataset.scope = x.kind + ":" + x.name;
      const paced = x.qps !== null;
      tr.append(
        cell(x.kind),
        cell(x.name),
        cell(String(x.credentials), "num"),
        cell(num(x.calls_per_s, 2), "num"),
        cell(paced ? num(x.rate, 1) + " / " + num(x.qps, 0) : "not paced", "num"),
        paced ? barCell(x.use) : cell("–"),
        cell(String(x.limited), x.limited > 0 ? "num alert" : "num"),
        cell(secs(x.paused_for_s), "num"),
      );
      scopes.appendChild(tr);
    }

    fillList($("queue"), [
      ["interactive", s.queue.interactive],
      ["refresh", s.queue.refresh],
      ["bulk", s.queue.bulk],
      ["ids on the wire", s.queue.in_flight],
      ["mean wait", s.queue.wait_ms === null ? "–" : num(s.queue.wait_ms, 1) + " ms"],
    ]);
    fillList($("cache"), [
      ["lookups/s", num(s.cache.lookups_per_s, 1)],
      ["L1 hits", pct(s.cache.l1_hit_ratio)],
      ["L2 hits", pct(s.cache.l2_hit_ratio)],
      ["stale answers", pct(s.cache.stale_ratio)],
      ["L1 entries", s.cache.l1_entries],
    ]);

    const deg = s.degraded;
    const control = $("degrade-control");
    if (deg) {
      control.hidden = false;
      const badgeEl = $("degraded");
      badgeEl.hidden = !deg.on;
      badge(badgeEl, "degraded" + (deg.source ? " (" + deg.source + ")" : ""), "warn");
      $("degrade-state").textContent = (deg.on ? "on" : "off") + (deg.source ? " — " + deg.source : "") + (deg.reason ? " — " + deg.reason : "");
    } else {
      control.hidden = true;
    }
    drawChart(s.history);
  }

  function drawChart(h) {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 180;
    canvas.width = width * ratio;
    canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const pad = { l: 40, r: 40, t: 8, b: 20 };
    const w = width - pad.l - pad.r;
    const ht = height - pad.t - pad.b;
    const n = h.t.length;
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7280";
    g.strokeStyle = "#e3e6ea";
    g.strokeRect(pad.l, pad.t, w, ht);
    if (n < 2) {
      g.fillText("collecting…", pad.l + 8, pad.t + 16);
      return;
    }
    const top = Math.max(1, ...h.calls_per_s, ...h.quota_per_s) * 1.15;
    const x0 = h.t[0];
    const span = Math.max(1, h.t[n - 1] - x0);
    const x = (t) => pad.l + (w * (t - x0)) / span;
    const y = (v) => pad.t + ht - (ht * v) / top;
    const yr = (v) => pad.t + ht - ht * v;
    const line = (values, scale, color) => {
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      let started = false;
      values.forEach((v, i) => {
        if (v === null) { started = false; return; }
        if (!started) { g.moveTo(x(h.t[i]), scale(v)); started = true; } else g.lineTo(x(h.t[i]), scale(v));
      });
      g.stroke();
    };
    line(h.quota_per_s, y, "#c62828");
    line(h.calls_per_s, y, "#2f6feb");
    line(h.hit_ratio, yr, "#1a7f37");
    g.fillStyle = "#6b7280";
    g.fillText(top.toFixed(0) + "/s", 4, pad.t + 10);
    g.fillText("0", 4, pad.t + ht);
    g.fillText("100%", width - pad.r + 4, pad.t + 10);
    g.fillText(Math.round(-x0 / 60) + " min ago", pad.l, height - 4);
    g.fillText("now", width - pad.r - 20, height - 4);
  }

  // --- polling and controls -------------------------------------------------------------------
  async function poll() {
    try {
      const s = await api("/v1/admin/state");
      $("error").textContent = "";
      render(s);
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        signOut("Token refused (" + e.message + ")");
        return;
      }
      $("error").textContent = "Cannot read the state: " + e.message;
    }
    timer = setTimeout(poll, POLL_MS);
  }

  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("logout").hidden = false;
    if (timer === null) poll();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (timer !== null) clearTimeout(timer);
    timer = null;
    $("dashboard").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  async function signIn(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    try {
      await api("/v1/admin/state");
      $("login-error").textContent = "";
      showDashboard();
    } catch (e) {
      signOut(e.status === 401 || e.status === 403 ? "Token refused (" + e.message + ")" : "Cannot reach the gateway: " + e.message);
    }
  }

  function show(result) { $("control-result").textContent = typeof result === "string" ? result : JSON.stringify(result, null, 2); }

  async function lookUp(event) {
    event.preventDefault();
    const id = $("lookup-id").value.trim();
    if (!id) return;
    try {
      const r = await api("/v1/admin/items/" + encodeURIComponent(id));
      const who = r.fetched_by ? r.fetched_by.credential + " via " + r.fetched_by.egress : "not fetched here lately";
      const price = r.item ? r.item.final_price || r.item.zk_final_price || "" : "";
      show(id + ": " + (r.item ? (r.item.title || "") + " " + price : "not found") +
        "\nsource " + r.source + ", age " + num(r.age_s, 1) + " s" + (r.stale ? " (stale)" : "") +
        "\nfetched by " + who);
    } catch (e) { show("lookup failed: " + e.message); }
  }

  async function invalidate(event) {
    event.preventDefault();
    const id = $("invalidate-id").value.trim();
    if (!id) return;
    try {
      const r = await api("/v1/items:invalidate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ids: [id] }),
      });
      show("invalidated " + id + (r.everywhere ? " on every replica" : " here (other replicas not reached)"));
    } catch (e) { show("invalidate failed: " + e.message); }
  }

  async function degrade(mode) {
    try {
      const r = await api("/v1/admin/degrade", {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ mode }),
      });
      show("degradation mode: " + JSON.stringify(r));
    } catch (e) { show("switch failed: " + e.message); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("logout").addEventListener("click", () => signOut(""));
    $("lookup-form").addEventListener("submit", lookUp);
    $("invalidate-form").addEventListener("submit", invalidate);
    $("degrade-on").addEventListener("click", () => degrade("on"));
    $("degrade-off").addEventListener("click", () => degrade("off"));
    $("degrade-auto").addEventListener("click", () => degrade("auto"));
    if (sessionStorage.getItem(TOKEN_KEY) !== null) showDashboard();
  });
})();
