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
  undo: [], redo: [],
  brush: 2, size: 12, opacity: 0.55,
  zoom: 1, panX: 0, panY: 0, fitted: false, space: false,
  box: null,           // [x0, y0, x1, y1] of the cut-out tool, in frame pixels
  strokes: null,       // Uint8Array, 1 = surely the subject, 2 = surely not (for the cut-out)
  band: 10,
  review: [], reviewPos: -1,
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

// The page's per-run key: in the page served for the printed address only, kept for this tab (its
// reloads) and sent with every request; the server answers data and changes to nothing else (the
// cookie alone fetches pictures). The token leaves the address bar.
const XSRF = (() => {
  const given = document.querySelector('meta[name="xsrf-token"]').content;
  if (given) sessionStorage.setItem("trimap-page-key", given);
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/");
  return given || sessionStorage.getItem("trimap-page-key") || "";
})();

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), "X-XSRF-Token": XSRF };
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
  if (!data.clips.length) setStatus("this workspace has no clips: put videos (.mp4, .mov, ...) or folders of <stem>_rgb.png frames in it", true);
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
  const unsure = detail.result.uncertainty && detail.result.uncertainty.uniform;
  $("uncertainty-caption").textContent = unsure
    ? `Every frame scores about ${detail.result.uncertainty.level.toFixed(2)} (0 certain, 1 no agreement): the whole clip is uniformly unsure, so no frame stands out and the red picks are a toss-up. A network that has learned the subject scores lower near its keyframes; more finetuning or the released weights help more than another keyframe.`
    : "Where propagation drifts, 0 (the two passes agree and are sure) to 1: frames in red are worth a keyframe trimap next.";
  $("uncertainty-caption").classList.toggle("warning", Boolean(unsure));
  $("download-video").hidden = !detail.result.video;
  $("download-video").href = `/api/clips/${encodeURIComponent(name)}/foreground.mov`;
  $("download-exr").hidden = !detail.result.exr;
  $("download-exr").href = `/api/clips/${encodeURIComponent(name)}/exr.zip`;
  if (!keepIndex) {
    const first = detail.keyframes.length ? detail.stems.indexOf(detail.keyframes[0]) : 0;
    state.index = Math.max(0, first);
    state.fitted = false;
  }
  buildStrip();
  state.review = reviewQueue();
  state.reviewPos = -1;
  await showFrame(state.index, true);
  await loadSettings(name);
  setStatus(`${name}: ${detail.stems.length} frames, ${detail.keyframes.length} keyframes` +
    (detail.result.fused.length ? ", propagated" : ", not propagated yet"));
}

function stem() { return state.clip.stems[state.index]; }

// --- the frame strip and the review queue --------------------------------------------------------

function buildStrip() {
  const strip = $("strip");
  strip.innerHTML = "";
  state.clip.stems.forEach((s, i) => {
    const image = document.createElement("img");
    image.loading = "lazy";
    image.alt = s; image.title = `frame ${s}`; image.dataset.index = i;
    image.src = clipUrl("thumb", s);
    image.onclick = () => { stopPlaying(); showFrame(i); };
    strip.appendChild(image);
  });
}

function markStrip() {
  const strip = $("strip");
  for (const image of strip.children) {
    const i = Number(image.dataset.index);
    image.classList.toggle("current", i === state.index);
    image.classList.toggle("key", state.clip.keyframes.includes(state.clip.stems[i]));
  }
  const current = strip.children[state.index];
  if (current && current.scrollIntoView) current.scrollIntoView({ block: "nearest", inline: "nearest" });
}

// The frames most worth a look: the highest disagreement of the two passes first, keyframes left out.
function reviewQueue() {
  const unc = state.clip.result.uncertainty;
  if (!unc) return [];
  return Object.entries(unc.frames).filter(([s]) => !state.clip.keyframes.includes(s))
    .sort((a, b) => b[1] - a[1]).map(([s]) => s);
}

async function reviewNext() {
  if (!state.clip) return;
  if (!state.review.length) { setStatus("nothing to review yet: propagate first", true); return; }
  state.reviewPos = (state.reviewPos + 1) % state.review.length;
  stopPlaying();
  await showFrame(state.clip.stems.indexOf(state.review[state.reviewPos]));
}
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
  // playback shows the cached JPEG display copies (remote-friendly); a paused frame is the lossless PNG
  let frameUrl = state.playing ? `${clipUrl("display")}?quality=${Number($("quality").value) || 85}` : clipUrl("frame") + bust;
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
  state.undo = []; state.redo = [];
  state.box = null; state.strokes = null;
  render();
}

function render() {
  const { width, height } = state;
  for (const canvas of [frameCanvas, overlayCanvas]) {
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  }
  frameCanvas.style.width = `${width}px`; frameCanvas.style.height = `${height}px`;
  if (!state.fitted) { fitView(); state.fitted = true; } else applyView();
  frameCanvas.getContext("2d").drawImage(state.frameImage, 0, 0, width, height);
  drawOverlay();
  const s = stem();
  $("frame-name").textContent = `frame ${s} (${state.index + 1}/${state.clip.stems.length})`;
  const sourceText = {
    keyframe: "keyframe trimap", propagated: "propagated trimap: correct it and save to make a keyframe",
    none: "no trimap yet: paint one",
  }[state.source];
  $("frame-source").textContent = state.dirty
    ? (state.source === "none" ? "new trimap, not saved" : `edited, not saved (${state.source} trimap)`)
    : sourceText;
  $("frame-source").dataset.source = state.source;
  const scores = state.clip.result.uncertainty && state.clip.result.uncertainty.frames;
  $("frame-score").textContent = scores && s in scores ? `disagreement ${scores[s].toFixed(2)} of 1` : "";
  const at = state.review.indexOf(s);
  $("review-state").textContent = at >= 0 ? `review ${at + 1}/${state.review.length}` : "";
  drawTimeline();
  markStrip();
}

// --- zoom and pan --------------------------------------------------------------------------------

function applyView() {
  const box = $("canvas-box");
  box.style.width = `${state.width}px`; box.style.height = `${state.height}px`;
  box.style.transform = `translate(${state.panX}px, ${state.panY}px) scale(${state.zoom})`;
  $("zoom-value").textContent = `${Math.round(state.zoom * 100)}%`;
}

function fitView() {
  const stage = $("stage");
  const zoom = Math.min(stage.clientWidth / state.width, stage.clientHeight / state.height) || 1;
  state.zoom = zoom;
  state.panX = (stage.clientWidth - state.width * zoom) / 2;
  state.panY = (stage.clientHeight - state.height * zoom) / 2;
  applyView();
}

function zoomAt(factor, x, y) { // x, y: a point of the stage that stays where it is
  const zoom = Math.min(32, Math.max(0.05, state.zoom * factor));
  state.panX = x - (x - state.panX) * zoom / state.zoom;
  state.panY = y - (y - state.panY) * zoom / state.zoom;
  state.zoom = zoom;
  applyView();
}

function zoomTo(zoom) {
  const stage = $("stage");
  zoomAt(zoom / state.zoom, stage.clientWidth / 2, stage.clientHeight / 2);
}

$("stage").addEventListener("wheel", (event) => {
  if (!state.clip) return;
  event.preventDefault();
  const rect = $("stage").getBoundingClientRect();
  zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
}, { passive: false });
$("zoom-fit").addEventListener("click", fitView);
$("zoom-1").addEventListener("click", () => zoomTo(1));
$("review").addEventListener("click", reviewNext);

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
    if (state.strokes && state.strokes[i]) {
      const mark = state.strokes[i] === 1 ? [60, 220, 110] : [235, 60, 75];
      image.data[4 * i] = mark[0]; image.data[4 * i + 1] = mark[1]; image.data[4 * i + 2] = mark[2]; image.data[4 * i + 3] = 230;
    }
  }
  context.putImageData(image, 0, 0);
  if (state.box) {
    const [x0, y0, x1, y1] = state.box;
    context.save();
    context.setLineDash([6, 4]); context.strokeStyle = "#ffffff"; context.lineWidth = Math.max(1, 1.5 / state.zoom);
    context.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    context.restore();
  }
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
  // bars on the score's whole scale, 0 (certain) to 1: a clip unsure everywhere shows tall bars everywhere
  clip.stems.forEach((s, i) => {
    const x = i * cell;
    context.fillStyle = clip.result.fused.includes(s) ? "#2a3d5c" : "#2b2f38";
    context.fillRect(x + 0.5, 14, Math.max(1, cell - 1), 44);
    if (s in scores) {
      const h = 2 + 38 * Math.min(1, Math.max(0, scores[s]));
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
  const stroking = state.brush === "stroke-fg" || state.brush === "stroke-bg";
  if (stroking && !state.strokes) state.strokes = new Uint8Array(state.width * state.height);
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(state.width - 1, Math.ceil(cx + radius));
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(state.height - 1, Math.ceil(cy + radius));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > radius * radius) continue;
      const i = y * state.width + x;
      if (stroking) state.strokes[i] = state.brush === "stroke-fg" ? 1 : 2;
      else state.labels[i] = state.brush === "eraser" ? state.original[i] : state.brush;
    }
  }
}

function paintLine(from, to) {
  const steps = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) / Math.max(1, state.size / 4)));
  for (let k = 1; k <= steps; k++) paintDisc(from[0] + (to[0] - from[0]) * k / steps, from[1] + (to[1] - from[1]) * k / steps);
}

let panning = null, boxing = null;

function pushUndo() {
  state.undo.push(state.labels.slice());
  if (state.undo.length > 50) state.undo.shift();
  state.redo = [];
}

overlayCanvas.addEventListener("pointerdown", (event) => {
  if (!state.clip) return;
  overlayCanvas.setPointerCapture(event.pointerId);
  if (event.button === 1 || state.space) { // pan: middle button, or Space held
    panning = [event.clientX - state.panX, event.clientY - state.panY];
    event.preventDefault();
    return;
  }
  if (state.view !== "trimap" || state.playing || event.button !== 0) return;
  if (state.brush === "box") {
    const [x, y] = toImage(event);
    boxing = true;
    state.box = [x, y, x, y];
    drawOverlay();
    return;
  }
  if (state.brush !== "stroke-fg" && state.brush !== "stroke-bg") { pushUndo(); state.dirty = true; }
  painting = toImage(event);
  paintDisc(...painting);
  render();
});
overlayCanvas.addEventListener("pointermove", (event) => {
  if (panning) {
    state.panX = event.clientX - panning[0]; state.panY = event.clientY - panning[1];
    applyView();
    return;
  }
  if (boxing) {
    const [x, y] = toImage(event);
    state.box[2] = Math.max(0, Math.min(state.width, x)); state.box[3] = Math.max(0, Math.min(state.height, y));
    drawOverlay();
    return;
  }
  if (!painting) return;
  const here = toImage(event);
  paintLine(painting, here);
  painting = here;
  drawOverlay();
});
const endStroke = () => {
  if (panning) { panning = null; return; }
  if (boxing) {
    boxing = null;
    if (!state.bandTouched) { // a band in proportion to the box: 10 px a side would swallow a small subject
      const side = Math.min(Math.abs(state.box[2] - state.box[0]), Math.abs(state.box[3] - state.box[1]));
      state.band = Math.max(2, Math.min(10, Math.round(side / 16)));
      $("band").value = state.band; $("band-value").textContent = String(state.band);
    }
    cutOut();
    return;
  }
  if (painting) {
    painting = null;
    render();
    if (state.brush === "stroke-fg" || state.brush === "stroke-bg") cutOut();
  }
};
overlayCanvas.addEventListener("pointerup", endStroke);
overlayCanvas.addEventListener("pointercancel", endStroke);

const TOOLS = ["eraser", "box", "stroke-fg", "stroke-bg"];
function setBrush(brush) {
  state.brush = TOOLS.includes(brush) ? brush : Number(brush);
  document.querySelectorAll(".brushes button[data-brush]").forEach((b) => b.classList.toggle("active", b.dataset.brush === String(brush)));
}
document.querySelectorAll(".brushes button[data-brush]").forEach((b) => b.addEventListener("click", () => setBrush(b.dataset.brush)));
$("brush-size").addEventListener("input", (e) => { state.size = Number(e.target.value); $("brush-size-value").textContent = e.target.value; });
$("opacity").addEventListener("input", (e) => { state.opacity = Number(e.target.value) / 100; drawOverlay(); });

function undo() {
  if (!state.undo.length) return;
  state.redo.push(state.labels);
  state.labels = state.undo.pop();
  state.dirty = state.undo.length > 0 || !state.labels.every((v, i) => v === state.original[i]);
  render();
}
function redo() {
  if (!state.redo.length) return;
  state.undo.push(state.labels);
  state.labels = state.redo.pop();
  state.dirty = true;
  render();
}
$("undo").addEventListener("click", undo);
$("redo").addEventListener("click", redo);

// --- cutting the subject out: a box, strokes, or the person tool ---------------------------------

function maskPng(values, which) { // a white-on-black PNG of the frame's size where values === which
  const canvas = document.createElement("canvas");
  canvas.width = state.width; canvas.height = state.height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  for (let i = 0; i < values.length; i++) {
    const v = values[i] === which ? 255 : 0;
    image.data[4 * i] = v; image.data[4 * i + 1] = v; image.data[4 * i + 2] = v; image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function useTrimap(response, what, started) {
  const warning = response.headers.get("X-Trimap-Warning");
  const url = URL.createObjectURL(await response.blob());
  const labels = imageToLabels(await loadImage(url));
  URL.revokeObjectURL(url);
  pushUndo();
  state.labels = labels;
  state.dirty = true;
  render();
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  $("cutout-state").textContent = `${what} in ${seconds} s`;
  $("cutout-state").dataset.done = String(Number($("cutout-state").dataset.done || 0) + 1);
  if (warning) setStatus(`trimap from ${what}: ${warning}`, true);
  else setStatus(`trimap from ${what}: add strokes where it is wrong, paint, then save`);
}

let cutting = false;
async function cutOut() {
  if (!state.clip || cutting) return;
  const hasFg = state.strokes && state.strokes.includes(1);
  if (!state.box && !hasFg) { setStatus("drag a box around the subject first (or mark it with + subject)", true); return; }
  const form = new FormData();
  if (state.box) form.append("box", JSON.stringify(state.box.map(Math.round)));
  form.append("band", String(state.band));
  if (state.strokes) {
    form.append("fg_strokes", await maskPng(state.strokes, 1), "fg.png");
    form.append("bg_strokes", await maskPng(state.strokes, 2), "bg.png");
  }
  cutting = true;
  const started = performance.now();
  try {
    const response = await api(`/api/clips/${encodeURIComponent(state.clip.name)}/from-box/${encodeURIComponent(stem())}`, { method: "POST", body: form });
    await useTrimap(response, "the box" + (state.strokes ? " and strokes" : ""), started);
  } catch (error) { setStatus(`no cut-out: ${error.message}`, true); } finally { cutting = false; }
}

async function findPerson() {
  if (!state.clip) return;
  const form = new FormData();
  form.append("band", String(state.band));
  const started = performance.now();
  try {
    const response = await api(`/api/clips/${encodeURIComponent(state.clip.name)}/from-person/${encodeURIComponent(stem())}`, { method: "POST", body: form });
    await useTrimap(response, "the person segmenter", started);
  } catch (error) { setStatus(`no person found: ${error.message}`, true); }
}
$("tool-person").addEventListener("click", findPerson);
$("band").addEventListener("input", (e) => {
  state.band = Number(e.target.value); state.bandTouched = true; $("band-value").textContent = e.target.value;
});
$("band").addEventListener("change", () => { if (state.box || state.strokes) cutOut(); });
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
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "y")) {
    if (key === "y" || event.shiftKey) redo(); else undo();
    event.preventDefault();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (key === " ") { state.space = true; $("stage").classList.add("panning"); event.preventDefault(); return; }
  const setSize = (size) => { state.size = Math.max(1, Math.min(200, size)); $("brush-size").value = state.size; $("brush-size-value").textContent = state.size; };
  const setOpacity = (value) => { state.opacity = Math.max(0, Math.min(1, value)); $("opacity").value = Math.round(state.opacity * 100); drawOverlay(); };
  const actions = {
    "1": () => setBrush(0), "2": () => setBrush(1), "3": () => setBrush(2),
    "b": () => setBrush(0), "u": () => setBrush(1), "f": () => setBrush(2), "e": () => setBrush("eraser"),
    "x": () => setBrush("box"), "g": () => setBrush("stroke-fg"), "h": () => setBrush("stroke-bg"), "p": findPerson,
    "[": () => setSize(Math.round(state.size / 1.25)), "]": () => setSize(Math.round(state.size * 1.25) + 1),
    ",": () => setOpacity(state.opacity - 0.1), ".": () => setOpacity(state.opacity + 0.1),
    "0": fitView, "!": () => zoomTo(1), "+": () => zoomTo(state.zoom * 1.25), "-": () => zoomTo(state.zoom / 1.25),
    "r": reviewNext, "s": saveKeyframe,
    "ArrowLeft": () => showFrame(state.index - 1), "ArrowRight": () => showFrame(state.index + 1),
  };
  if (actions[key]) { actions[key](); event.preventDefault(); }
});
document.addEventListener("keyup", (event) => {
  if (event.key === " ") { state.space = false; $("stage").classList.remove("panning"); }
});

// --- run settings (per clip, remembered in the save folder) -----------------------------------------

const SETTINGS = ["device", "tune", "fast", "precision", "max_internal_size", "max_memory", "discard_parts",
  "frames", "finetune_steps", "finetune_crop", "finetune_lr", "finetune_schedule"];
const FINETUNING = ["finetune_steps", "finetune_crop", "finetune_lr", "finetune_schedule"]; // off with --load
const TUNED = ["fast", "precision"]; // what the measurement chooses while "tune" is on

function showSettings(data) {
  state.settings = data;
  for (const key of SETTINGS) {
    const input = $(`set-${key}`);
    if (input.type === "checkbox") input.checked = data.settings[key];
    else input.value = data.settings[key];
    input.title = data.trades[key] || "";
    const label = input.closest("label");
    let trade = label.nextElementSibling;
    if (!trade || !trade.classList.contains("trade")) {
      trade = document.createElement("small");
      trade.className = "trade";
      label.after(trade);
    }
    trade.textContent = data.trades[key] || "";
  }
  $("settings-state").textContent = data.saved ? "(this clip's)" : "(proposed)";
  const notes = $("settings-notes");
  notes.replaceChildren();
  for (const [key, note] of Object.entries(data.notes)) {
    const item = document.createElement("li");
    item.textContent = `${key}: ${note}`;
    notes.append(item);
  }
  $("settings-flags").textContent = data.flags.length ? data.flags.join(" ") : "the published computation (no flags)";
  for (const key of TUNED) $(`set-${key}`).disabled = data.settings.tune;
  for (const key of FINETUNING) $(`set-${key}`).disabled = !data.finetuning;
  $("finetune-settings").title = data.finetuning ? "" : "the app propagates with --load: no finetuning";
  $("start-note").textContent = data.start || "";
  $("start-note").hidden = !data.start;
  showTuned(data.tuned);
}

function showTuned(tuned) {
  // the clip's latest measurement, one click away: every path, its seconds a visit, its labels against fp32
  $("tuned").hidden = !tuned;
  const table = $("tuned-table");
  table.replaceChildren();
  if (!tuned) return;
  const head = table.insertRow();
  for (const text of ["path", "s / visit", "x default", "labels vs fp32", ""]) head.insertCell().textContent = text;
  const defaultRow = tuned.rows.find((row) => row.kind === "candidate" && row.flags.length === 0);
  const runSeconds = (row) => row.once_seconds + tuned.clip_visits * row.seconds_per_visit;
  for (const row of tuned.rows) {
    const cells = [
      row.flags.join(" ") || "default (fp32)", row.seconds_per_visit.toFixed(2),
      (runSeconds(defaultRow) / runSeconds(row)).toFixed(2) + "x",
      row.agreement === null ? "-" : `${(100 * row.agreement).toFixed(3)}%`,
      row.kind === "candidate" && row.flags.join(" ") === tuned.choice.join(" ") ? "chosen" : row.note,
    ];
    const line = table.insertRow();
    for (const text of cells) line.insertCell().textContent = text;
  }
  const caption = table.createCaption();
  caption.textContent = `${tuned.device}, ${tuned.frame_size[1]}x${tuned.frame_size[0]}, with ${tuned.checkpoint_name}, measured ${tuned.measured}`;
}

function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

const MiB = (bytes) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

async function loadEstimate(name) {
  const { estimate, free_bytes: free } = await (await api(`/api/clips/${encodeURIComponent(name)}/estimate`)).json();
  const box = $("estimate");
  box.classList.remove("warning");
  if (!estimate) { box.textContent = "not estimated for these settings and inputs: Estimate times a few steps here"; return; }
  const parts = [];
  if (estimate.finetune_steps) parts.push(`finetuning ${estimate.finetune_steps} steps × ${estimate.seconds_per_step.toFixed(2)} s and saving = ${duration(estimate.finetune_seconds)}`);
  parts.push(`propagating ${estimate.visits} frame visits × ${estimate.seconds_per_visit.toFixed(2)} s = ${duration(estimate.propagate_seconds)} (the progress counts ${estimate.part_pngs}: each part also writes its keyframe)`);
  if (estimate.tuned) parts.push(`path measured here: ${estimate.tuned.summary}`);
  let disk = `${MiB(estimate.disk_bytes)} on disk`;
  if (estimate.finetune_bytes) disk += ` (${MiB(estimate.finetune_bytes)} of them the finetuning's checkpoints and optimizer states)`;
  box.textContent = `A run takes about ${duration(estimate.seconds)} (${parts.join(", ")}) and ${disk}; ${MiB(free)} free.`;
  if (estimate.disk_bytes > free) {
    box.textContent += " It does not fit: free some space, or choose discard parts or a smaller internal size.";
    box.classList.add("warning");
  }
}

async function loadSettings(name) {
  state.settings = null; // never save one clip's settings to another
  for (const key of SETTINGS) $(`set-${key}`).disabled = true;
  try {
    const data = await (await api(`/api/clips/${encodeURIComponent(name)}/settings`)).json();
    for (const key of SETTINGS) $(`set-${key}`).disabled = false;
    showSettings(data);
    await loadEstimate(name);
  } catch (error) {
    $("settings-state").textContent = "(unreadable)";
    $("settings-flags").textContent = error.message;
    setStatus(`run settings: ${error.message}`, true);
  }
}

async function saveSettings(values) {
  if (!state.clip || !state.settings) return;
  try {
    const response = await api(`/api/clips/${encodeURIComponent(state.clip.name)}/settings`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(values),
    });
    showSettings(await response.json());
    await loadEstimate(state.clip.name);
    setStatus("run settings saved for this clip");
  } catch (error) {
    setStatus(error.message, true);
    await loadSettings(state.clip.name);
  }
}

function settingsFromPage() {
  const values = {};
  for (const key of SETTINGS) {
    const input = $(`set-${key}`);
    values[key] = input.type === "checkbox" ? input.checked : input.type === "number" ? Number(input.value) : input.value;
  }
  return values;
}

for (const key of SETTINGS) $(`set-${key}`).addEventListener("change", () => saveSettings(settingsFromPage()));
$("settings-proposed").addEventListener("click", () => { if (state.settings) saveSettings(state.settings.proposed); });

// --- jobs ----------------------------------------------------------------------------------------

let polling = null;

function showJob(job) {
  state.job = job;
  const running = job && job.state === "running";
  $("run-propagate").disabled = running;
  $("run-estimate").disabled = running;
  $("run-matte").disabled = running;
  $("cancel").disabled = !running;
  if (!job) { $("job-state").textContent = "no job yet"; return; }
  const p = job.progress;
  $("job-progress").max = p && p.total ? p.total : 1;
  $("job-progress").value = p && p.total ? p.n : (running ? 0 : 1);
  const where = p && p.desc ? ` — ${p.desc} ${p.n}${p.total ? "/" + p.total : ""}${pace(job, p)}` : "";
  const warned = job.state === "done" && job.warning_count > 0;
  const label = warned ? `done with ${job.warning_count} warning${job.warning_count > 1 ? "s" : ""}` : job.state;
  const other = state.clip && job.clip !== state.clip.name ? " (another clip)" : "";
  $("job-state").textContent = `${running ? "" : "last job: "}${job.kind} ${job.clip}${other}: ${label}` +
    `${running ? where : ""} (${job.seconds} s)` + (job.state === "failed" ? ` — ${job.message}` : "");
  $("job-state").className = warned ? "warning" : job.state;
  $("job-state").dataset.state = job.state;
  const warnings = $("job-warnings");
  warnings.replaceChildren(...(job.warnings || []).map((text) => Object.assign(document.createElement("li"), { textContent: text })));
  warnings.hidden = !(job.warnings && job.warnings.length);
  // a running propagation changes the trimaps: its downloads are shown again once it is done and current
  if (running && job.kind === "propagate" && state.clip && job.clip === state.clip.name) {
    $("download-video").hidden = true;
    $("download-exr").hidden = true;
  }
  $("job-log").textContent = job.log.join("\n");
  $("job-log").scrollTop = $("job-log").scrollHeight;
}

// Frames per second and the time left of the running step, from its progress since it was first seen.
function pace(job, p) {
  const now = Date.now() / 1000;
  const key = `${job.id} ${p.desc}`;
  if (!state.pace || state.pace.key !== key || p.n < state.pace.n) state.pace = { key, n: p.n, t: now };
  const done = p.n - state.pace.n;
  const seconds = now - state.pace.t;
  if (done < 1 || seconds < 1) return "";
  const rate = done / seconds;
  const left = p.total ? (p.total - p.n) / rate : null;
  const shown = left === null ? "" : left < 90 ? `, ${Math.round(left)} s left` : `, ${Math.round(left / 60)} min left`;
  const unit = p.unit || "item";
  const speed = rate >= 1 ? `${rate.toFixed(1)} ${unit}s/s` : `${(1 / rate).toFixed(1)} s/${unit}`;
  return `, ${speed}${shown}`;
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
      const warned = job.state === "done" && job.warning_count > 0;
      setStatus(`${job.kind} ${job.state}` + (job.state !== "done" ? `: ${job.message}` : warned
        ? ` with ${job.warning_count} warning(s), results shown: read them under Run` : ": results shown"),
        job.state === "failed" || warned);
    }
  }
}

async function startJob(kind) {
  if (!state.clip) return;
  if (state.dirty) { setStatus("save or revert this frame's trimap first", true); return; }
  const body = { clip: state.clip.name, kind };
  if (kind === "matte" && $("matte-exr").value) body.exr = $("matte-exr").value;
  try {
    const { job } = await (await api("/api/job", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    })).json();
    showJob(job);
    await pollJob();
  } catch (error) { setStatus(`${kind} not started: ${error.message}`, true); }
}
$("run-propagate").addEventListener("click", () => startJob("propagate"));
$("run-estimate").addEventListener("click", () => startJob("estimate"));
$("run-matte").addEventListener("click", () => startJob("matte"));
$("cancel").addEventListener("click", async () => { showJob((await (await api("/api/job/cancel", { method: "POST" })).json()).job); });

window.addEventListener("resize", () => { if (state.clip) { drawTimeline(); fitView(); } });
window.addEventListener("beforeunload", (event) => { if (state.dirty) { event.preventDefault(); event.returnValue = ""; } });

setBrush(2);
loadClips().then(pollJob).catch((error) => setStatus(error.message, true));
