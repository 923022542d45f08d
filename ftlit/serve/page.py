"""The page at ``GET /``: a person types an input and sees the model's prediction. One self-contained HTML file (no
script or style from elsewhere: it works offline); it reads the input fields from ``/info`` and asks for the API key
when the server wants one."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ftlit serve</title>
<link rel="icon" href="data:,">
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.3rem; margin-bottom: .2rem; }
#about { color: #666; margin-top: 0; }
label { display: block; font-weight: 600; margin-top: .8rem; }
textarea, input { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; }
button { margin-top: .8rem; padding: .4rem 1.2rem; font: inherit; }
#error { color: #b00020; margin-top: .8rem; }
.bar { background: #3a7bd5; height: .8rem; display: inline-block; vertical-align: middle; }
table { border-collapse: collapse; margin-top: .8rem; }
td { padding: .15rem .6rem .15rem 0; }
mark { background: #ffe08a; padding: 0 .1rem; }
pre { background: #f5f5f5; padding: .6rem; overflow-x: auto; }
</style>
</head>
<body>
<h1 id="title">ftlit serve</h1>
<p id="about">Loading the model's description...</p>
<form id="form">
  <div id="fields"></div>
  <div id="key-box" hidden><label for="key">API key</label><input id="key" type="password" autocomplete="off"></div>
  <button id="submit" type="submit">Predict</button>
</form>
<div id="error" role="alert"></div>
<div id="result" aria-live="polite"></div>
<script>
"use strict";
let info = null;
const $ = (id) => document.getElementById(id);
function text(tag, value) { const e = document.createElement(tag); e.textContent = value; return e; }
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["X-API-Key"] = $("key").value;
  return h;
}
async function load() {
  const r = await fetch("info", {headers: headers()});
  if (r.status === 401) {
    $("key-box").hidden = false; $("about").textContent = "This server needs an API key."; return;
  }
  info = await r.json();
  $("title").textContent = "ftlit: " + info.task;
  $("about").textContent = info.model + " (engine " + info.engine + ", max_length " + info.max_length + ")";
  $("key-box").hidden = !info.api_key;
  $("fields").replaceChildren();
  for (const [name, required] of Object.entries(info.inputs)) {
    const l = text("label", name + (required ? "" : " (optional)"));
    l.htmlFor = "field-" + name;
    const t = document.createElement("textarea");
    t.id = "field-" + name; t.name = name; t.rows = name === "context" ? 6 : 3; t.required = required;
    $("fields").append(l, t);
  }
}
function show(row) {
  const out = $("result");
  out.replaceChildren();
  if ("label" in row) {
    out.append(text("p", "Prediction: " + row.label + " (" + (100 * row.score).toFixed(1) + "%)"));
    const table = document.createElement("table");
    info.labels.forEach((name, i) => {
      const tr = document.createElement("tr"), bar = document.createElement("span");
      bar.className = "bar"; bar.style.width = (12 * row.probs[i]).toFixed(2) + "rem";
      const cell = document.createElement("td"); cell.append(bar);
      tr.append(text("td", name), cell, text("td", (100 * row.probs[i]).toFixed(1) + "%"));
      table.append(tr);
    });
    out.append(table);
  } else if ("labels" in row) {
    out.append(text("p", "Prediction: " + (row.labels.join(", ") || "(no label)")));
  } else if ("value" in row) {
    out.append(text("p", "Prediction: " + row.value));
  } else if ("entities" in row) {
    const source = $("form").elements[Object.keys(info.inputs)[0]].value, p = document.createElement("p");
    let at = 0;
    for (const e of row.entities) {
      p.append(source.slice(at, e.start));
      const m = text("mark", e.text + " [" + e.type + "]"); m.title = (100 * e.score).toFixed(1) + "%";
      p.append(m); at = e.end;
    }
    p.append(source.slice(at));
    out.append(text("p", "Prediction: " + row.entities.length + " entities"), p);
  } else if ("answer" in row) {
    out.append(text("p", "Prediction: " + (row.answer || "(no answer)") + " (" + (100 * row.score).toFixed(1) + "%)"));
  }
  out.append(text("pre", JSON.stringify(row, null, 1)));
}
async function explainIt(body) {
  const r = await fetch("explain", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  if (!r.ok) return;
  const box = document.createElement("div");
  box.id = "words";
  box.append(text("p", "Why: each word's share of the decision (integrated gradients; green for, red against)"));
  for (const e of (await r.json()).explanations) {
    const p = document.createElement("p"), largest = Math.max(1e-9, ...e.words.map((w) => Math.abs(w.score)));
    if (e.entity) p.append(text("b", e.entity.text + " [" + e.entity.type + "]: "));
    let end = null;  // a space only where the text has one: Chinese words (characters) are written together
    for (const w of e.words) {
      const span = text("span", w.word), a = w.score / largest;
      span.style.background = a >= 0 ? `rgba(0, 160, 0, ${a.toFixed(2)})` : `rgba(200, 0, 0, ${(-a).toFixed(2)})`;
      span.title = w.score.toFixed(4);
      if (end !== null && w.start > end) p.append(" ");
      p.append(span);
      end = w.end;
    }
    box.append(p);
  }
  $("result").append(box);
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  if (!info) { await load(); if (!info) return; }
  const body = {};
  for (const [name, required] of Object.entries(info.inputs)) {
    const value = $("form").elements[name].value;
    if (required || value) body[name] = value;
  }
  const r = await fetch("predict", {method: "POST", headers: headers(), body: JSON.stringify(body)});
  const answer = await r.json();
  if (!r.ok) { $("error").textContent = answer.error; if (r.status === 401) $("key-box").hidden = false; return; }
  show(answer.predictions[0]);
  if (info.explain) await explainIt(body);
  if (answer.truncated.length) {
    $("result").prepend(text("p", "The input is longer than " + info.max_length + " tokens: its end was cut."));
  }
});
$("key").addEventListener("change", () => { if (!info) load(); });
load();
</script>
</body>
</html>
"""
