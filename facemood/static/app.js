// facemood web page: upload or webcam -> POST predict -> boxes, labels and probability bars.
// Plain JavaScript, no build step. URLs are relative so the page also works behind a path prefix.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  drop: $("drop"), file: $("file"), camera: $("camera"), detect: $("detect"), fps: $("fps"),
  error: $("error"), status: $("status"), image: $("image"), video: $("video"), stage: $("stage"),
  overlay: $("overlay"), faces: $("faces"), info: $("model-info"), warning: $("model-warning"),
  keyForm: $("key-form"), key: $("key"), keyError: $("key-error"), keyState: $("key-state"), keyForget: $("key-forget"),
};
const OOD_COLOR = "#98a2b3";
const OOD_NOTE = "Unlike the faces this model was trained on: do not trust this prediction.";
const COLORS = ["#12b76a", "#3b6fd8", "#f79009", "#d444f1", "#f04438", "#0ba5ec", "#667085"];
let stream = null, timer = null, inFlight = false, imageUrl = null, retry = null;
const KEY_ITEM = "facemood.apiKey";  // sessionStorage: this tab only, gone when it closes

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = !message;
}

async function errorMessage(response) {
  // The service answers every error with JSON {error, message, request_id}.
  try {
    const body = await response.json();
    if (body && body.message) return `${body.message} (HTTP ${response.status})`;
  } catch (e) { /* not JSON */ }
  return `the service answered HTTP ${response.status} ${response.statusText}`;
}

// API keys: a service with keys answers 401 without one; the page then asks for the key once and keeps it for the tab.
class KeyNeeded extends Error {}

function apiKey() { return sessionStorage.getItem(KEY_ITEM) || ""; }

async function api(url, options = {}) {
  // Every request but /health goes through here, with the tab's key when it has one.
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401) {
    const message = await errorMessage(response);
    sessionStorage.removeItem(KEY_ITEM);
    askForKey(key ? message : "");  // a key was sent: say why it was refused
    throw new KeyNeeded(message);
  }
  return response;
}

function askForKey(message) {
  stopCamera();
  els.keyForm.hidden = false; els.keyState.hidden = true;
  els.keyError.textContent = message;
  els.key.focus();
}

function keyAccepted() {
  els.keyForm.hidden = true; els.keyError.textContent = "";
  els.keyState.hidden = !apiKey();
}

els.keyForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY_ITEM, els.key.value.trim());
  els.key.value = "";
  try {
    await loadCard();
  } catch (err) {
    if (!(err instanceof KeyNeeded)) showError(err.message);
    return;
  }
  if (retry) { const again = retry; retry = null; again(); }  // the image that was waiting for the key
});
els.keyForget.addEventListener("click", () => { sessionStorage.removeItem(KEY_ITEM); keyAccepted(); loadCard().catch(() => {}); });

async function loadInfo() {
  let h;
  try {
    h = await (await fetch("health")).json();
  } catch (e) {
    els.info.textContent = "cannot reach the service";
    return;
  }
  els.info.textContent = h.ready ? `model ${h.model} v${h.model_version} (${h.runtime}) · classes: ${h.classes.join(", ")}`
                                 : "the service is starting: the model is not loaded yet";
  if (h.ready) {
    try { await loadCard(); } catch (e) { if (!(e instanceof KeyNeeded)) showError(e.message); }
  }
}

async function loadCard() {
  // The model card says what the model was trained on; a model trained on synthetic faces (or untrained) comes with a warning.
  const r = await api("model");
  keyAccepted();
  if (!r.ok) return;
  const card = await r.json();
  const use = card.use || {};
  const data = use.training_data || {};
  if (data.name) els.info.textContent += ` · trained on ${data.name}`;
  els.warning.textContent = use.warning || "";
  els.warning.hidden = !use.warning;
}

async function predict(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const url = `predict?detect=${els.detect.checked}`;
  let response;
  try {
    response = await api(url, { method: "POST", body: form });
  } catch (e) {
    if (e instanceof KeyNeeded) throw e;
    throw new Error("cannot reach the service: is it still running?");
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function drawBoxes(result, width, height) {
  // The overlay has the image's pixel size; CSS stretches it over the displayed picture.
  const c = els.overlay, ctx = c.getContext("2d");
  c.width = width; c.height = height;
  ctx.clearRect(0, 0, width, height);
  const sx = width / result.width, sy = height / result.height;
  const line = Math.max(2, Math.round(Math.min(width, height) / 160));
  ctx.font = `${Math.max(12, line * 7)}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  result.faces.forEach((f, i) => {
    const ood = f.in_distribution === false;  // null: the model has no out-of-distribution statistics
    const color = ood ? OOD_COLOR : COLORS[i % COLORS.length];
    const x = f.box.x * sx, y = f.box.y * sy, w = f.box.w * sx, h = f.box.h * sy;
    ctx.strokeStyle = color; ctx.lineWidth = line;
    ctx.setLineDash(ood ? [3 * line, 2 * line] : []);
    ctx.strokeRect(x, y, w, h);
    ctx.setLineDash([]);
    const label = ood ? `? ${f.emotion} (unfamiliar face)` : `${f.emotion} ${(100 * f.confidence).toFixed(0)}%`;
    const tw = ctx.measureText(label).width + 2 * line, th = parseInt(ctx.font, 10) + line;
    const ty = y - th < 0 ? y + th : y;
    ctx.fillStyle = color; ctx.fillRect(x - line / 2, ty - th, tw, th);
    ctx.fillStyle = "#fff"; ctx.fillText(label, x + line / 2, ty - line / 2);
  });
}

function renderFaces(result) {
  els.faces.replaceChildren();
  result.faces.forEach((f, i) => {
    const ood = f.in_distribution === false;
    const card = document.createElement("div");
    card.className = "face" + (ood ? " ood" : "");
    card.dataset.inDistribution = String(f.in_distribution);
    const title = document.createElement("h3");
    title.className = "label";
    title.style.color = ood ? OOD_COLOR : COLORS[i % COLORS.length];
    title.textContent = f.emotion;
    card.append(title);
    if (ood) {
      const note = document.createElement("p");
      note.className = "ood-note";
      note.textContent = OOD_NOTE;
      card.append(note);
    }
    const top = f.emotion;
    for (const [cls, p] of Object.entries(f.probs)) {
      const row = document.createElement("div");
      row.className = "bar" + (cls === top ? " top" : "");
      row.dataset.class = cls;
      row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
      row.querySelector(".name").textContent = cls;
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      row.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
      card.append(row);
    }
    els.faces.append(card);
  });
  const n = result.faces.length;
  const unfamiliar = result.faces.filter((f) => f.in_distribution === false).length;
  els.status.textContent = n === 0 ? "no face found" + (els.detect.checked ? ": try a closer, frontal face, or untick 'find faces'" : "")
    : `${n} face${n > 1 ? "s" : ""}` + (unfamiliar ? ` (${unfamiliar} unlike the training faces)` : "")
      + ` · server ${result.timings.total_ms.toFixed(1)} ms · model ${result.model} v${result.model_version}`;
}

async function handleFile(file) {
  if (!file) return;
  stopCamera();
  showError("");
  els.faces.replaceChildren();
  els.status.textContent = "analysing…";
  if (imageUrl) URL.revokeObjectURL(imageUrl);
  imageUrl = URL.createObjectURL(file);
  els.image.hidden = false; els.video.hidden = true;
  els.stage.classList.add("has-media");
  els.image.src = imageUrl;
  els.overlay.getContext("2d").clearRect(0, 0, els.overlay.width, els.overlay.height);
  try {
    const result = await predict(file, file.name || "upload");
    drawBoxes(result, result.width, result.height);
    renderFaces(result);
  } catch (e) {
    els.status.textContent = "";
    els.stage.classList.remove("has-media");
    if (e instanceof KeyNeeded) {
      retry = () => handleFile(file);
      els.status.textContent = "waiting for the API key…";
    } else showError(e.message);  // the service's message names the file
  }
}

// Upload: file picker and drag and drop.
els.file.addEventListener("change", () => handleFile(els.file.files[0]));
["dragenter", "dragover"].forEach((t) => els.drop.addEventListener(t, (e) => { e.preventDefault(); els.drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => els.drop.addEventListener(t, (e) => { e.preventDefault(); els.drop.classList.remove("over"); }));
els.drop.addEventListener("drop", (e) => handleFile(e.dataTransfer.files[0]));
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith("image/"));
  if (item) handleFile(item.getAsFile());
});

// Webcam: frames at a steady rate; a frame is skipped while the previous one is in flight.
const frame = document.createElement("canvas");

async function sendFrame() {
  if (!stream || inFlight || !els.video.videoWidth) return;
  const scale = Math.min(1, 640 / els.video.videoWidth);
  frame.width = Math.round(els.video.videoWidth * scale);
  frame.height = Math.round(els.video.videoHeight * scale);
  frame.getContext("2d").drawImage(els.video, 0, 0, frame.width, frame.height);
  inFlight = true;
  try {
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
    const result = await predict(blob, "webcam.jpg");
    if (!stream) return;
    showError("");
    drawBoxes(result, frame.width, frame.height);
    renderFaces(result);
  } catch (e) {
    if (!(e instanceof KeyNeeded)) showError(`webcam frame: ${e.message}`);
  } finally {
    inFlight = false;
  }
}

async function startCamera() {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no webcam access here: open the page over https or on localhost.");
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  } catch (e) {
    showError(`Cannot use the webcam: ${e.name === "NotAllowedError" ? "permission denied" : e.message}`);
    stream = null;
    return;
  }
  els.video.srcObject = stream;
  els.video.hidden = false; els.image.hidden = true;
  els.stage.classList.add("has-media");
  els.faces.replaceChildren();
  els.camera.textContent = "Stop webcam"; els.camera.classList.add("on");
  const fps = Math.min(15, Math.max(1, Number(els.fps.value) || 4));
  timer = setInterval(sendFrame, 1000 / fps);
}

function stopCamera() {
  if (timer) clearInterval(timer);
  timer = null;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  els.video.srcObject = null;
  if (!els.video.hidden) els.stage.classList.remove("has-media");
  els.camera.textContent = "Start webcam"; els.camera.classList.remove("on");
}

// Links to endpoints behind the key (the model card, the metrics) open with it, in a new tab.
document.querySelectorAll("a[data-api]").forEach((a) => a.addEventListener("click", async (e) => {
  if (!apiKey()) return;  // no key in this tab: the plain link
  e.preventDefault();
  const tab = window.open("", "_blank");  // opened during the click, so pop-up blockers allow it
  try {
    const r = await api(a.getAttribute("href"));
    tab.location = URL.createObjectURL(await r.blob());
  } catch (err) {
    tab.close();
    if (!(err instanceof KeyNeeded)) showError(err.message);
  }
}));

els.camera.addEventListener("click", () => (stream ? stopCamera() : startCamera()));
els.fps.addEventListener("change", () => { if (stream) { stopCamera(); startCamera(); } });
loadInfo();
