// Backvault console: actions go to the JSON API with the session cookie and the CSRF header.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  function valueOf(input) {
    const kind = input.dataset.kind;
    if (kind === "bool") return input.type === "checkbox" ? input.checked : input.value === "true";
    const raw = input.value.trim();
    if (raw === "") return undefined;
    if (kind === "int") return Number.parseInt(raw, 10);
    if (kind === "list") return raw.split(",").map((s) => s.trim()).filter(Boolean);
    return raw;
  }

  function collect(form) {
    const body = {};
    const query = new URLSearchParams();
    for (const input of form.querySelectorAll("input[name], select[name], textarea[name]")) {
      if (input.disabled) continue;
      const value = valueOf(input);
      if (value === undefined) continue;
      if (input.dataset.in === "query") query.set(input.name, String(value));
      else body[input.name] = value;
    }
    return { body, query };
  }

  function show(out, text, kind) {
    if (!out) return;
    out.hidden = false;
    out.className = "result " + kind;
    out.setAttribute("role", kind === "error" ? "alert" : "status");
    out.textContent = text;
  }

  function errorText(status, data) {
    const err = data && data.error;
    if (!err) return "Request failed (HTTP " + status + ")";
    let text = err.message;
    if (Array.isArray(err.details)) {
      text += ": " + err.details.map((d) => (d.field || d.loc || "") + " " + (d.message || d.msg || "")).join("; ");
    }
    return text;
  }

  async function send(form) {
    const out = document.querySelector(form.dataset.out || "#none");
    const must = form.dataset.mustMatch && document.querySelector(form.dataset.mustMatch);
    const { body, query } = collect(form);
    if (must && body.confirm !== must.textContent.trim()) {
      show(out, "Type the target database name (" + must.textContent.trim() + ") to confirm.", "error");
      return;
    }
    const method = (form.dataset.method || "POST").toUpperCase();
    const url = form.dataset.api + (query.toString() ? "?" + query : "");
    const hasBody = method !== "GET" && method !== "DELETE" && form.dataset.nobody === undefined;
    const button = form.querySelector("button[type=submit]");
    if (button) button.disabled = true;
    try {
      const response = await fetch(url, {
        method, credentials: "same-origin",
        headers: Object.assign({ "X-CSRF-Token": csrf(), "Accept": "application/json" },
          hasBody ? { "Content-Type": "application/json" } : {}),
        body: hasBody ? JSON.stringify(body) : undefined,
      });
      let data = null;
      try { data = await response.json(); } catch (e) { data = null; }
      if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      if (!response.ok) { show(out, errorText(response.status, data), "error"); return; }
      done(form, out, data);
    } catch (e) {
      show(out, "Network error: " + e.message, "error");
    } finally {
      if (button) button.disabled = false;
    }
  }

  function done(form, out, data) {
    const then = form.dataset.then || "reload";
    if (then === "reload") { location.reload(); return; }
    if (then === "job" && data && data.id) { location.href = "/jobs/" + data.id; return; }
    if (then.startsWith("go:")) { location.href = then.slice(3).replace("{id}", data && data.id); return; }
    if (then === "plan") { showPlan(out, data); return; }
    if (then === "test") {
      show(out, data.reachable ? "Reachable, " + (data.serverVersion || "version unknown") +
        (data.latencyMs != null ? ", " + Math.round(data.latencyMs) + " ms" : "")
        : "Unreachable: " + (data.error || "no answer"), data.reachable ? "ok" : "error");
      return;
    }
    show(out, "Done.", "ok");
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function showPlan(out, plan) {
    out.hidden = false;
    out.className = "result plan";
    out.replaceChildren();
    out.append(el("h3", "Restore plan (nothing has run)"));
    const facts = el("dl", undefined, "facts");
    const rows = [["Target database", plan.targetDatabase], ["Target exists", plan.targetExists ? "yes" : "no"],
      ["Drop existing", plan.dropExisting ? "yes" : "no"], ["Safety backup", plan.safetyBackup ? "yes" : "no"],
      ["Artifact readable", plan.artifactOk ? "yes" : "no"], ["Verification", plan.verification && plan.verification.state],
      ["Versions", (plan.backupServerVersion || "?") + " → " + (plan.targetServerVersion || "?")]];
    for (const [k, v] of rows) {
      const div = el("div"); div.append(el("dt", k)); const dd = el("dd", String(v));
      if (k === "Target database") { dd.id = "plan-target"; dd.dataset.testid = "plan-target"; }
      div.append(dd); facts.append(div);
    }
    out.append(facts);
    const list = el("ul", undefined, "plan-items");
    for (const item of plan.items || []) {
      list.append(el("li", item.action + ": " + item.name + (item.count != null ? " (" + item.count + ")" : "")));
    }
    out.append(list);
    for (const w of (plan.warnings || []).concat(plan.conflicts || []).map(String)) out.append(el("p", w, "warn"));
    const confirmForm = document.getElementById("restore-confirm");
    if (confirmForm) {
      confirmForm.hidden = false;
      confirmForm.querySelector("[name=targetDatabase]").value = plan.targetDatabase;
      confirmForm.querySelector("[name=dropExisting]").value = String(plan.dropExisting);
      confirmForm.querySelector("[name=safetyBackup]").value = String(plan.safetyBackup);
      confirmForm.querySelector("[name=confirm]").focus();
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-api]");
    if (!form) return;
    event.preventDefault();
    send(form);
  });

  // Cron checked as you type, against the API's own check, with the next fire times.
  let timer = null;
  async function preview(input) {
    const out = document.getElementById(input.dataset.previewOut);
    const zone = input.form && input.form.querySelector("[name=timezone]");
    const params = new URLSearchParams({ cron: input.value, timezone: (zone && zone.value) || "UTC" });
    const response = await fetch(input.dataset.preview + "?" + params, { credentials: "same-origin" });
    const data = await response.json().catch(() => null);
    out.replaceChildren();
    if (response.ok) {
      input.setCustomValidity("");
      input.removeAttribute("aria-invalid");
      out.className = "preview ok";
      out.append(el("span", "Next runs:"));
      const list = el("ol");
      for (const at of data.nextRuns) list.append(el("li", at.replace("T", " ").slice(0, 16) + " " + data.timezone));
      out.append(list);
    } else {
      const message = errorText(response.status, data);
      input.setCustomValidity(message);
      input.setAttribute("aria-invalid", "true");
      out.className = "preview error";
      out.append(el("span", message));
    }
  }
  document.addEventListener("input", (event) => {
    const input = event.target.closest("[data-preview]");
    const zone = event.target.closest("[name=timezone]");
    const target = input || (zone && zone.form && zone.form.querySelector("[data-preview]"));
    if (!target) return;
    clearTimeout(timer);
    timer = setTimeout(() => preview(target), 250);
  });
  document.addEventListener("DOMContentLoaded", () => {
    for (const input of document.querySelectorAll("[data-preview]")) if (input.value) preview(input);
  });
})();
