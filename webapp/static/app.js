// The trimap propagation page: clips, a frame timeline, a painting canvas, jobs and playback.
// No framework and nothing from the internet: this file is all the page runs.
"use strict";

const LABEL_GREY = [0, 128, 255];
const OVERLAY = [[25, 30, 70], [255, 140, 0], [40, 160, 255]]; // background, unknown, foreground

const state = {
  clips: [],
  clip: null,          // the selected clip's detail (from /api/clips/<name>)
  index: 0,            // the shown frame
  width: 0, height: 0,
  labels: null,        // Uint8Array, 0/1/2 per pixel, the trimap being shown or painted
  original: null,      // the labels as loaded (the eraser brings them back)
  source: "none",      // keyframe | propagated | none
  dirty: false,
  undo: [],
  brush: 2, size: 12, opacity: 0.55,
  view: "trimap",
  playing: null,
  job: null,
  frameImage: null,
  loadToken: 0,
};
window.trimapApp = state; // for tests and the curious

const $ = (id) => document.getElementById(id);
const frameCanvas = $("frame-canvas");
const overlayCanvas = $("overlay-canvas");
const timeline = $("timeline");

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// State changes carry the page's per-run XSRF token (the server refuses them without it).
const XSRF = document.querySelector('meta[name="xsrf-token"]').content;

async function api(path, options = {}) {
  const method = (options.method || "GET").toUpperCase();
  const headers = { ...(options.headers || {}) };
  if (method !== "GET" && method !== "HEAD") headers["X-XSRF-Token"] = XSRF;
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load ${url}`));
    image.src = url;
  });
}

function imageToLabels(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  const labels = new Uint8Array(canvas.width * canvas.height);
  for (let i = 0; i < labels.length; i++) {
    const v = pixels[4 * i];            // grey: R = G = B
    labels[i] = v === 0 ? 0 : v === 255 ? 2 : 1; // the propagation's reading of a trimap
  }
  return labels;
}

// --- clips ---------------------------------------------------------------------------------------

async function loadClips() {
  const data = await (await api("/api/clips")).json();
  state.clips = data.clips;
  const list = $("clips");
  list.innerHTML = "";
  for (const clip of data.clips) {
    const item = document.createElement("li");
    item.dataset.clip = clip.name;
    item.innerHTML = `<span></span><small></small>`;
    item.firstChild.textContent = clip.name;
    item.lastChild.textContent = `${clip.frames} frames, ${clip.keyframes} key${clip.propagated ? ", propagated" : ""}`;
    item.onclick = () => selectClip(clip.name);
    if (state.clip && state.clip.name === clip.name) item.classList.add("selected");
    list.appendChild(item);
  }
  if (!data.clips.length) setStatus("this workspace has no clip folders with <stem>_rgb.png frames", true);
  else if (!state.clip) await selectClip(data.clips[0].name);
}

async function selectClip(name, keepIndex = false) {
  if (!confirmDiscard()) return;
  const detail = await (await api(`/api/clips/${encodeURIComponent(name)}`)).json();
  state.clip = detail;
  state.width = detail.width; state.height = detail.height;
  for (const item of $("clips").children) item.classList.toggle("selected", item.dataset.clip === name);
  const plot = $("uncertainty-plot");
  $("uncertainty-figure").hidden = !detail.result.uncertainty;
  if (detail.result.uncertainty) plot.src = `/api/clips/${encodeURIComponent(name)}/uncertainty.png?t=${Date.now()}`;
  if (!keepIndex) {
    const first = detail.keyframes.length ? detail.stems.indexOf(detail.keyframes[0]) : 0;
    state.index = Math.max(0, first);
  }
  await showFrame(state.index, true);
  setStatus(`${name}: ${detail.stems.length} frames, ${detail.keyframes.length} keyframes` +
    (detail.result.fused.length ? ", propagated" : ", not propagated yet"));
}

function stem() { return state.clip.stems[state.index]; }
function clipUrl(kind, s = stem()) {
  return `/api/clips/${encodeURIComponent(state.clip.name)}/${kind}/${encodeURIComponent(s)}`;
}

function confirmDiscard() {
  if (!state.dirty) return true;
  return window.confirm("This frame's trimap has unsaved changes. Discard them?");
}

// --- showing a frame -----------------------------------------------------------------------------

async function showFrame(index, force = false) {
  if (!state.clip) return;
  if (!force && index === state.index && state.labels) { render(); return; }
  if (!force && !confirmDiscard()) return;
  const ticket = ++state.loadToken;
  state.index = Math.max(0, Math.min(state.clip.stems.length - 1, index));
  const s = stem();
  const isKey = state.clip.keyframes.includes(s);
  const isFused = state.clip.result.fused.includes(s);
  const bust = `?t=${Date.now()}`;
  let frameUrl = clipUrl("frame") + bust;
  if (state.view === "alpha" || state.view === "comp") {
    frameUrl = state.clip.result.matted.includes(s) ? `${clipUrl("matte")}${bust}&kind=${state.view}` : frameUrl;
  }
  const image = await loadImage(frameUrl);
  let labels = null, source = "none";
  if (isKey) { labels = imageToLabels(await loadImage(clipUrl("keyframe") + bust)); source = "keyframe"; }
  else if (isFused) { labels = imageToLabels(await loadImage(clipUrl("result") + bust)); source = "propagated"; }
  if (ticket !== state.loadToken) return; // a later request won
  state.frameImage = image;
  state.labels = labels || new Uint8Array(state.width * state.height); // nothing yet: all background
  state.original = state.labels.slice();
  state.source = source;
  state.dirty = false;
  state.undo = [];
  render();
}

function render() {
  const { width, height } = state;
  for (const canvas of [frameCanvas, overlayCanvas]) {
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  }
  // small frames are shown enlarged (pixels stay sharp), large ones fit the page
  const room = $("viewer").clientWidth || width;
  frameCanvas.style.width = `${Math.min(room, Math.max(width, 720))}px`;
  frameCanvas.getContext("2d").drawImage(state.frameImage, 0, 0, width, height);
  drawOverlay();
  const s = stem();
  $("frame-name").textContent = `frame ${s} (${state.index + 1}/${state.clip.stems.length})`;
  const sourceText = {
    keyframe: "keyframe trimap", propagated: "propagated trimap: correct it and save to make a keyframe",
    none: "no trimap yet: paint one",
  }[state.source];
  $("frame-source").textContent = (state.dirty ? "edited, not saved; " : "") + sourceText;
  $("frame-source").dataset.source = state.source;
  const scores = state.clip.result.uncertainty && state.clip.result.uncertainty.frames;
  $("frame-score").textContent = scores && s in scores ? `disagreement ${scores[s].toFixed(3)}` : "";
  drawTimeline();
}

function drawOverlay() {
  const context = overlayCanvas.getContext("2d");
  context.clearRect(0, 0, overlayCanvas.width, overlayCanvas.height);
  if (state.view !== "trimap" || !state.labels) return;
  const image = context.createImageData(state.width, state.height);
  const alpha = Math.round(255 * state.opacity);
  for (let i = 0; i < state.labels.length; i++) {
    const colour = OVERLAY[state.labels[i]];
    image.data[4 * i] = colour[0]; image.data[4 * i + 1] = colour[1]; image.data[4 * i + 2] = colour[2];
    image.data[4 * i + 3] = state.labels[i] === 2 ? Math.round(alpha * 0.6) : alpha;
  }
  context.putImageData(image, 0, 0);
}

function drawTimeline() {
  const clip = state.clip;
  const width = timeline.clientWidth || 600;
  timeline.width = width;
  const context = timeline.getContext("2d");
  const count = clip.stems.length;
  const cell = width / count;
  context.clearRect(0, 0, width, timeline.height);
  const unc = clip.result.uncertainty;
  const scores = unc ? unc.frames : {};
  // bars span the scores' range: what matters is where they rise, not their common level
  const values = Object.values(scores);
  const low = values.length ? Math.min(...values) : 0;
  const span = Math.max(1e-6, (values.length ? Math.max(...values) : 0) - low);
  clip.stems.forEach((s, i) => {
    const x = i * cell;
    context.fillStyle = clip.result.fused.includes(s) ? "#2a3d5c" : "#2b2f38";
    context.fillRect(x + 0.5, 14, Math.max(1, cell - 1), 44);
    if (s in scores) {
      const h = 4 + 36 * (scores[s] - low) / span;
      context.fillStyle = "#ff8c00";
      context.fillRect(x + cell * 0.2, 58 - h, Math.max(1, cell * 0.6), h);
    }
    if (clip.keyframes.includes(s)) { context.fillStyle = "#3fae4b"; context.fillRect(x + 0.5, 2, Math.max(2, cell - 1), 10); }
    if (unc && unc.suggested.includes(s)) {
      context.fillStyle = "#e5484d";
      context.beginPath(); context.moveTo(x + cell / 2, 12); context.lineTo(x + cell / 2 - 5, 2);
      context.lineTo(x + cell / 2 + 5, 2); context.fill();
    }
  });
  context.strokeStyle = "#fff"; context.lineWidth = 2;
  context.strokeRect(state.index * cell + 1, 1, Math.max(2, cell - 2), timeline.height - 2);
}

timeline.addEventListener("click", (event) => {
  if (!state.clip) return;
  const rect = timeline.getBoundingClientRect();
  const index = Math.floor((event.clientX - rect.left) / rect.width * state.clip.stems.length);
  stopPlaying();
  showFrame(index);
});

// --- painting ------------------------------------------------------------------------------------

let painting = null;

function toImage(event) {
  const rect = overlayCanvas.getBoundingClientRect();
  return [(event.clientX - rect.left) * state.width / rect.width, (event.clientY - rect.top) * state.height / rect.height];
}

function paintDisc(cx, cy) {
  const radius = state.size / 2;
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(state.width - 1, Math.ceil(cx + radius));
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(state.height - 1, Math.ceil(cy + radius));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > radius * radius) continue;
      const i = y * state.width + x;
      state.labels[i] = state.brush === "eraser" ? state.original[i] : state.brush;
    }
  }
}

function paintLine(from, to) {
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / Math.max(1, state.size / 4)));
  for (let k = 1; k <= steps; k++) paintDisc(from[0] + (to[0] - from[0]) * k / steps, from[1] + (to[1] - from[1]) * k / steps);
}

overlayCanvas.addEventListener("pointerdown", (event) => {
  if (!state.clip || state.view !== "trimap" || state.playing) return;
  overlayCanvas.setPointerCapture(event.pointerId);
  state.undo.push(state.labels.slice());
  if (state.undo.length > 50) state.undo.shift();
  painting = toImage(event);
  paintDisc(...painting);
  state.dirty = true;
  render();
});
overlayCanvas.addEventListener("pointermove", (event) => {
  if (!painting) return;
  const here = toImage(event);
  paintLine(painting, here);
  painting = here;
  drawOverlay();
});
const endStroke = () => { if (painting) { painting = null; render(); } };
overlayCanvas.addEventListener("pointerup", endStroke);
overlayCanvas.addEventListener("pointercancel", endStroke);

function setBrush(brush) {
  state.brush = brush === "eraser" ? "eraser" : Number(brush);
  document.querySelectorAll(".brushes button").forEach((b) => b.classList.toggle("active", b.dataset.brush === String(brush)));
}
document.querySelectorAll(".brushes button").forEach((b) => b.addEventListener("click", () => setBrush(b.dataset.brush)));
$("brush-size").addEventListener("input", (e) => { state.size = Number(e.target.value); $("brush-size-value").textContent = e.target.value; });
$("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; drawOverlay(); });

function undo() {
  if (!state.undo.length) return;
  state.labels = state.undo.pop();
  state.dirty = state.undo.length > 0 || !state.labels.every((v, i) => v === state.original[i]);
  render();
}
$("undo").addEventListener("click", undo);
$("revert").addEventListener("click", () => {
  if (!state.labels) return;
  state.undo.push(state.labels.slice());
  state.labels = state.original.slice();
  state.dirty = false;
  render();
});

async function saveKeyframe() {
  if (!state.clip || !state.labels) return;
  const canvas = document.createElement("canvas");
  canvas.width = state.width; canvas.height = state.height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  for (let i = 0; i < state.labels.length; i++) {
    const v = LABEL_GREY[state.labels[i]];
    image.data[4 * i] = v; image.data[4 * i + 1] = v; image.data[4 * i + 2] = v; image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  try {
    const saved = await (await api(clipUrl("keyframe"), { method: "PUT", body: blob, headers: { "Content-Type": "image/png" } })).json();
    state.dirty = false;
    state.original = state.labels.slice();
    if (!state.clip.keyframes.includes(stem())) state.clip.keyframes.push(stem());
    state.clip.keyframes.sort();
    state.source = "keyframe";
    render();
    setStatus(`saved ${saved.saved}` + (saved.backup ? ` (the earlier trimap is kept as ${saved.backup})` : "") +
      "; propagate to use it");
    loadClips();
  } catch (error) { setStatus(`not saved: ${error.message}`, true); }
}
$("save").addEventListener("click", saveKeyframe);

$("mask-apply").addEventListener("click", async () => {
  const file = $("mask-file").files[0];
  if (!file || !state.clip) { setStatus("choose a mask image first", true); return; }
  const form = new FormData();
  form.append("mask", file);
  form.append("width", $("mask-width").value);
  try {
    const response = await api(`/api/clips/${encodeURIComponent(state.clip.name)}/from-mask/${encodeURIComponent(stem())}`, { method: "POST", body: form });
    const url = URL.createObjectURL(await response.blob());
    state.undo.push(state.labels.slice());
    state.labels = imageToLabels(await loadImage(url));
    URL.revokeObjectURL(url);
    state.dirty = true;
    render();
    setStatus("trimap made from the mask: check it, paint, then save");
  } catch (error) { setStatus(`mask not used: ${error.message}`, true); }
});

// --- playback ------------------------------------------------------------------------------------

function stopPlaying() {
  if (state.playing) { clearInterval(state.playing); state.playing = null; $("play").textContent = "Play"; }
}
$("play").addEventListener("click", () => {
  if (state.playing) { stopPlaying(); return; }
  if (!confirmDiscard()) return;
  state.dirty = false;
  $("play").textContent = "Pause";
  let busy = false;
  state.playing = setInterval(async () => {
    if (busy) return;
    busy = true;
    try { await showFrame((state.index + 1) % state.clip.stems.length, true); } finally { busy = false; }
  }, 1000 / Math.max(1, Number($("fps").value) || 8));
});
$("prev").addEventListener("click", () => { stopPlaying(); showFrame(state.index - 1); });
$("next").addEventListener("click", () => { stopPlaying(); showFrame(state.index + 1); });
$("view").addEventListener("change", (e) => { state.view = e.target.value; showFrame(state.index, true); });

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT") return;
  if ((event.ctrlKey || event.metaKey) && event.key === "z") { undo(); event.preventDefault(); return; }
  const actions = {
    "1": () => setBrush(0), "2": () => setBrush(1), "3": () => setBrush(2), "e": () => setBrush("eraser"),
    "s": saveKeyframe, "ArrowLeft": () => showFrame(state.index - 1), "ArrowRight": () => showFrame(state.index + 1),
  };
  if (actions[event.key]) { actions[event.key](); event.preventDefault(); }
});

// --- jobs ----------------------------------------------------------------------------------------

let polling = null;

function showJob(job) {
  state.job = job;
  const running = job && job.state === "running";
  $("run-propagate").disabled = running;
  $("run-matte").disabled = running;
  $("cancel").disabled = !running;
  if (!job) { $("job-state").textContent = "no job yet"; return; }
  const p = job.progress;
  $("job-progress").max = p && p.total ? p.total : 1;
  $("job-progress").value = p && p.total ? p.n : (running ? 0 : 1);
  const where = p && p.desc ? ` — ${p.desc} ${p.n}${p.total ? "/" + p.total : ""}` : "";
  $("job-state").textContent = `${job.kind} ${job.clip}: ${job.state}${running ? where : ""} (${job.seconds} s)` +
    (job.state === "failed" ? ` — ${job.message}` : "");
  $("job-state").className = job.state;
  $("job-state").dataset.state = job.state;
  $("job-log").textContent = job.log.join("\n");
  $("job-log").scrollTop = $("job-log").scrollHeight;
}

async function pollJob() {
  const { job } = await (await api("/api/job")).json();
  const wasRunning = state.job && state.job.state === "running";
  showJob(job);
  if (job && job.state === "running") {
    if (!polling) polling = setInterval(() => pollJob().catch((e) => setStatus(e.message, true)), 700);
  } else {
    if (polling) { clearInterval(polling); polling = null; }
    if (wasRunning && job && state.clip && job.clip === state.clip.name) {
      await loadClips();
      await selectClip(state.clip.name, true);
      setStatus(`${job.kind} ${job.state}` + (job.state === "done" ? ": results shown" : `: ${job.message}`), job.state === "failed");
    }
  }
}

async function startJob(kind) {
  if (!state.clip) return;
  if (state.dirty) { setStatus("save or revert this frame's trimap first", true); return; }
  try {
    const { job } = await (await api("/api/job", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ clip: state.clip.name, kind }),
    })).json();
    showJob(job);
    await pollJob();
  } catch (error) { setStatus(`${kind} not started: ${error.message}`, true); }
}
$("run-propagate").addEventListener("click", () => startJob("propagate"));
$("run-matte").addEventListener("click", () => startJob("matte"));
$("cancel").addEventListener("click", async () => { showJob((await (await api("/api/job/cancel", { method: "POST" })).json()).job); });

window.addEventListener("resize", () => { if (state.clip) drawTimeline(); });
window.addEventListener("beforeunload", (event) => { if (state.dirty) { event.preventDefault(); event.returnValue = ""; } });

setBrush(2);
loadClips().then(pollJob).catch((error) => setStatus(error.message, true));
