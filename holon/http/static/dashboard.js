// holon dashboard: buttons call the API with the session's CSRF token; a run's page
// follows its timeline live (server-sent events) and redraws what changed.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf"]').content;

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = "shown" + (isError ? " error" : "");
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { box.className = ""; }, 4000);
}

async function post(path, body) {
  const answer = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
    body: JSON.stringify(body || {}),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const where = data.errors && data.errors.length ? ` (${data.errors[0].path})` : "";
    throw new Error((data.detail || answer.statusText) + where);
  }
  return data;
}

// A form with data-api posts its fields as JSON to that endpoint (a button may name
// another endpoint with its own data-api); empty fields are left out.
function formBody(form) {
  const body = {};
  for (const [name, value] of new FormData(form).entries()) {
    if (value === "") continue;
    const field = form.elements[name];
    if (name === "state" || (field && field.dataset && "json" in field.dataset)) {
      body[name] = JSON.parse(value);
    } else {
      body[name] = value;
    }
  }
  return body;
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const button = event.submitter;
  const path = (button && button.dataset.api) || form.dataset.api;
  try {
    const answer = await post(path, formBody(form));
    const verb = path.split("/").pop();
    const here = window.holonRun && answer.run_id === window.holonRun.runId && answer.body;
    say(`${verb}: ${answer.status || (answer.same === false ? "differs" : "done")}`);
    if (here) {
      window.holonRun.show(answer);
    } else if (document.getElementById("report")) {
      showReport(verb, answer);
    }
  } catch (error) {
    say(error.message, true);
  }
});

// What re-run, replay and fork answer: a report, or another run (linked).
function showReport(verb, answer) {
  const box = document.getElementById("report");
  box.hidden = false;
  box.replaceChildren();
  if (answer.run_id && (verb === "fork" || verb === "replay")) {
    const link = document.createElement("a");
    link.href = `/dashboard/runs/${encodeURIComponent(answer.run_id)}`;
    link.textContent = `${verb}: run ${answer.run_id}`;
    box.append(link, "\n");
  }
  box.append(JSON.stringify(answer, null, 2));
}

function setText(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = JSON.stringify(value, null, 2);
}

function runPage(data) {
  const runId = data.run_id;
  const rows = document.querySelector("#timeline tbody");
  const bars = document.getElementById("durations");
  const durations = [];
  let refresh = null;

  function markStep(name, state) {
    for (const node of document.querySelectorAll("svg.graph .step")) {
      if (state !== "done" && node.classList.contains(state)) {
        node.classList.remove(state);
        if (state === "current") node.classList.add("done");
      }
    }
    const node = document.querySelector(`svg.graph .step[data-step="${CSS.escape(name)}"]`);
    if (node) { node.classList.remove("current", "waiting", "done"); node.classList.add(state); }
  }

  function drawBars() {
    const longest = Math.max(0.001, ...durations.map((d) => d.seconds));
    bars.replaceChildren(...durations.map((d) => {
      const row = document.createElement("div");
      row.className = "bar";
      row.dataset.step = d.step;
      row.innerHTML = '<span class="name"></span><span class="fill"></span><span class="secs"></span>';
      row.querySelector(".name").textContent = d.step;
      row.querySelector(".fill").style.width = `${Math.round((d.seconds / longest) * 200)}px`;
      row.querySelector(".secs").textContent = `${d.seconds.toFixed(3)} s`;
      return row;
    }));
  }

  function show(run) {
    for (const badge of document.querySelectorAll("h2 [data-status]")) {
      badge.textContent = run.status;
      badge.className = `badge ${run.status}`;
    }
    setText("state", run.body.state);
    setText("outputs", run.results);
    setText("result", run.body.output);
    const waiting = document.getElementById("waiting");
    if (waiting && !run.waiting) waiting.hidden = true;
    if (waiting && run.waiting && waiting.hidden) location.reload(); // a new gate: its form
  }

  async function reload() {
    const answer = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}`, { credentials: "same-origin" });
    if (answer.ok) show(await answer.json());
  }

  // The rows the server rendered: their step durations.
  for (const row of rows.querySelectorAll('tr[data-kind="step_completed"]')) {
    durations.push({ step: row.dataset.step, seconds: Number(row.dataset.duration || 0) / 1000 });
  }
  drawBars();

  function onEvent(message) {
    const event = JSON.parse(message.data);
    const row = document.createElement("tr");
    row.dataset.kind = event.kind;
    row.dataset.seq = event.seq;
    const details = Object.keys(event.data).length ? JSON.stringify(event.data) : "";
    for (const text of [event.seq, new Date(event.at * 1000).toISOString().slice(11, 23), event.kind, event.step || "", details]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    }
    row.lastChild.className = "details";
    rows.appendChild(row);
    if (event.kind === "step_started" && event.step) {
      markStep(event.step, "current");
    } else if (event.kind === "step_completed" && event.step) {
      durations.push({ step: event.step, seconds: (event.data.duration_ms || 0) / 1000 });
      drawBars();
      markStep(event.step, "done");
    } else if (event.kind === "waiting" && event.step) {
      markStep(event.step, "waiting");
    } else if (event.kind === "wait_closed" && event.step) {
      markStep(event.step, "done");
    } else if (event.kind === "completed") {
      for (const node of document.querySelectorAll("svg.graph .step.current")) {
        node.classList.replace("current", "done");
      }
    }
    clearTimeout(refresh);
    refresh = setTimeout(reload, 50);
  }

  const source = new EventSource(
    `/api/v1/runs/${encodeURIComponent(runId)}/events?named=0&after=${data.after}`);
  source.onmessage = onEvent;
  source.addEventListener("end", () => { source.close(); reload(); });
  window.holonRun = { show, source, runId };
}

document.addEventListener("DOMContentLoaded", () => {
  const data = document.getElementById("run-data");
  if (data) runPage(JSON.parse(data.textContent));
});
