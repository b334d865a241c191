// The UI's only script: confirmations before acting, a live timeline over Server-Sent
// Events, and a runs list that refreshes while runs are under way. Text from the server is
// only ever set as text, never parsed as markup.
"use strict";

document.addEventListener("submit", (e) => {
  const form = e.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    e.preventDefault();
  }
});

function describe(entry) {
  const step = entry.step || (entry.report && entry.report.id) || "";
  switch (entry.type) {
    case "step_finished": {
      const r = entry.report;
      return `${r.id}: ${r.status.status} - ${r.summary}`;
    }
    case "phase_started": return `${entry.phase} (${entry.reason})`;
    case "attempt_finished": return `${entry.step}: ${entry.note}`;
    case "approval_requested": return `${entry.step}: waiting for approval - ${entry.prompt}`;
    case "approval_decided": return `${entry.step}: decided`;
    case "run_finished": return `finished: ${entry.outcome}`;
    default: return step ? `${entry.type} ${step}` : entry.type;
  }
}

const timeline = document.getElementById("timeline");
if (timeline) {
  const source = new EventSource(timeline.dataset.events);
  source.onmessage = null;
  const add = (e) => {
    let entry;
    try { entry = JSON.parse(e.data); } catch (_) { return; }
    const li = document.createElement("li");
    li.textContent = describe(entry);
    li.dataset.type = entry.type;
    timeline.appendChild(li);
    if (entry.type === "run_finished" || entry.type === "run_aborted") {
      source.close();
      window.setTimeout(() => window.location.reload(), 500);
    }
  };
  for (const type of ["run_started", "run_resumed", "phase_started", "step_started", "baking",
    "attempt_finished", "target_finished", "step_finished", "run_finished", "run_interrupted",
    "run_aborted", "approval_requested", "approval_decided"]) {
    source.addEventListener(type, add);
  }
  // The stream ends with the run: the page then shows where it ended.
  source.onerror = () => { source.close(); window.setTimeout(() => window.location.reload(), 1500); };
}

const runs = document.querySelector("table[data-refresh]");
if (runs) {
  window.setTimeout(() => window.location.reload(), Number(runs.dataset.refresh) * 1000);
}
