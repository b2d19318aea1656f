// The callhost web UI: one page, views by URL fragment (#/instances/rl),
// everything through the JSON API the scripts use too.
import { el, buildForm, clearErrors, showFieldError, FieldError } from "/ui/forms.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let csrf = null;
let closers = []; // live streams of the current view, closed when it changes

class ApiFailure extends Error {
  constructor(status, body) {
    super(body.error || `HTTP ${status}`);
    this.status = status;
    this.field = body.field;
  }
}

async function api(method, path, body, contentType) {
  const headers = {};
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  let payload;
  if (body instanceof Blob || typeof body === "string") {
    payload = body;
    headers["Content-Type"] = contentType || "application/octet-stream";
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  const text = await response.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { text };
  }
  if (response.status === 401 && path !== "/api/v1/login") {
    csrf = null;
    showLogin("Your session ended: log in again.");
    throw new ApiFailure(401, parsed);
  }
  if (!response.ok) throw new ApiFailure(response.status, parsed);
  return parsed;
}

const enc = encodeURIComponent;

// Runs an action and follows it: `progress` events go to `onProgress`,
// the `answer` event is the result (Server-Sent Events over a POST).
async function runAction(instance, action, args, onProgress) {
  const response = await fetch(`/api/v1/instances/${enc(instance)}/actions/${enc(action)}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
    body: JSON.stringify({ args }),
    credentials: "same-origin",
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      csrf = null;
      showLogin("Your session ended: log in again.");
    }
    throw new ApiFailure(response.status, body);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
      }
      if (event === "progress") onProgress(JSON.parse(data));
      else if (event === "answer") return JSON.parse(data);
      else if (event === "error") throw new Error(JSON.parse(data).error);
    }
  }
  throw new Error("the action ended without an answer");
}

function notice(text, kind = "info") {
  const box = document.getElementById("notice");
  box.className = `notice ${kind}`;
  box.textContent = text;
  box.hidden = !text;
}

function table(columns, rows, caption) {
  return el("div", { class: "table-wrap" }, el("table", {},
    caption ? el("caption", {}, caption) : null,
    el("thead", {}, el("tr", {}, columns.map(([title]) => el("th", { scope: "col" }, title)))),
    el("tbody", {}, rows.length === 0
      ? el("tr", {}, el("td", { colspan: columns.length, class: "empty" }, "none"))
      : rows.map((r) => el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(r))))))));
}

// Any JSON as a readable tree: objects as definition lists, lists of
// objects as tables. `context` names the instance it came from: WAV files
// an action lists under `files` get a player (the host decodes them for the
// browser), text that is a PEM certificate a download, and so does a key
// file (an object whose `format` ends in `-key`).
function render(value, context = {}) {
  if (value === null || value === undefined) return el("span", { class: "muted" }, "—");
  if (Array.isArray(value)) {
    if (value.length > 0 && value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const keys = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return table(keys.map((k) => [k, (r) => render(r[k], { ...context, key: k })]), value);
    }
    return el("ul", {}, value.map((v) => el("li", {}, render(v, context))));
  }
  if (typeof value === "object") {
    const tree = el("dl", { class: "tree" }, Object.entries(value).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, render(v, { ...context, key: k }))]));
    if (typeof value.format === "string" && value.format.endsWith("-key")) {
      // A key file an action made (api-connector's `key-file`): offered as
      // the file a client imports.
      const blob = URL.createObjectURL(new Blob([`${JSON.stringify(value, null, 2)}\n`], { type: "application/json" }));
      return el("div", {}, tree, el("a", { class: "button secondary", href: blob, download: `${context.instance || "callhost"}.key` }, "Download the key file"));
    }
    return tree;
  }
  const text = String(value);
  if (context.key === "files" && context.instance && /\.wav$/i.test(text)) {
    const file = text.split("/").pop();
    const source = `/api/v1/instances/${enc(context.instance)}/audio?file=${enc(text)}`;
    return el("span", { class: "recording" }, el("span", {}, file), el("audio", { controls: true, preload: "none", src: source, "aria-label": `Play ${file}` }));
  }
  if (text.startsWith("-----BEGIN ")) {
    const kind = text.includes("CERTIFICATE") ? "certificate" : "file";
    const blob = URL.createObjectURL(new Blob([text.endsWith("\n") ? text : `${text}\n`], { type: "application/x-pem-file" }));
    return el("div", {}, el("pre", { class: "code" }, text), el("a", { class: "button secondary", href: blob, download: `${context.instance || "callhost"}-${kind}.pem` }, `Download the ${kind}`));
  }
  return el("span", {}, text);
}

function heading(text, ...extra) {
  document.title = `${text} — callhost`;
  return el("div", { class: "heading" }, el("h1", { tabindex: "-1" }, text), ...extra);
}

function busy(button, work) {
  return async (event) => {
    event?.preventDefault?.();
    button.disabled = true;
    try {
      await work();
    } catch (error) {
      if (!(error instanceof ApiFailure && error.status === 401)) notice(error.message, "error");
    } finally {
      button.disabled = false;
    }
  };
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  nav.hidden = true;
  who.replaceChildren();
  const name = el("input", { id: "login-name", name: "username", autocomplete: "username", required: true });
  const password = el("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const error = el("p", { class: "field-error", role: "alert", hidden: !message }, message || "");
  const submit = el("button", { type: "submit" }, "Log in");
  const form = el("form", { class: "login", "aria-labelledby": "login-title" },
    el("h1", { id: "login-title" }, "callhost administration"),
    el("div", { class: "field" }, el("label", { for: "login-name" }, "Name"), name),
    el("div", { class: "field" }, el("label", { for: "login-password" }, "Password"), password),
    error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    try {
      const session = await api("POST", "/api/v1/login", { name: name.value, password: password.value });
      csrf = session.csrf;
      startApp(session.admin);
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      password.value = "";
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  view.replaceChildren(form);
  notice("");
  name.focus();
}

function startApp(admin) {
  nav.hidden = false;
  const logout = el("button", { type: "button", class: "secondary", onclick: async () => {
    try {
      await api("POST", "/api/v1/logout");
    } catch { /* logged out either way */ }
    csrf = null;
    history.replaceState(null, "", "#/");
    showLogin("You are logged out.");
  } }, "Log out");
  who.replaceChildren(el("span", {}, `Logged in as ${admin}`), logout);
  route();
}

// ---------------------------------------------------------------- views

const routes = [
  [/^#?\/?$/, dashboard],
  [/^#\/dashboard$/, dashboard],
  [/^#\/modules$/, modules],
  [/^#\/instances$/, instances],
  [/^#\/instances\/([^/]+)$/, instance],
  [/^#\/directory$/, directory],
  [/^#\/calls(?:\?.*)?$/, calls],
  [/^#\/audit$/, audit],
  [/^#\/access$/, access],
];

async function route() {
  if (!csrf) return;
  for (const close of closers) close();
  closers = [];
  notice("");
  for (const link of nav.querySelectorAll("a")) {
    const current = location.hash.startsWith(link.getAttribute("href")) || (location.hash === "" && link.getAttribute("href") === "#/dashboard");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, show] of routes) {
    const match = location.hash.match(pattern);
    if (match) {
      try {
        await show(...match.slice(1).map(decodeURIComponent));
        view.querySelector("h1")?.focus();
      } catch (error) {
        if (!(error instanceof ApiFailure && error.status === 401)) {
          view.replaceChildren(heading("Error"), el("p", { class: "field-error" }, error.message));
        }
      }
      return;
    }
  }
  view.replaceChildren(heading("Not found"));
}

async function dashboard() {
  const status = await api("GET", "/api/v1/status");
  const live = status.live;
  const faulted = (status.instances || []).filter((i) => i.status === "faulted");
  const decisions = (list) => (list || []).filter((d) => d.decision !== "none").map((d) => `${d.instance}: ${d.decision}`).join("; ") || "—";
  const parts = [heading("Dashboard", el("button", { type: "button", class: "secondary", onclick: () => route() }, "Refresh"))];
  if (!live) {
    parts.push(el("p", {}, "This process does not serve SIP (callhost api serve): no registrations or calls to show."));
  } else {
    parts.push(
      el("section", { "aria-labelledby": "h-reg" }, el("h2", { id: "h-reg" }, `Registrations (${live.registrations.length})`),
        table([["User", (r) => r.user], ["Contact", (r) => r.contact], ["From", (r) => r.source], ["Transport", (r) => r.transport], ["Expires in (s)", (r) => r.expires_in], ["Calls", (r) => r.calls]], live.registrations)),
      el("section", { "aria-labelledby": "h-calls" }, el("h2", { id: "h-calls" }, `Calls in progress (${live.calls.length})`),
        table([["Since", (c) => c.since], ["From", (c) => c.caller_name ? `${c.caller_name} (${c.from})` : c.from], ["To", (c) => c.to], ["Ringing", (c) => c.ringing.map((r) => `${r.user || r.number}: “${r.display}”`).join(", ")], ["Modules decided", (c) => decisions(c.decisions)]], live.calls)),
      el("section", { "aria-labelledby": "h-recent" }, el("h2", { id: "h-recent" }, "Recent calls"),
        table([["Ended", (c) => c.ended], ["From", (c) => c.caller_name ? `${c.caller_name} (${c.from})` : c.from], ["To", (c) => c.to], ["Outcome", (c) => c.answered_by ? `answered by ${c.answered_by}` : c.reason || c.outcome], ["Talked (s)", (c) => c.talked_seconds ?? "—"], ["Modules decided", (c) => decisions(c.decisions)]], live.recent_calls)));
  }
  parts.push(el("section", { "aria-labelledby": "h-faults" }, el("h2", { id: "h-faults" }, `Faulted instances (${faulted.length})`),
    table([["Instance", (i) => el("a", { href: `#/instances/${enc(i.name)}` }, i.name)], ["Module", (i) => i.module], ["Fault", (i) => i.fault]], faulted)));
  view.replaceChildren(...parts);
}

async function modules() {
  const list = await api("GET", "/api/v1/modules");
  const file = el("input", { type: "file", id: "package-file", accept: ".cmod", required: true });
  const unsigned = el("input", { type: "checkbox", id: "allow-unsigned" });
  const upload = el("button", { type: "submit" }, "Install");
  const form = el("form", { class: "inline-form", "aria-labelledby": "h-install" }, el("h2", { id: "h-install" }, "Install or upgrade a module"),
    el("div", { class: "field" }, el("label", { for: "package-file" }, "Package (.cmod)"), file),
    el("div", { class: "field checkbox" }, unsigned, el("label", { for: "allow-unsigned" }, "Allow an unsigned package")),
    el("p", { class: "help" }, "An installed module of the same id is replaced; its instances keep their configuration."),
    upload);
  form.addEventListener("submit", busy(upload, async () => {
    if (!file.files[0]) throw new Error("choose a package file first");
    const answer = await api("POST", `/api/v1/modules?allow_unsigned=${unsigned.checked}`, file.files[0]);
    await modules();
    notice(answer.message, "ok");
  }));
  const remove = (m) => {
    const button = el("button", { type: "button", class: "danger" }, `Remove ${m.id}`);
    button.addEventListener("click", busy(button, async () => {
      if (!confirm(`Remove module ${m.id}${m.instances ? ` and its ${m.instances} instance(s)` : ""}?`)) return;
      const answer = await api("DELETE", `/api/v1/modules/${enc(m.id)}?with_instances=${m.instances > 0}`);
      await modules();
      notice(answer.message, "ok");
    }));
    return button;
  };
  view.replaceChildren(heading("Module library"),
    table([["Module", (m) => `${m.name} (${m.id})`], ["Version", (m) => m.version], ["ABI", (m) => m.abi_version], ["Signature", (m) => m.signed_by ? `signed by ${m.signed_by}` : el("strong", { class: "warn" }, "UNSIGNED")], ["Instances", (m) => m.instances], ["Installed", (m) => m.installed_at], ["", remove]], list, "Installed modules"),
    form);
}

async function instances() {
  const [list, mods] = await Promise.all([api("GET", "/api/v1/instances"), api("GET", "/api/v1/modules")]);
  const module = el("select", { id: "new-module", required: true }, mods.map((m) => el("option", { value: m.id }, `${m.name} (${m.id})`)));
  const name = el("input", { id: "new-name", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}" });
  const description = el("input", { id: "new-description" });
  const create = el("button", { type: "submit" }, "Create");
  const form = el("form", { class: "inline-form", "aria-labelledby": "h-create" }, el("h2", { id: "h-create" }, "New instance"),
    el("div", { class: "field" }, el("label", { for: "new-module" }, "Module"), module),
    el("div", { class: "field" }, el("label", { for: "new-name" }, "Name"), name),
    el("div", { class: "field" }, el("label", { for: "new-description" }, "Description"), description), create);
  form.addEventListener("submit", busy(create, async () => {
    await api("POST", "/api/v1/instances", { module: module.value, name: name.value, description: description.value || null, inactive: true });
    location.hash = `#/instances/${enc(name.value)}`;
  }));
  const importFile = el("input", { type: "file", id: "import-file", accept: ".toml" });
  const replace = el("input", { type: "checkbox", id: "import-replace" });
  const importButton = el("button", { type: "submit" }, "Import");
  const importForm = el("form", { class: "inline-form", "aria-labelledby": "h-import" }, el("h2", { id: "h-import" }, "Import an exported instance"),
    el("div", { class: "field" }, el("label", { for: "import-file" }, "Exported file (.toml)"), importFile),
    el("div", { class: "field checkbox" }, replace, el("label", { for: "import-replace" }, "Replace an instance of the same name")), importButton);
  importForm.addEventListener("submit", busy(importButton, async () => {
    if (!importFile.files[0]) throw new Error("choose an exported file first");
    const answer = await api("POST", `/api/v1/instances/import?replace=${replace.checked}`, await importFile.files[0].text(), "text/plain");
    await instances();
    notice(answer.message, "ok");
  }));
  const move = (i, by) => {
    const target = i.position + by;
    const button = el("button", { type: "button", class: "secondary", disabled: target < 1 || target > list.length, "aria-label": `Move ${i.name} ${by < 0 ? "up" : "down"}` }, by < 0 ? "↑" : "↓");
    button.addEventListener("click", busy(button, async () => {
      await api("PUT", `/api/v1/instances/${enc(i.name)}/position`, { position: target });
      await instances();
    }));
    return button;
  };
  view.replaceChildren(heading("Instances"),
    el("p", { class: "help" }, "Instances run in this order for every call; each sees what the ones before it decided."),
    table([["#", (i) => i.position], ["Name", (i) => el("a", { href: `#/instances/${enc(i.name)}` }, i.name)], ["Module", (i) => `${i.module} ${i.module_version || ""}`], ["Status", (i) => el("span", { class: `status ${i.status}` }, i.status)], ["Log level", (i) => i.log_level], ["Description", (i) => i.description], ["Fault", (i) => i.fault || ""], ["Order", (i) => el("span", { class: "buttons" }, move(i, -1), move(i, 1))]], list, "Configured instances"),
    form, importForm);
}

async function instance(name) {
  const data = await api("GET", `/api/v1/instances/${enc(name)}`);
  const row = data.instance;
  const path = `/api/v1/instances/${enc(name)}`;
  const refresh = async (message) => {
    await instance(name);
    if (message) notice(message, "ok");
  };

  // Status and switches.
  const toggle = el("button", { type: "button" }, row.active ? "Deactivate" : "Activate");
  toggle.addEventListener("click", busy(toggle, async () => refresh((await api("POST", `${path}/${row.active ? "deactivate" : "activate"}`)).message)));
  const remove = el("button", { type: "button", class: "danger" }, "Delete instance");
  remove.addEventListener("click", busy(remove, async () => {
    if (!confirm(`Delete instance ${name}? Its files are kept aside.`)) return;
    await api("DELETE", path);
    location.hash = "#/instances";
  }));
  const summary = el("section", { "aria-labelledby": "h-summary" }, el("h2", { id: "h-summary", class: "visually-hidden" }, "Status"),
    el("p", {}, "Module ", el("strong", {}, row.module_id), " · status ", el("span", { class: `status ${data.status}` }, data.status), row.fault ? ` · fault: ${row.fault}` : ""),
    el("div", { class: "buttons" }, toggle, el("a", { class: "button secondary", href: `${path}/export`, download: `${name}.toml` }, "Export"), remove));

  // The configuration form, or the raw editor.
  const formHolder = el("div", { class: "config-form" });
  const formError = el("p", { class: "field-error", role: "alert", hidden: true });
  const hasForm = data.schema && data.schema.properties && Object.keys(data.schema.properties).length > 0;
  const form = hasForm ? buildForm(data.schema, data.config || {}) : null;
  if (form) formHolder.append(form.node);
  const save = el("button", { type: "submit" }, "Save configuration");
  const configForm = el("form", { "aria-labelledby": "h-config", novalidate: true }, el("h2", { id: "h-config" }, "Configuration"),
    hasForm ? formHolder : el("p", {}, "This module describes no form: use the TOML editor below."), formError, hasForm ? save : null);
  const submitConfig = async (body) => {
    clearErrors(configForm);
    clearErrors(rawForm);
    formError.hidden = true;
    try {
      await api("PUT", `${path}/config`, body);
      await refresh("Configuration saved.");
    } catch (failure) {
      if (failure instanceof ApiFailure && failure.status === 401) return;
      const shown = failure.field && body.values && showFieldError(configForm, failure.field, failure.message);
      const where = failure.field ? `${failure.field}: ` : "";
      if (!shown) {
        (body.toml !== undefined ? rawError : formError).textContent = `${where}${failure.message}`;
        (body.toml !== undefined ? rawError : formError).hidden = false;
      }
      notice(`Not saved: ${where}${failure.message}`, "error");
    }
  };
  configForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    let values;
    try {
      values = form.get();
    } catch (error) {
      if (error instanceof FieldError) showFieldError(configForm, error.field, error.message);
      return;
    }
    save.disabled = true;
    await submitConfig({ values });
    save.disabled = false;
  });
  const raw = el("textarea", { id: "raw-config", rows: 14, class: "code", spellcheck: "false" });
  raw.value = data.config_toml || "";
  const rawError = el("p", { class: "field-error", role: "alert", hidden: true });
  const rawSave = el("button", { type: "submit" }, "Save TOML");
  const rawForm = el("form", {}, el("div", { class: "field" }, el("label", { for: "raw-config" }, "Configuration as TOML (secrets shown as ******** are kept)"), raw), rawError, rawSave);
  rawForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    rawSave.disabled = true;
    await submitConfig({ toml: raw.value });
    rawSave.disabled = false;
  });
  const rawSection = el("details", { class: "raw", open: !hasForm }, el("summary", {}, "Edit as TOML"), rawForm);

  // Description and level.
  const description = el("input", { id: "description", value: row.description });
  const level = el("select", { id: "level" }, ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].map((l) => el("option", { selected: l === row.log_level }, l)));
  const settingsSave = el("button", { type: "submit" }, "Save");
  const settings = el("form", { class: "inline-form", "aria-labelledby": "h-settings" }, el("h2", { id: "h-settings" }, "Description and log level"),
    el("div", { class: "field" }, el("label", { for: "description" }, "Description"), description),
    el("div", { class: "field" }, el("label", { for: "level" }, "Log level"), level), settingsSave);
  settings.addEventListener("submit", busy(settingsSave, async () => {
    await api("PUT", `${path}/description`, { description: description.value });
    await api("PUT", `${path}/level`, { level: level.value });
    await refresh("Saved.");
  }));

  view.replaceChildren(heading(`Instance ${name}`), summary, configForm, rawSection, settings,
    actionsSection(name, data.actions || []), logSection(name), assetsSection(name));
}

function actionsSection(name, actions) {
  const output = el("div", { class: "action-output", "aria-live": "polite" });
  const section = el("section", { "aria-labelledby": "h-actions" }, el("h2", { id: "h-actions" }, "Actions"));
  if (actions.length === 0) {
    section.append(el("p", {}, "This module has no actions."));
    return section;
  }
  for (const action of actions) {
    const id = `action-${action.name}`;
    const args = el("input", { id, placeholder: action.usage || "no arguments" });
    const run = el("button", { type: "submit" }, `Run ${action.name}`);
    const form = el("form", { class: "action" }, el("div", { class: "field" }, el("label", { for: id }, `${action.name}: ${action.help}`), args), run);
    form.addEventListener("submit", busy(run, async () => {
      const list = args.value.trim() === "" ? [] : args.value.match(/"[^"]*"|\S+/g).map((a) => a.replace(/^"|"$/g, ""));
      const bar = el("progress", { id: "action-progress", "aria-label": `${action.name} progress` });
      const counted = el("span", { class: "muted" }, "");
      output.replaceChildren(el("p", { class: "muted" }, `${action.name} running…`), el("div", { class: "progress" }, bar, counted));
      const started = performance.now();
      try {
        const answer = await runAction(name, action.name, list, ({ done, total }) => {
          bar.max = Math.max(total, 1);
          bar.value = done;
          counted.textContent = `${done} of ${total}`;
        });
        output.replaceChildren(el("h3", {}, `${action.name} ${list.join(" ")} (${Math.round(performance.now() - started)} ms)`), render(answer, { instance: name }));
      } catch (failure) {
        output.replaceChildren(el("p", { class: "field-error", role: "alert" }, `${action.name}: ${failure.message}`));
      }
    }));
    section.append(form);
  }
  if (actions.some((a) => a.name === "live")) {
    const events = el("ol", { class: "live-events", "aria-live": "polite", id: "live-events" });
    const start = el("button", { type: "button" }, "Watch live");
    start.addEventListener("click", () => {
      start.disabled = true;
      const source = new EventSource(`/api/v1/instances/${enc(name)}/live`);
      closers.push(() => source.close());
      source.addEventListener("lookup", (event) => {
        const lookup = JSON.parse(event.data);
        events.prepend(el("li", {}, render(lookup, { instance: name })));
      });
      source.addEventListener("error", (event) => {
        if (event.data) events.prepend(el("li", { class: "field-error" }, JSON.parse(event.data).error));
      });
    });
    section.append(el("div", { class: "live" }, el("h3", {}, "Live view"), start, events));
  }
  section.append(output);
  return section;
}

function logSection(name) {
  const path = `/api/v1/instances/${enc(name)}/log`;
  const level = el("select", { id: "log-level" }, ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].map((l) => el("option", { value: l, selected: l === "INFO" }, l)));
  const lines = el("pre", { class: "log", tabindex: "0", "aria-label": "Log lines" });
  const load = async () => {
    const answer = await api("GET", `${path}?level=${level.value}`);
    lines.textContent = answer.lines.slice(-500).join("\n");
    lines.scrollTop = lines.scrollHeight;
  };
  level.addEventListener("change", load);
  const tail = el("input", { type: "checkbox", id: "log-tail" });
  let source = null;
  tail.addEventListener("change", () => {
    if (source) source.close();
    source = null;
    if (!tail.checked) return;
    source = new EventSource(`${path}/tail?level=${level.value}`);
    closers.push(() => source && source.close());
    source.addEventListener("line", (event) => {
      lines.textContent += `${lines.textContent ? "\n" : ""}${event.data}`;
      lines.scrollTop = lines.scrollHeight;
    });
  });
  const download = el("a", { class: "button secondary", href: `${path}?download=true`, download: `${name}.log` }, "Download log");
  load().catch((error) => notice(error.message, "error"));
  return el("section", { "aria-labelledby": "h-log" }, el("h2", { id: "h-log" }, "Log"),
    el("div", { class: "inline-form" }, el("div", { class: "field" }, el("label", { for: "log-level" }, "Down to level"), level),
      el("div", { class: "field checkbox" }, tail, el("label", { for: "log-tail" }, "Follow new lines")), download), lines);
}

function assetsSection(name) {
  const path = `/api/v1/instances/${enc(name)}/assets`;
  const list = el("ul", {});
  const load = async () => {
    const answer = await api("GET", path);
    list.replaceChildren(...(answer.assets.length ? answer.assets.map((asset) => {
      const file = asset.replace(/^instance\//, "");
      const remove = el("button", { type: "button", class: "secondary" }, `Remove ${file}`);
      remove.addEventListener("click", busy(remove, async () => { await api("DELETE", `${path}/${enc(file)}`); await load(); }));
      return el("li", {}, asset, " ", remove);
    }) : [el("li", { class: "muted" }, "none")]));
  };
  const file = el("input", { type: "file", id: "asset-file", accept: "audio/*,.wav,.ogg,.flac,.mp3" });
  const add = el("button", { type: "submit" }, "Add sound file");
  const form = el("form", { class: "inline-form" }, el("div", { class: "field" }, el("label", { for: "asset-file" }, "Sound file (a prompt such as a recording notice)"), file), add);
  form.addEventListener("submit", busy(add, async () => {
    if (!file.files[0]) throw new Error("choose a sound file first");
    const answer = await api("PUT", `${path}/${enc(file.files[0].name)}`, file.files[0]);
    await load();
    notice(answer.message, "ok");
  }));
  load().catch((error) => notice(error.message, "error"));
  return el("section", { "aria-labelledby": "h-assets" }, el("h2", { id: "h-assets" }, "Assets"), list, form);
}

async function directory() {
  const data = await api("GET", "/api/v1/directory");
  const dir = data.directory;
  if (!dir) {
    view.replaceChildren(heading("Directory"), el("p", {}, "No directory is loaded yet: load one with callhost directory load FILE."));
    return;
  }
  const form = buildForm(data.schema, dir);
  const save = el("button", { type: "submit" }, "Save directory");
  const error = el("p", { class: "field-error", role: "alert", hidden: true });
  const editor = el("form", { novalidate: true, "aria-labelledby": "h-edit" }, el("h2", { id: "h-edit" }, "Edit"),
    el("p", { class: "help" }, "Checked like callhost directory load. Passwords are never shown; leave one empty to keep it. Running calls follow the change within a second."),
    form.node, error, save);
  editor.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(editor);
    error.hidden = true;
    save.disabled = true;
    try {
      const answer = await api("PUT", "/api/v1/directory", form.get());
      await directory();
      notice(answer.message, "ok");
    } catch (failure) {
      if (!(failure instanceof ApiFailure && failure.status === 401)) {
        error.textContent = failure.message;
        error.hidden = false;
        notice(`Not saved: ${failure.message}`, "error");
      }
    } finally {
      save.disabled = false;
    }
  });
  const state = (id) => dir.state?.[id] || {};
  view.replaceChildren(heading("Directory"),
    table([["User", (u) => `${u.name} (${u.id})`], ["Numbers", (u) => u.numbers.join(", ")], ["Mobile", (u) => u.mobile || ""], ["DND", (u) => (state(u.id).dnd ? "on" : "off")], ["Call waiting", (u) => (state(u.id).call_waiting === false ? "off" : "on")], ["Forwards", (u) => ["always", "busy", "no_answer"].filter((k) => state(u.id)[`forward_${k}`]).map((k) => `${k} → ${state(u.id)[`forward_${k}`]}`).join(", ")], ["Call list", (u) => el("a", { href: `#/calls?user=${enc(u.id)}` }, "calls")]], dir.users, "Users"),
    table([["Group", (g) => `${g.name} (${g.id})`], ["Numbers", (g) => g.numbers.join(", ")], ["Logged in", (g) => g.members.filter((m) => !(g.inactive || []).includes(m)).join(", ")], ["Logged out", (g) => (g.inactive || []).join(", ")]], dir.groups, "Groups"),
    table([["Name", (c) => [c.first_name, c.last_name].filter(Boolean).join(" ") || c.company || ""], ["Company", (c) => c.company || ""], ["Numbers", (c) => c.numbers.join(", ")]], dir.contacts, "Address book"),
    editor);
}

async function calls() {
  const dir = (await api("GET", "/api/v1/directory")).directory;
  const users = dir ? dir.users : [];
  const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("user") || users[0]?.id;
  const select = el("select", { id: "calls-user" }, users.map((u) => el("option", { value: u.id, selected: u.id === wanted }, `${u.name} (${u.id})`)));
  const holder = el("div", {});
  const load = async () => {
    if (!select.value) return;
    const list = await api("GET", `/api/v1/calls/${enc(select.value)}`);
    holder.replaceChildren(table([["Time", (e) => e.time], ["Direction", (e) => e.direction], ["Number", (e) => e.number], ["Name", (e) => e.name || ""]], list, `Call list of ${select.value}`));
  };
  select.addEventListener("change", load);
  view.replaceChildren(heading("Call lists"), el("div", { class: "field" }, el("label", { for: "calls-user" }, "User"), select), holder);
  await load();
}

async function audit() {
  const answer = await api("GET", "/api/v1/audit?limit=200");
  view.replaceChildren(heading("Audit log"),
    table([["When", (e) => e.at], ["Who", (e) => e.actor], ["From", (e) => e.source], ["What", (e) => e.action], ["On", (e) => e.target], ["Outcome", (e) => e.outcome]], answer.entries, "Every change, newest first"));
}

async function access() {
  const [admins, tokens] = await Promise.all([api("GET", "/api/v1/admins"), api("GET", "/api/v1/tokens")]);
  const removeButton = (label, path) => {
    const button = el("button", { type: "button", class: "danger" }, label);
    button.addEventListener("click", busy(button, async () => {
      if (!confirm(`${label}?`)) return;
      const answer = await api("DELETE", path);
      await access();
      notice(answer.message, "ok");
    }));
    return button;
  };
  const adminName = el("input", { id: "admin-name", required: true, autocomplete: "off" });
  const adminPassword = el("input", { id: "admin-password", type: "password", required: true, autocomplete: "new-password", minlength: 10 });
  const addAdmin = el("button", { type: "submit" }, "Add administrator");
  const adminForm = el("form", { class: "inline-form" }, el("div", { class: "field" }, el("label", { for: "admin-name" }, "Name"), adminName),
    el("div", { class: "field" }, el("label", { for: "admin-password" }, "Password (at least 10 characters)"), adminPassword), addAdmin);
  adminForm.addEventListener("submit", busy(addAdmin, async () => {
    const answer = await api("POST", "/api/v1/admins", { name: adminName.value, password: adminPassword.value });
    await access();
    notice(answer.message, "ok");
  }));
  const tokenName = el("input", { id: "token-name", required: true, autocomplete: "off" });
  const addToken = el("button", { type: "submit" }, "Create token");
  const tokenForm = el("form", { class: "inline-form" }, el("div", { class: "field" }, el("label", { for: "token-name" }, "Token name"), tokenName), addToken);
  tokenForm.addEventListener("submit", busy(addToken, async () => {
    const answer = await api("POST", "/api/v1/tokens", { name: tokenName.value });
    await access();
    notice(`Token ${answer.name} (shown only now): ${answer.token}`, "ok");
  }));
  view.replaceChildren(heading("Access"),
    el("section", { "aria-labelledby": "h-admins" }, el("h2", { id: "h-admins" }, "Administrators"),
      table([["Name", (a) => a.name], ["Created", (a) => a.created_at], ["", (a) => removeButton(`Remove ${a.name}`, `/api/v1/admins/${enc(a.name)}`)]], admins), adminForm),
    el("section", { "aria-labelledby": "h-tokens" }, el("h2", { id: "h-tokens" }, "API tokens for scripts"),
      table([["Name", (t) => t.name], ["Created", (t) => t.created_at], ["", (t) => removeButton(`Revoke ${t.name}`, `/api/v1/tokens/${enc(t.name)}`)]], tokens), tokenForm));
}

// ---------------------------------------------------------------- start

window.addEventListener("hashchange", route);
(async () => {
  try {
    const response = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (response.ok) {
      const session = await response.json();
      if (session.csrf) {
        csrf = session.csrf;
        startApp(session.admin);
        return;
      }
    }
  } catch { /* not logged in */ }
  showLogin();
})();
