// kiln-serve's prediction page: pick or drop images, POST them to the contract route with
// ?detail=true, show each image with its top-5 classes or its boxes, and the raw answer.
"use strict";

const state = { info: null, files: [], answers: null };
const $ = (id) => document.getElementById(id);

function status(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function row(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

async function loadInfo() {
  try {
    const r = await fetch("/info");
    const info = await r.json();
    state.info = info;
    const list = $("model-info");
    list.replaceChildren();
    row(list, "Status", info.ready ? "ready" : "loading");
    row(list, "Architecture", info.architecture);
    row(list, "Task", info.detector ? "object detection" : "image classification");
    row(list, "Input", `${info.input.channels} × ${info.input.height} × ${info.input.width}`);
    row(list, "Preprocessing", info.preprocessing);
    row(list, "Labels", String(info.labels.length));
    row(list, "Runtime", info.runtime);
    row(list, "Device", info.device);
    row(list, "v2 model", `${info.model} (version ${info.version})`);
    $("threshold").hidden = !info.detector;
    $("threshold-label").hidden = !info.detector;
    if (!info.ready) {
      setTimeout(loadInfo, 1000);
    }
  } catch (e) {
    status(`Could not read the model's description: ${e}`, true);
  }
}

function setFiles(files) {
  state.files = Array.from(files).filter((f) => f.type.startsWith("image/") || f.type === "");
  state.answers = null;
  $("predict").disabled = state.files.length === 0;
  const results = $("results");
  results.replaceChildren();
  state.files.forEach((file, i) => results.append(card(file, i)));
  status(state.files.length ? `${state.files.length} image(s) ready to predict.` : "");
}

function card(file, i) {
  const li = document.createElement("li");
  li.id = `result-${i}`;
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `preview of ${file.name}`);
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = file.name;
  const body = document.createElement("div");
  body.className = "body";
  li.append(canvas, name, body);
  drawPreview(file, canvas, []);
  return li;
}

async function drawPreview(file, canvas, boxes) {
  try {
    const bitmap = await createImageBitmap(file);
    // Small images are drawn enlarged, so boxes and their labels stay readable.
    const scale = Math.max(1, 480 / bitmap.width);
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = scale < 2;
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 240));
    ctx.lineWidth = line;
    ctx.font = `${Math.max(12, line * 6)}px sans-serif`;
    for (const b of boxes) {
      const [ymin, xmin, ymax, xmax] = b.box.map((v) => v * scale);
      ctx.strokeStyle = "#ff2d55";
      ctx.strokeRect(xmin, ymin, xmax - xmin, ymax - ymin);
      const text = `${b.label} ${b.score.toFixed(2)}`;
      const width = ctx.measureText(text).width + 6;
      const height = line * 6 + 6;
      ctx.fillStyle = "#ff2d55";
      ctx.fillRect(xmin, Math.max(0, ymin - height), width, height);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, xmin + 3, Math.max(height - 4, ymin - 4));
    }
    canvas.dataset.boxes = String(boxes.length);
  } catch (e) {
    canvas.setAttribute("aria-label", `${file.name}: the browser cannot show this image`);
  }
}

function fieldName() {
  return state.info && state.info.field ? state.info.field : "image";
}

async function predict() {
  if (!state.files.length) return;
  const form = new FormData();
  state.files.forEach((f) => form.append(fieldName(), f, f.name));
  $("predict").disabled = true;
  status("Predicting…");
  const started = performance.now();
  let response;
  let text;
  try {
    response = await fetch("/?detail=true", { method: "POST", body: form });
    text = await response.text();
  } catch (e) {
    status(`The request failed: ${e}`, true);
    $("predict").disabled = false;
    return;
  }
  const ms = performance.now() - started;
  $("predict").disabled = false;
  $("raw").textContent = text;
  let body;
  try {
    body = JSON.parse(text);
  } catch (e) {
    status(`HTTP ${response.status}: the answer is not JSON.`, true);
    return;
  }
  if (!response.ok) {
    status(explain(response.status, body), true);
    return;
  }
  state.answers = body[0].files;
  status(`Answered in ${ms.toFixed(0)} ms (HTTP ${response.status}).`);
  render();
}

function explain(code, body) {
  const msg = body && body.error_msg ? body.error_msg : "";
  const what = {
    400: "The server could not use an image",
    408: "The upload took too long",
    413: "Too much at once",
    415: "Not a form upload",
    429: "The server is busy: try again in a moment",
    503: "The model is still loading or the server is full: try again shortly",
    504: "The model took too long",
  }[code] || "The request failed";
  return `HTTP ${code}: ${what}. ${msg}`;
}

function render() {
  if (!state.answers) return;
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  state.answers.forEach((answer, i) => {
    const li = $(`result-${i}`);
    if (!li) return;
    const body = li.querySelector(".body");
    body.replaceChildren();
    const canvas = li.querySelector("canvas");
    if (answer.probabilities) {
      renderClasses(body, answer);
    } else {
      const boxes = (answer.detection_boxes || []).map((box, k) => ({
        box,
        label: answer.detection_classes[k],
        score: answer.detection_scores[k],
      })).filter((b) => b.score >= threshold);
      const summary = document.createElement("p");
      summary.className = "label";
      summary.textContent = `${boxes.length} object(s) at score ≥ ${threshold.toFixed(2)}`;
      const list = document.createElement("ul");
      boxes.forEach((b) => {
        const item = document.createElement("li");
        item.textContent = `${b.label} ${b.score.toFixed(3)}`;
        list.append(item);
      });
      body.append(summary, list);
      drawPreview(state.files[i], canvas, boxes);
    }
  });
}

function renderClasses(body, answer) {
  const labels = state.info ? state.info.labels : [];
  const top = answer.probabilities
    .map((p, k) => ({ p, name: labels[k] !== undefined ? String(labels[k]) : String(k) }))
    .sort((a, b) => b.p - a.p)
    .slice(0, 5);
  const label = document.createElement("p");
  label.className = "label";
  label.textContent = String(answer.label);
  body.append(label);
  top.forEach(({ p, name }) => {
    const line = document.createElement("div");
    line.className = "bar";
    const n = document.createElement("span");
    n.textContent = name;
    const meter = document.createElement("span");
    meter.className = "meter";
    meter.setAttribute("role", "meter");
    meter.setAttribute("aria-label", `${name} probability`);
    meter.setAttribute("aria-valuemin", "0");
    meter.setAttribute("aria-valuemax", "1");
    meter.setAttribute("aria-valuenow", p.toFixed(4));
    const fill = document.createElement("i");
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    meter.append(fill);
    const v = document.createElement("span");
    v.textContent = `${(p * 100).toFixed(1)}%`;
    line.append(n, meter, v);
    body.append(line);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  $("files").addEventListener("change", (e) => setFiles(e.target.files));
  $("predict").addEventListener("click", predict);
  $("threshold").addEventListener("input", render);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    setFiles(e.dataTransfer.files);
  });
});
