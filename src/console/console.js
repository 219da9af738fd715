// jitgate console: the live parts of the server-rendered pages. Every action goes to the API
// with the session's CSRF token; nothing is fetched from anywhere but this gateway.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { ok: r.ok, status: r.status, data };
}

function showError(form, res) {
  const box = form.querySelector(".error");
  const msg = res.data?.message ?? `the gateway answered ${res.status}`;
  if (!box) { alert(msg); return; }
  box.textContent = msg;
  if (res.data?.error === "step_up_required") {
    const a = document.createElement("a");
    a.href = `/login?step_up=1&return_to=${encodeURIComponent(location.pathname + location.search)}`;
    a.textContent = " Sign in again";
    a.id = "step-up";
    box.append(a);
  }
}

// A form the API answers: fields become a JSON object (empty ones left out).
async function submitApi(form, submitter) {
  let path = form.dataset.api;
  const alt = submitter?.getAttribute("formaction");
  if (alt) path = alt;
  const body = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (typeof v === "string" && v.trim() !== "") body[k] = v;
  }
  const rename = submitter?.dataset.fieldRename;
  if (rename) {
    const [from, to] = rename.split(":");
    if (from in body) { body[to] = body[from]; delete body[from]; }
  }
  const then = form.dataset.then ?? "reload";
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  const res = await api("POST", path, body);
  for (const b of form.querySelectorAll("button")) b.disabled = false;
  if (!res.ok) { showError(form, res); return; }
  if (then === "reload") location.reload();
  else if (then.startsWith("goto:")) location.assign(then.slice(5).replace("{id}", encodeURIComponent(res.data?.id ?? "")));
  else if (then.startsWith("follow:")) location.assign(res.data?.[then.slice(7)]);
  else if (then === "token") {
    document.getElementById("token").textContent = res.data?.token ?? "";
    document.getElementById("token-box").hidden = false;
    form.hidden = true;
  }
}

document.addEventListener("submit", (e) => {
  const form = e.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.api) return;
  e.preventDefault();
  submitApi(form, e.submitter);
});

// Choosing a target reloads the form with that target's tasks.
for (const form of document.querySelectorAll("form[data-autosubmit]")) {
  form.addEventListener("change", () => form.requestSubmit());
}

// What the rules would say, as the request is typed.
for (const form of document.querySelectorAll("form[data-preview]")) {
  const out = form.querySelector("#preview");
  const task = form.querySelector("#task");
  const ttl = form.querySelector("#ttl");
  task?.addEventListener("change", () => {
    const max = task.selectedOptions[0]?.dataset.maxTtl;
    if (max && ttl) ttl.value = max;
  });
  let timer;
  const run = async () => {
    const body = {};
    for (const [k, v] of new FormData(form).entries()) body[k] = String(v);
    if (!body.ticket || !body.task || !body.reason?.trim()) { out.textContent = ""; return; }
    const res = await api("POST", form.dataset.preview, body);
    out.replaceChildren();
    const p = document.createElement("p");
    if (!res.ok) { p.className = "why"; p.textContent = res.data?.message ?? `preview failed (${res.status})`; out.append(p); return; }
    const v = res.data;
    p.id = "preview-verdict";
    p.className = v.allowed ? "ok" : "why";
    p.textContent = v.allowed ? "The rules allow this request." : `The rules would refuse it: ${v.refusal}`;
    const n = document.createElement("p");
    n.id = "preview-approvals";
    n.textContent = `${v.approvals_why}${v.high_impact ? " (high impact)" : ""}.`;
    out.append(p, n);
  };
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 300); });
  form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(run, 50); });
  run();
}

// A request page follows its request: when its state changes, the page is drawn again.
for (const el of document.querySelectorAll("[data-watch]")) {
  const es = new EventSource(el.dataset.watch);
  es.addEventListener("request", (ev) => {
    const r = JSON.parse(ev.data);
    if (r.state !== el.dataset.state) { es.close(); location.reload(); }
  });
}

// Copy buttons.
document.addEventListener("click", async (e) => {
  const b = e.target.closest?.("[data-copy]");
  if (!b) return;
  const text = document.querySelector(b.dataset.copy)?.textContent ?? "";
  try { await navigator.clipboard.writeText(text); b.textContent = "Copied"; }
  catch (err) {
    const range = document.createRange();
    range.selectNodeContents(document.querySelector(b.dataset.copy));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    b.textContent = "Selected: press Ctrl+C";
  }
});

// Recordings: one player per terminal recording; markers are its chapters.
function players() {
  if (!window.AsciinemaPlayer) return false;
  for (const el of document.querySelectorAll(".player[data-cast]")) {
    // The recording's own marker lines ("m") are its chapters; a `markers` option would
    // replace them.
    el.player = window.AsciinemaPlayer.create(el.dataset.cast, el, { fit: "width", preload: true });
  }
  // Chapters: seek the figure's player to marker i.
  for (const b of document.querySelectorAll("[data-seek-marker]")) {
    b.addEventListener("click", () => {
      const p = b.closest("figure")?.querySelector(".player")?.player;
      p?.seek({ marker: Number(b.dataset.seekMarker) });
    });
  }
  const watch = document.getElementById("watch");
  watch?.addEventListener("click", () => {
    const box = document.getElementById("live-player");
    box.hidden = false;
    watch.hidden = true;
    box.player = window.AsciinemaPlayer.create({ driver: "eventsource", url: watch.dataset.live }, box, { fit: "width", autoPlay: true });
  });
  return true;
}
if (!players()) window.addEventListener("load", players);
