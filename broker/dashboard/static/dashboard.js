// The dashboard's only script: live decision rows (server-sent events), deadline countdowns,
// and a quiet refresh of the approvals queue. Rows are built with textContent, never HTML.
"use strict";

const MAX_ROWS = 500;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function decisionRow(entry) {
  const tr = document.createElement("tr");
  tr.dataset.seq = String(entry.seq);
  tr.appendChild(cell(entry.time));
  tr.appendChild(cell(entry.principal));
  tr.appendChild(cell(entry.target));
  tr.appendChild(cell(entry.effect, "effect effect-" + entry.effect));
  const reasons = cell("");
  for (const reason of entry.reasons) {
    const span = document.createElement("span");
    span.className = "reason";
    span.title = reason.message;
    span.textContent = reason.id;
    reasons.appendChild(span);
    reasons.appendChild(document.createTextNode(" "));
  }
  tr.appendChild(reasons);
  tr.appendChild(cell(entry.outcome));
  tr.appendChild(cell(entry.latency_ms === null ? "" : entry.latency_ms + " ms"));
  return tr;
}

function streamDecisions(table) {
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const url = new URL(table.dataset.stream, window.location.href);
  url.searchParams.set("after", table.dataset.after);
  const source = new EventSource(url);
  source.addEventListener("open", () => { status.textContent = "live"; });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
  source.addEventListener("decision", (event) => {
    const entry = JSON.parse(event.data);
    if (body.querySelector('tr[data-seq="' + entry.seq + '"]')) return;
    body.insertBefore(decisionRow(entry), body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  });
}

function countDown() {
  const now = Date.now() / 1000;
  for (const element of document.querySelectorAll("[data-expires-at]")) {
    const left = Math.max(0, Math.floor(Number(element.dataset.expiresAt) - now));
    element.textContent = left > 0 ? left + " s" : "expired";
  }
}

function refreshQuietly(element) {
  // New pending approvals appear without a click, unless someone is typing a note. A GET of the
  // queue, never a reload: the page may be the answer to a form post, which must not be re-sent.
  const seconds = Number(element.dataset.refresh) || 15;
  const target = new URL(element.dataset.refreshUrl, window.location.href);
  window.setInterval(() => {
    const active = document.activeElement;
    const typing = active && active.tagName === "INPUT" && active.value !== "";
    if (!typing) window.location.assign(target);
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("decisions");
  if (table && table.dataset.stream) streamDecisions(table);
  if (document.querySelector("[data-expires-at]")) {
    countDown();
    window.setInterval(countDown, 1000);
  }
  const refreshing = document.querySelector("[data-refresh]");
  if (refreshing) refreshQuietly(refreshing);
});
