// Portunus operator UI: plain JavaScript over the operator API (same origin, session cookie + CSRF token).
"use strict";

const state = { user: null, csrf: null, timer: null, gen: 0, clients: [], users: [] };

// ------------------------------------------------------------------ DOM and formatting helpers

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = [["TB", 1e12], ["GB", 1e9], ["MB", 1e6], ["KB", 1e3]];
  for (const [u, s] of units) if (n >= s) return (n / s).toFixed(n / s < 10 ? 2 : 1) + " " + u;
  return n + " B";
}

function fmtRate(n) {
  if (n === null || n === undefined) return "—";
  return (n >= 1e3 ? fmtBytes(n) : Math.round(n) + " B") + "/s";
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const p = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" +
    p(d.getMinutes()) + ":" + p(d.getSeconds());
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return fmtTime(iso);
}

function badge(status) {
  return h("span", { class: "badge status-" + String(status).replace(/[^a-z_]/g, "") }, status);
}

function errorText(resp) {
  const e = (resp.body && resp.body.error) || {};
  return e.message || ("HTTP " + resp.status);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// ------------------------------------------------------------------ API

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["X-CSRF-Token"] = state.csrf;
  let resp;
  try {
    resp = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { status: 0, body: { error: { code: "network", message: "cannot reach the server (" + e.message + ")" } } };
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) {
    data = { error: { code: "bad_response", message: text.slice(0, 200) } };
  }
  if (resp.status === 401 && path !== "/v1/auth/login") {
    showLogin("Your session has ended: sign in again.");
  }
  return { status: resp.status, body: data };
}

// ------------------------------------------------------------------ forms: fields and errors

function field(label, name, input, opts) {
  const id = "f-" + (opts && opts.idPrefix ? opts.idPrefix + "-" : "") + name;
  input.id = id;
  input.name = name;
  const err = h("div", { class: "field-error", id: id + "-error", role: "alert" });
  input.setAttribute("aria-describedby", id + "-error" + (opts && opts.hint ? " " + id + "-hint" : ""));
  return h("div", { class: "field" + (opts && opts.wide ? " wide" : "") },
    h("label", { for: id }, label), input,
    opts && opts.hint ? h("div", { class: "muted", id: id + "-hint" }, opts.hint) : null, err);
}

function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const top = form.querySelector(".form-error");
  if (top) top.textContent = "";
  const ok = form.querySelector(".form-ok");
  if (ok) ok.textContent = "";
}

function fieldError(form, name, message) {
  const input = form.elements.namedItem(name);
  if (!input || !input.id) return false;
  const err = document.getElementById(input.id + "-error");
  if (!err) return false;
  err.textContent = err.textContent ? err.textContent + " " + message : message;
  input.setAttribute("aria-invalid", "true");
  return true;
}

function formError(form, message) {
  const top = form.querySelector(".form-error");
  if (top) top.textContent = message;
}

function formOk(form, message) {
  const ok = form.querySelector(".form-ok");
  if (ok) ok.textContent = message;
}

// Error codes and refusal reasons the API gives, and the field each one is about.
const FIELD_OF_REASON = {
  port_outside_grant: "listen_port", protocol_not_granted: "protocol", client_not_granted: "client",
  port_in_use: "listen_port", sni_conflict: "listen_port", duplicate_name: "name", client_not_found: "client",
  user_not_found: "user_id", client_exists: "name",
};
// Keys named in validation problems ("...: listen_port: must be ...") and the form field that holds them.
const FIELD_OF_KEY = { listen_ports: "listen_port", targets: "target" };

function showApiErrors(form, resp, keys) {
  const e = (resp.body && resp.body.error) || {};
  let placed = false;
  const problems = e.problems || (e.code === "invalid" ? [e.message] : []);
  for (const p of problems) {
    let done = false;
    for (const key of keys) {
      const at = [": " + key + ":", ": " + key + ".", ": " + key + "[", key + " must", key + ": "]
        .map((s) => p.indexOf(s)).filter((i) => i >= 0);
      if (at.length) {
        const start = p.indexOf(key, Math.min(...at));
        done = fieldError(form, FIELD_OF_KEY[key] || key, p.slice(start));
        if (done) break;
      }
    }
    if (done) placed = true;
    else formError(form, p);
  }
  const target = FIELD_OF_REASON[e.reason] || FIELD_OF_REASON[e.code];
  if (!problems.length && target && fieldError(form, target, e.message)) placed = true;
  if (!problems.length && !placed) formError(form, errorText(resp));
  const first = form.querySelector("[aria-invalid='true']");
  if (first) first.focus();
}

function parseBytes(text) {
  const m = /^\s*([0-9]+)\s*([A-Za-z]*)\s*$/.exec(text);
  const units = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };
  if (!m || !(m[2].toLowerCase() in units)) return text;  // the API says what is wrong with it
  return Number(m[1]) * units[m[2].toLowerCase()];
}

function intOrText(text) {
  return /^\s*[0-9]{1,15}\s*$/.test(text) ? Number(text) : text;
}

// ------------------------------------------------------------------ sign-in, navigation, polling

function stopPolling() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  state.gen += 1;
}

function poll(fn, intervalMs) {
  const gen = state.gen;
  let busy = false;
  const tick = async () => {
    if (busy || gen !== state.gen) return;
    busy = true;
    try { await fn(gen); } finally { busy = false; }
  };
  tick();
  state.timer = setInterval(tick, intervalMs);
}

function showLogin(message) {
  stopPolling();
  state.user = null;
  state.csrf = null;
  document.getElementById("top").hidden = true;
  const view = document.getElementById("view");
  const user = h("input", { type: "text", autocomplete: "username", required: true });
  const pass = h("input", { type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { id: "login-form", novalidate: true },
    h("h1", {}, "Sign in to Portunus"),
    field("Username", "username", user),
    field("Password", "password", pass),
    h("p", { class: "form-error", id: "login-error", role: "alert" }, message || ""),
    h("button", { type: "submit", class: "primary", id: "login-submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    const resp = await api("POST", "/v1/auth/login", { username: user.value, password: pass.value });
    if (resp.status === 200) {
      state.user = resp.body.user;
      state.csrf = resp.body.csrf_token;
      enterApp();
    } else {
      pass.value = "";
      formError(form, errorText(resp));
      pass.focus();
    }
  });
  view.replaceChildren(h("div", { class: "card login" }, form));
  user.focus();
}

function enterApp() {
  document.getElementById("top").hidden = false;
  setText(document.getElementById("who"), state.user.username + " (" + state.user.role + ")");
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/rules";
  else route();
}

function superadmin() {
  return state.user && state.user.role === "superadmin";
}

const PAGES = {};

function route() {
  if (!state.user) return;
  stopPolling();
  const name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "rules";
  const page = PAGES[name] || PAGES.rules;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = document.getElementById("view");
  view.replaceChildren();
  page(view);
  document.title = "Portunus: " + (name[0].toUpperCase() + name.slice(1));
}

async function logout() {
  await api("POST", "/v1/auth/logout");
  showLogin("Signed out.");
}

// List calls answer a page (up to 1000 rows) and "next_after" while more follow: read every page.
const MAX_PAGES = 50;
async function listAll(path, key) {
  let items = [];
  let after = 0;
  for (let i = 0; i < MAX_PAGES; i++) {
    const resp = await api("GET", path + (path.includes("?") ? "&" : "?") + "after=" + after);
    if (resp.status !== 200) return i === 0 ? resp : { status: 200, body: { [key]: items } };
    items = items.concat(resp.body[key]);
    if (resp.body.next_after === null || resp.body.next_after === undefined) break;
    after = resp.body.next_after;
  }
  return { status: 200, body: { [key]: items } };
}

async function loadClients() {
  const resp = await listAll("/v1/clients", "clients");
  if (resp.status === 200) state.clients = resp.body.clients;
  return state.clients;
}

async function loadUsers() {
  const resp = await api("GET", "/v1/users");
  if (resp.status === 200) state.users = resp.body.users;
  return state.users;
}

function fillSelect(select, values, keep) {
  const current = keep ? select.value : null;
  select.replaceChildren(...values.map(([value, label]) => h("option", { value }, label)));
  if (current !== null && values.some(([v]) => String(v) === current)) select.value = current;
}

// Keyed table body: rows are updated in place (focus and selection survive a refresh).
function syncRows(tbody, items, keyOf, build, update) {
  const seen = new Set();
  let prev = null;
  for (const item of items) {
    const key = String(keyOf(item));
    seen.add(key);
    let tr = tbody.querySelector("tr[data-key='" + CSS.escape(key) + "']");
    if (!tr) {
      tr = build(item);
      tr.dataset.key = key;
    }
    update(tr, item);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of [...tbody.querySelectorAll("tr[data-key]")]) if (!seen.has(tr.dataset.key)) tr.remove();
  const empty = tbody.querySelector("tr.empty");
  if (items.length === 0 && !empty) {
    const cols = tbody.parentElement.querySelectorAll("thead th").length;
    tbody.append(h("tr", { class: "empty" }, h("td", { colspan: cols, class: "muted" }, "None yet.")));
  } else if (items.length && empty) empty.remove();
}

function cells(tr) {
  const out = {};
  for (const td of tr.querySelectorAll("td[data-col]")) out[td.dataset.col] = td;
  return out;
}

function table(id, columns) {
  const tbody = h("tbody");
  const t = h("table", { id },
    h("thead", {}, h("tr", {}, columns.map(([label, cls]) => h("th", { scope: "col", class: cls || null }, label)))),
    tbody);
  return [h("div", { class: "table-wrap" }, t), tbody];
}

function confirmButton(label, onConfirm) {
  const wrap = h("span", { class: "row-actions" });
  const start = h("button", { type: "button", class: "small danger" }, label);
  start.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "small danger", "data-confirm": "yes" }, "Confirm " + label.toLowerCase());
    const no = h("button", { type: "button", class: "small" }, "Cancel");
    yes.addEventListener("click", async () => { yes.disabled = true; await onConfirm(); });
    no.addEventListener("click", () => { wrap.replaceChildren(start); start.focus(); });
    wrap.replaceChildren(yes, no);
    yes.focus();
  });
  wrap.append(start);
  return wrap;
}

// ------------------------------------------------------------------ clients

PAGES.clients = (view) => {
  const [wrap, tbody] = table("clients-table", [["Name"], ["Address"], ["Status"], ["Last seen"],
    ["Version applied", "num"], ["Rules (active / failed / pending)"], ["Connections", "num"]]);
  view.append(h("h1", {}, "Clients", h("span", { class: "live" }, "refreshed every 2 s")), wrap);

  let enrollTbody = null;
  if (superadmin()) {
    const name = h("input", { type: "text", required: true });
    const address = h("input", { type: "text", required: true, placeholder: "10.0.0.5" });
    const ttl = h("input", { type: "text", inputmode: "numeric", placeholder: "3600" });
    const result = h("div", { id: "enroll-result" });
    const form = h("form", { class: "grid", id: "enroll-form", novalidate: true },
      field("Client name", "name", name, { idPrefix: "enroll" }),
      field("Address", "address", address, { idPrefix: "enroll", hint: "The client's host or IP (shown to operators)." }),
      field("Valid for (seconds)", "ttl_secs", ttl, { idPrefix: "enroll", hint: "Empty: the server's default." }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create enrollment URI")),
      h("p", { class: "form-error", role: "alert" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = { name: name.value.trim(), address: address.value.trim() };
      if (ttl.value.trim()) body.ttl_secs = intOrText(ttl.value.trim());
      const resp = await api("POST", "/v1/client-enrollments", body);
      if (resp.status !== 201) {
        const msg = errorText(resp);
        const key = ["name", "address", "ttl_secs"].find((k) => msg.startsWith(k) || msg.includes(" " + k + " "));
        if (!(key && fieldError(form, key, msg))) showApiErrors(form, resp, ["name", "address", "ttl_secs"]);
        return;
      }
      const uri = h("input", { type: "text", readonly: true, id: "enroll-uri", value: resp.body.uri,
        "aria-label": "One-time enrollment URI" });
      const status = h("span", { id: "copy-status", class: "muted", "aria-live": "polite" });
      const copy = h("button", { type: "button", id: "copy-uri" }, "Copy");
      copy.addEventListener("click", async () => {
        uri.select();
        try {
          await navigator.clipboard.writeText(uri.value);
          status.textContent = "Copied to the clipboard.";
        } catch (e) {
          // No clipboard permission (plain HTTP off loopback): the URI is selected for Ctrl-C.
          status.textContent = document.execCommand("copy") ? "Copied to the clipboard." : "Selected: press Ctrl-C to copy.";
        }
      });
      result.replaceChildren(
        h("p", {}, "One-time URI for client ", h("strong", {}, resp.body.client), ", valid until ",
          fmtTime(resp.body.expires_at), ". Run ", h("code", {}, "portunus-client enroll URI --out bundle.json"),
          " on the client host."),
        h("div", { class: "uri-box" }, uri, copy), status);
      copy.focus();
      refreshEnrollments();
    });
    const [ewrap, etbody] = table("enrollments-table", [["ID", "num"], ["Client"], ["Status"], ["Created"],
      ["Expires"], ["Used"], ["Actions"]]);
    enrollTbody = etbody;
    view.append(h("h2", {}, "Enroll a client"), h("div", { class: "card" }, form, result),
      h("h2", {}, "Enrollment URIs"), ewrap);
  }

  async function refreshEnrollments() {
    if (!enrollTbody) return;
    const resp = await listAll("/v1/client-enrollments", "enrollments");
    if (resp.status !== 200) return;
    const rows = resp.body.enrollments.slice().reverse();
    syncRows(enrollTbody, rows, (e) => e.id,
      () => h("tr", {}, ["id", "client", "status", "created", "expires", "used", "actions"].map((c) =>
        h("td", { "data-col": c, class: c === "id" ? "num" : null }))),
      (tr, e) => {
        const c = cells(tr);
        setText(c.id, String(e.id));
        setText(c.client, e.client);
        if (c.status.dataset.v !== e.status) { c.status.dataset.v = e.status; c.status.replaceChildren(badge(e.status)); }
        setText(c.created, fmtTime(e.created_at) + " by " + e.created_by);
        setText(c.expires, fmtTime(e.expires_at));
        setText(c.used, e.used_at ? fmtTime(e.used_at) : "—");
        if (e.status === "outstanding" && !c.actions.firstChild) {
          c.actions.append(confirmButton("Revoke", async () => {
            await api("DELETE", "/v1/client-enrollments/" + e.id);
            c.actions.replaceChildren();
            refreshEnrollments();
          }));
        } else if (e.status !== "outstanding") c.actions.replaceChildren();
      });
  }

  poll(async (gen) => {
    const clients = await loadClients();
    if (gen !== state.gen) return;
    syncRows(tbody, clients, (c) => c.name,
      () => h("tr", {}, ["name", "address", "status", "last_seen", "version", "rules", "connections"].map((c) =>
        h("td", { "data-col": c, class: ["version", "connections"].includes(c) ? "num" : null }))),
      (tr, c) => {
        const x = cells(tr);
        setText(x.name, c.name);
        setText(x.address, c.address);
        if (x.status.dataset.v !== c.status) { x.status.dataset.v = c.status; x.status.replaceChildren(badge(c.status)); }
        // The server stamps last_seen when a stream opens or closes: an online client is seen now.
        setText(x.last_seen, c.status === "online" ? "now (connected since " + fmtTime(c.last_seen_at) + ")" : ago(c.last_seen_at));
        x.last_seen.title = fmtTime(c.last_seen_at);
        const applied = c.acked_version === null || c.acked_version === undefined ? "—" : String(c.acked_version);
        setText(x.version, applied + " of " + c.ruleset_version);
        x.version.title = "rule-set version the client applied, of the newest the server signed";
        setText(x.rules, c.rules.active + " / " + c.rules.failed + " / " + c.rules.pending);
        setText(x.connections, c.active_connections === null || c.active_connections === undefined ? "—" : String(c.active_connections));
      });
    await refreshEnrollments();
  }, 2000);
};

// ------------------------------------------------------------------ rules

const RULE_FORM_KEYS = ["client", "name", "protocol", "listen_addr", "listen_port", "target", "owner"];

function ruleTarget(spec) {
  if (spec.target) return spec.target;
  if (Array.isArray(spec.targets)) {
    return spec.targets.map((t) => (typeof t === "string" ? t : t.host + ":" + t.port)).join(", ");
  }
  return "—";
}

function ruleListen(spec) {
  const addr = spec.listen_addr || "0.0.0.0";
  const port = spec.listen_ports || spec.listen_port;
  return (addr.includes(":") ? "[" + addr + "]" : addr) + ":" + port;
}

PAGES.rules = (view) => {
  const editor = h("section", { id: "rule-editor", "aria-labelledby": "rule-editor-title" });
  const newButton = h("button", { type: "button", class: "primary", id: "new-rule" }, "New rule");
  const [wrap, tbody] = table("rules-table", [["ID", "num"], ["Client"], ["Name"], ["Proto"], ["Listen"],
    ["Target"], ["Owner"], ["Status"], ["In/s", "num"], ["Out/s", "num"], ["Conns", "num"], ["Bytes in", "num"],
    ["Bytes out", "num"], ["Actions"]]);
  const notice = h("p", { class: "form-ok", id: "rules-notice", role: "status" });
  view.append(h("h1", {}, "Rules", h("span", { class: "live" }, "live: refreshed every second")),
    h("p", {}, newButton), notice, editor, wrap);
  newButton.addEventListener("click", () => openEditor(null));

  function openEditor(row) {
    const spec = row ? row.rule : {};
    const client = h("select", { required: true });
    fillSelect(client, state.clients.map((c) => [c.name, c.name + " (" + c.status + ")"]), false);
    if (row) { client.value = row.client; client.disabled = true; }
    const name = h("input", { type: "text", required: true, value: spec.name || "" });
    const protocol = h("select", {}, h("option", { value: "tcp" }, "TCP"), h("option", { value: "udp" }, "UDP"));
    protocol.value = spec.protocol || "tcp";
    const listenAddr = h("input", { type: "text", value: spec.listen_addr || "0.0.0.0" });
    const listenPort = h("input", { type: "text", inputmode: "numeric", required: true,
      value: spec.listen_ports || spec.listen_port || "" });
    const target = h("input", { type: "text", required: true, value: spec.target || "",
      placeholder: "10.0.0.9:80" });
    const owner = h("input", { type: "text", value: spec.owner || "" });
    const basic = new Set(["name", "protocol", "listen_addr", "listen_port", "listen_ports", "target", "owner", "client"]);
    const rest = Object.fromEntries(Object.entries(spec).filter(([k]) => !basic.has(k)));
    const extra = h("textarea", { rows: 3, placeholder: '{"rate_limit": {"bandwidth_in_bps": 1048576}}' },
      Object.keys(rest).length ? JSON.stringify(rest, null, 1) : "");
    const submit = h("button", { type: "submit", class: "primary", id: "rule-submit" }, row ? "Save rule" : "Create rule");
    const cancel = h("button", { type: "button", id: "rule-cancel" }, "Cancel");
    const form = h("form", { class: "grid card", id: "rule-form", novalidate: true },
      field("Client", "client", client, { idPrefix: "rule" }),
      field("Name", "name", name, { idPrefix: "rule" }),
      field("Protocol", "protocol", protocol, { idPrefix: "rule" }),
      field("Listen address", "listen_addr", listenAddr, { idPrefix: "rule" }),
      field("Listen port", "listen_port", listenPort, { idPrefix: "rule", hint: "A port, or a range 20000-20010." }),
      field("Target", "target", target, { idPrefix: "rule", hint: "HOST:PORT" }),
      superadmin() ? field("Owner", "owner", owner, { idPrefix: "rule", hint: "Optional: shares limits and quota." }) : null,
      field("Other rule keys (JSON object)", "extra", extra, { idPrefix: "rule", wide: true,
        hint: "Any other key of the TOML rule schema (rate_limit, targets, idle_timeout_secs, ...)." }),
      h("div", { class: "actions" }, submit, cancel, h("span", { class: "muted", id: "rule-progress", "aria-live": "polite" })),
      h("p", { class: "form-error", role: "alert", id: "rule-form-error" }));
    cancel.addEventListener("click", () => { editor.replaceChildren(); newButton.focus(); });
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      let body = {};
      if (extra.value.trim()) {
        try {
          body = JSON.parse(extra.value);
          if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("not an object");
        } catch (e) {
          fieldError(form, "extra", "must be a JSON object (" + e.message + ")");
          extra.focus();
          return;
        }
      }
      Object.assign(body, { client: client.value, name: name.value.trim(), protocol: protocol.value,
        listen_addr: listenAddr.value.trim(), target: target.value.trim() });
      const port = listenPort.value.trim();
      if (/^[0-9]+-[0-9]+$/.test(port)) body.listen_ports = port;
      else body.listen_port = intOrText(port);
      if (owner.value.trim()) body.owner = owner.value.trim();
      submit.disabled = true;
      document.getElementById("rule-progress").textContent = "Waiting for the client to apply it…";
      const resp = row ? await api("PUT", "/v1/rules/" + row.id, body) : await api("POST", "/v1/rules", body);
      submit.disabled = false;
      document.getElementById("rule-progress").textContent = "";
      if (resp.status === 200 || resp.status === 201) {
        editor.replaceChildren();
        notice.textContent = "Rule " + resp.body.id + " (" + body.name + ") is " + resp.body.status + ".";
        newButton.focus();
        return;
      }
      showApiErrors(form, resp, ["listen_ports", "listen_port", "listen_addr", "targets", "target", "protocol",
        "owner", "client", "name"]);
    });
    editor.replaceChildren(h("h2", { id: "rule-editor-title" }, row ? "Edit rule " + row.id : "New rule"), form);
    (row ? name : client).focus();
  }

  poll(async (gen) => {
    if (!state.clients.length) await loadClients();
    const resp = await listAll("/v1/rules", "rules");
    if (gen !== state.gen || resp.status !== 200) return;
    const cols = ["id", "client", "name", "protocol", "listen", "target", "owner", "status", "rate_in", "rate_out",
      "conns", "bytes_in", "bytes_out", "actions"];
    const numeric = new Set(["id", "rate_in", "rate_out", "conns", "bytes_in", "bytes_out"]);
    syncRows(tbody, resp.body.rules, (r) => r.id,
      (r) => {
        const tr = h("tr", { "data-rule-id": r.id, "data-rule-name": r.name },
          cols.map((c) => h("td", { "data-col": c, class: (numeric.has(c) ? "num " : "") + (c.startsWith("rate") ? "rate" : "") })));
        const edit = h("button", { type: "button", class: "small", "aria-label": "Edit rule " + r.name }, "Edit");
        edit.addEventListener("click", async () => {
          const fresh = await api("GET", "/v1/rules/" + r.id);
          if (fresh.status === 200) openEditor(fresh.body);
        });
        const del = confirmButton("Delete", async () => {
          const d = await api("DELETE", "/v1/rules/" + r.id);
          notice.textContent = d.status === 200 ? "Rule " + r.id + " (" + r.name + ") deleted." : errorText(d);
          newButton.focus();
        });
        cells(tr).actions.append(h("span", { class: "row-actions" }, edit, del));
        return tr;
      },
      (tr, r) => {
        const c = cells(tr);
        const s = r.stats || null;
        setText(c.id, String(r.id));
        setText(c.client, r.client);
        setText(c.name, r.name);
        setText(c.protocol, r.rule.protocol || "tcp");
        setText(c.listen, ruleListen(r.rule));
        setText(c.target, ruleTarget(r.rule));
        setText(c.owner, r.rule.owner || "—");
        if (c.status.dataset.v !== r.status) { c.status.dataset.v = r.status; c.status.replaceChildren(badge(r.status)); }
        c.status.title = r.status_reason || "";
        setText(c.rate_in, s ? fmtRate(s.rate_in_bytes_per_s) : "—");
        setText(c.rate_out, s ? fmtRate(s.rate_out_bytes_per_s) : "—");
        setText(c.conns, s ? String(s.connections_active) : "—");
        setText(c.bytes_in, s ? fmtBytes(s.bytes_in) : "—");
        setText(c.bytes_out, s ? fmtBytes(s.bytes_out) : "—");
        c.bytes_in.dataset.bytes = s ? String(s.bytes_in) : "";
        c.bytes_out.dataset.bytes = s ? String(s.bytes_out) : "";
      });
  }, 1000);
};

// ------------------------------------------------------------------ owners, grants and limits

const RATE_KEYS = [["bandwidth_in_bps", "Bandwidth in (bytes/s)"], ["bandwidth_out_bps", "Bandwidth out (bytes/s)"],
  ["new_connections_per_sec", "New connections/s"], ["concurrent_connections", "Concurrent connections"]];

PAGES.owners = (view) => {
  view.append(h("h1", {}, "Owners and limits"));
  const [uwrap, utbody] = table("users-table", [["ID", "num"], ["User"], ["Role"], ["Owner name on clients"],
    ["Created"], ["Actions"]]);
  view.append(h("h2", {}, "Users"), uwrap);
  const [gwrap, gtbody] = table("grants-table", [["ID", "num"], ["User"], ["Client"], ["Listen ports"],
    ["Protocols"], ["Created"], ["Actions"]]);
  const [lwrap, ltbody] = table("limits-table", [["Client"], ["Owner"], ["Limits"]]);

  let grantUser = null;
  let limitClient = null;
  if (superadmin()) {
    const uname = h("input", { type: "text", required: true, autocomplete: "off" });
    const upass = h("input", { type: "password", required: true, autocomplete: "new-password" });
    const urole = h("select", {}, h("option", { value: "user" }, "user"), h("option", { value: "superadmin" }, "superadmin"));
    const uform = h("form", { class: "grid card", id: "user-form", novalidate: true },
      field("Username", "username", uname, { idPrefix: "user" }),
      field("Password", "password", upass, { idPrefix: "user", hint: "At least 12 characters." }),
      field("Role", "role", urole, { idPrefix: "user" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add user")),
      h("p", { class: "form-error", role: "alert" }), h("p", { class: "form-ok", role: "status" }));
    uform.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(uform);
      const resp = await api("POST", "/v1/users", { username: uname.value.trim(), password: upass.value, role: urole.value });
      if (resp.status === 201) {
        formOk(uform, "User " + resp.body.username + " created (id " + resp.body.id + ").");
        uname.value = ""; upass.value = "";
        refresh();
      } else showApiErrors(uform, resp, ["username", "password", "role"]);
    });
    view.append(uform);

    grantUser = h("select", { required: true });
    const gclient = h("input", { type: "text", value: "*", list: "client-names" });
    const gstart = h("input", { type: "text", inputmode: "numeric", required: true });
    const gend = h("input", { type: "text", inputmode: "numeric", required: true });
    const tcp = h("input", { type: "checkbox", id: "grant-tcp", checked: true });
    const udp = h("input", { type: "checkbox", id: "grant-udp" });
    const protos = h("fieldset", { class: "field" }, h("legend", {}, "Protocols"),
      h("label", { for: "grant-tcp" }, tcp, " TCP"), h("label", { for: "grant-udp" }, udp, " UDP"),
      h("input", { type: "hidden", name: "protocols", id: "f-grant-protocols" }),
      h("div", { class: "field-error", id: "f-grant-protocols-error", role: "alert" }));
    const gform = h("form", { class: "grid card", id: "grant-form", novalidate: true },
      field("User", "user_id", grantUser, { idPrefix: "grant" }),
      field("Client", "client", gclient, { idPrefix: "grant", hint: "A client name, or * for every client." }),
      field("First listen port", "listen_port_start", gstart, { idPrefix: "grant" }),
      field("Last listen port", "listen_port_end", gend, { idPrefix: "grant" }),
      protos,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add grant")),
      h("p", { class: "form-error", role: "alert" }), h("p", { class: "form-ok", role: "status" }),
      h("datalist", { id: "client-names" }));
    gform.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(gform);
      const protocols = [tcp.checked ? "tcp" : null, udp.checked ? "udp" : null].filter(Boolean);
      const resp = await api("POST", "/v1/grants", { user_id: Number(grantUser.value), client: gclient.value.trim(),
        listen_port_start: intOrText(gstart.value.trim()), listen_port_end: intOrText(gend.value.trim()), protocols });
      if (resp.status === 201) { formOk(gform, "Grant " + resp.body.id + " added."); refresh(); }
      else showApiErrors(gform, resp, ["listen_port_start", "listen_port_end", "protocols", "client", "user_id"]);
    });
    view.append(h("h2", {}, "Grants"), h("p", { class: "muted" },
      "A user may put rules only inside one of their grants (client, protocol and the whole listen range)."),
    gwrap, gform);

    limitClient = h("select", { required: true });
    const lowner = h("input", { type: "text", required: true, placeholder: "user:alice" });
    const inputs = RATE_KEYS.map(([k]) => [k, h("input", { type: "text", inputmode: "numeric" })]);
    const lform = h("form", { class: "grid card", id: "limit-form", novalidate: true },
      field("Client", "client", limitClient, { idPrefix: "limit" }),
      field("Owner", "owner", lowner, { idPrefix: "limit", hint: "A user's rules run as user:NAME." }),
      inputs.map(([k, input], i) => field(RATE_KEYS[i][1], k, input, { idPrefix: "limit", hint: "Empty: no limit." })),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Set limits")),
      h("p", { class: "form-error", role: "alert" }), h("p", { class: "form-ok", role: "status" }));
    lform.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(lform);
      const body = {};
      for (const [k, input] of inputs) if (input.value.trim()) body[k] = intOrText(input.value.trim());
      const owner = lowner.value.trim();
      if (!owner) { fieldError(lform, "owner", "owner: required"); lowner.focus(); return; }
      const resp = await api("PUT", "/v1/clients/" + encodeURIComponent(limitClient.value) + "/owners/" +
        encodeURIComponent(owner) + "/rate-limit", body);
      if (resp.status === 200) { formOk(lform, "Limits of " + owner + " on " + resp.body.client + " are active."); refresh(); }
      else showApiErrors(lform, resp, [...RATE_KEYS.map(([k]) => k), "owner"]);
    });
    view.append(h("h2", {}, "Owners' limits per client"), lwrap, lform);
  } else {
    view.append(h("h2", {}, "Your grants"), gwrap, h("h2", {}, "Owners' limits per client"), lwrap);
  }

  async function refresh() {
    const [users, clients, grants] = await Promise.all([loadUsers(), loadClients(), api("GET", "/v1/grants")]);
    syncRows(utbody, users, (u) => u.id,
      () => h("tr", {}, ["id", "username", "role", "owner", "created", "actions"].map((c) => h("td", { "data-col": c, class: c === "id" ? "num" : null }))),
      (tr, u) => {
        const c = cells(tr);
        setText(c.id, String(u.id)); setText(c.username, u.username); setText(c.role, u.role);
        setText(c.owner, "user:" + u.username); setText(c.created, fmtTime(u.created_at));
        if (superadmin() && u.id !== state.user.id && !c.actions.firstChild && u.username !== "root") {
          c.actions.append(confirmButton("Delete", async () => {
            const d = await api("DELETE", "/v1/users/" + u.id);
            if (d.status !== 200) c.actions.replaceChildren(h("span", { class: "field-error", role: "alert" }, errorText(d)));
            refresh();
          }));
        }
      });
    if (grantUser) fillSelect(grantUser, users.map((u) => [u.id, u.username]), true);
    if (limitClient) fillSelect(limitClient, clients.map((c) => [c.name, c.name]), true);
    const dl = document.getElementById("client-names");
    if (dl) dl.replaceChildren(h("option", { value: "*" }), ...clients.map((c) => h("option", { value: c.name })));
    if (grants.status === 200) {
      syncRows(gtbody, grants.body.grants, (g) => g.id,
        () => h("tr", {}, ["id", "user", "client", "ports", "protocols", "created", "actions"].map((c) => h("td", { "data-col": c, class: c === "id" ? "num" : null }))),
        (tr, g) => {
          const c = cells(tr);
          setText(c.id, String(g.id)); setText(c.user, g.username); setText(c.client, g.client);
          setText(c.ports, g.listen_port_start + "–" + g.listen_port_end); setText(c.protocols, g.protocols.join(", "));
          setText(c.created, fmtTime(g.created_at) + " by " + g.created_by);
          if (superadmin() && !c.actions.firstChild) {
            c.actions.append(confirmButton("Delete", async () => {
              const d = await api("DELETE", "/v1/grants/" + g.id);
              if (d.status !== 200) c.actions.replaceChildren(h("span", { class: "field-error", role: "alert" }, errorText(d)));
              refresh();
            }));
          }
        });
    }
    const limits = [];
    for (const cl of clients) {
      for (const [owner, rl] of Object.entries(cl.owners || {})) limits.push({ client: cl.name, owner, rl });
    }
    syncRows(ltbody, limits, (l) => l.client + "/" + l.owner,
      () => h("tr", {}, ["client", "owner", "limits"].map((c) => h("td", { "data-col": c }))),
      (tr, l) => {
        const c = cells(tr);
        setText(c.client, l.client); setText(c.owner, l.owner);
        const text = Object.entries(l.rl).map(([k, v]) => k + " = " + v).join(", ");
        setText(c.limits, text || "no limits");
      });
  }
  poll(refresh, 5000);
};

// ------------------------------------------------------------------ quotas

PAGES.quotas = (view) => {
  const [wrap, tbody] = table("quotas-table", [["User"], ["Client"], ["Period"], ["Used", "num"], ["Limit", "num"],
    ["Remaining", "num"], ["Usage"], ["Period ends"], ["Status"], ["Actions"]]);
  view.append(h("h1", {}, "Quotas and usage", h("span", { class: "live" }, "refreshed every 2 s")), wrap);
  let quser = null;
  let qclient = null;
  if (superadmin()) {
    quser = h("select", { required: true });
    qclient = h("select", { required: true });
    const bytes = h("input", { type: "text", required: true, placeholder: "100GiB" });
    const period = h("select", {}, ["monthly", "daily", "never"].map((p) => h("option", { value: p }, p)));
    const resetDay = h("input", { type: "text", inputmode: "numeric", value: "1" });
    const form = h("form", { class: "grid card", id: "quota-form", novalidate: true },
      field("User", "user", quser, { idPrefix: "quota" }),
      field("Client", "client", qclient, { idPrefix: "quota" }),
      field("Bytes per period", "bytes", bytes, { idPrefix: "quota", hint: "Both directions; units: 5GB, 100GiB." }),
      field("Period", "period", period, { idPrefix: "quota" }),
      field("Reset day (monthly)", "reset_day", resetDay, { idPrefix: "quota" }),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Set quota")),
      h("p", { class: "form-error", role: "alert" }), h("p", { class: "form-ok", role: "status" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(form);
      const body = { bytes: parseBytes(bytes.value), period: period.value };
      if (period.value === "monthly") body.reset_day = intOrText(resetDay.value.trim());
      const resp = await api("PUT", "/v1/users/" + quser.value + "/quotas/" + encodeURIComponent(qclient.value), body);
      if (resp.status === 200) { formOk(form, "Quota set."); refresh(); }
      else showApiErrors(form, resp, ["bytes", "period", "reset_day"]);
    });
    view.append(h("h2", {}, "Set a quota"), form);
  }
  async function refresh(gen) {
    const resp = await api("GET", "/v1/quotas");
    if (quser) {
      const [users, clients] = await Promise.all([loadUsers(), loadClients()]);
      fillSelect(quser, users.map((u) => [u.id, u.username]), true);
      fillSelect(qclient, clients.map((c) => [c.name, c.name]), true);
    }
    if (resp.status !== 200 || (gen !== undefined && gen !== state.gen)) return;
    syncRows(tbody, resp.body.quotas, (q) => q.user_id + "/" + q.client,
      () => h("tr", {}, ["user", "client", "period", "used", "limit", "remaining", "usage", "end", "status", "actions"]
        .map((c) => h("td", { "data-col": c, class: ["used", "limit", "remaining"].includes(c) ? "num" : null }))),
      (tr, q) => {
        const c = cells(tr);
        setText(c.user, q.username); setText(c.client, q.client);
        setText(c.period, q.period + (q.period === "monthly" ? " (day " + q.reset_day + ")" : ""));
        setText(c.used, fmtBytes(q.used_bytes)); setText(c.limit, fmtBytes(q.limit_bytes));
        setText(c.remaining, fmtBytes(q.remaining_bytes));
        let bar = c.usage.querySelector("progress");
        if (!bar) { bar = h("progress", { max: 100, "aria-label": "Usage of " + q.username + " on " + q.client }); c.usage.append(bar); }
        bar.value = Math.min(100, (100 * q.used_bytes) / Math.max(1, q.limit_bytes));
        bar.textContent = Math.round(bar.value) + "%";
        setText(c.end, q.period_end ? fmtTime(q.period_end) : "never");
        const st = q.exhausted ? "exhausted" : "ok";
        if (c.status.dataset.v !== st) { c.status.dataset.v = st; c.status.replaceChildren(badge(st)); }
        if (superadmin() && !c.actions.firstChild) {
          c.actions.append(confirmButton("Delete", async () => {
            await api("DELETE", "/v1/users/" + q.user_id + "/quotas/" + encodeURIComponent(q.client));
            refresh();
          }));
        }
      });
  }
  poll(refresh, 2000);
};

// ------------------------------------------------------------------ audit log

PAGES.audit = (view) => {
  const actor = h("select", {}, h("option", { value: "" }, "any"));
  const action = h("select", {}, h("option", { value: "" }, "any"));
  const result = h("select", {}, [["", "any"], ["ok", "ok"], ["denied", "denied"], ["error", "error"], ["refused", "refused"]]
    .map(([v, l]) => h("option", { value: v }, l)));
  const text = h("input", { type: "search", placeholder: "target or detail contains…" });
  const limit = h("select", {}, ["100", "500", "1000"].map((v) => h("option", { value: v }, v)));
  const count = h("span", { class: "muted", id: "audit-count", "aria-live": "polite" });
  const filters = h("form", { class: "filters", id: "audit-filters", role: "search" },
    field("Actor", "actor", actor, { idPrefix: "audit" }), field("Action", "action", action, { idPrefix: "audit" }),
    field("Result", "result", result, { idPrefix: "audit" }), field("Text", "text", text, { idPrefix: "audit" }),
    field("Per page", "limit", limit, { idPrefix: "audit" }), count);
  filters.addEventListener("submit", (ev) => ev.preventDefault());
  const [wrap, tbody] = table("audit-table", [["ID", "num"], ["Time"], ["Actor"], ["Role"], ["Action"], ["Target"],
    ["Result"]]);
  const newer = h("button", { type: "button", id: "audit-newest", disabled: true }, "Newest");
  const older = h("button", { type: "button", id: "audit-older" }, "Older entries");
  view.append(h("h1", {}, "Audit log", h("span", { class: "live" }, "newest page refreshed every 3 s")), filters, wrap,
    h("p", { class: "actions" }, newer, older));
  const seenActors = new Set();
  const seenActions = new Set();
  let before = null;  // paging back: entries older than this id (no auto refresh then)
  let entries = [];

  function query() {
    const q = new URLSearchParams({ limit: limit.value });
    if (before !== null) q.set("before_id", String(before));
    if (actor.value) q.set("actor", actor.value);
    if (action.value) q.set("action", action.value);
    if (result.value) q.set("result", result.value);
    if (text.value.trim()) q.set("q", text.value.trim());
    return "/v1/audit?" + q.toString();
  }

  let issued = 0;
  async function load(gen) {
    if (before !== null && gen !== "now") return;  // a page of older entries stays put
    const mine = ++issued;
    const resp = await api("GET", query());
    // Only the newest request's answer is shown: a slower one sent before a filter change is stale.
    if (resp.status !== 200 || mine !== issued || (gen !== "now" && gen !== state.gen)) return;
    entries = resp.body.entries;
    for (const e of entries) { seenActors.add(e.actor); seenActions.add(e.action); }
    fillSelect(actor, [["", "any"], ...[...seenActors].sort().map((x) => [x, x])], true);
    fillSelect(action, [["", "any"], ...[...seenActions].sort().map((x) => [x, x])], true);
    setText(count, entries.length + (entries.length === Number(limit.value) ? "+" : "") + " entries" +
      (before !== null ? " older than #" + before : ""));
    newer.disabled = before === null;
    older.disabled = entries.length < Number(limit.value);
    syncRows(tbody, entries, (e) => e.id,
      () => h("tr", {}, ["id", "ts", "actor", "role", "action", "target", "result"].map((c) => h("td", { "data-col": c, class: c === "id" ? "num" : null }))),
      (tr, e) => {
        const c = cells(tr);
        setText(c.id, String(e.id)); setText(c.ts, fmtTime(e.ts)); setText(c.actor, e.actor); setText(c.role, e.role);
        setText(c.action, e.action); setText(c.target, e.target || "—"); setText(c.result, e.result);
        c.result.className = e.result === "ok" ? "status-ok" : (/^(denied|error|refused)/.test(e.result) ? "status-error" : "");
      });
  }
  const reload = () => { before = null; load("now"); };
  let typing = null;
  text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 300); });
  for (const el of [actor, action, result, limit]) el.addEventListener("change", reload);
  newer.addEventListener("click", () => { reload(); older.focus(); });
  older.addEventListener("click", () => {
    if (!entries.length) return;
    before = entries[entries.length - 1].id;
    load("now");
  });
  poll(load, 3000);
};

// ------------------------------------------------------------------ start

async function start() {
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  const resp = await api("GET", "/v1/auth/session");
  if (resp.status === 200 && resp.body.authenticated) {
    state.user = resp.body.user;
    state.csrf = resp.body.csrf_token;
    enterApp();
  } else {
    showLogin("");
  }
}

document.addEventListener("DOMContentLoaded", start);
