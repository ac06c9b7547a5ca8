/* Predict page: choose or drop photos, one request per photo (the server batches them), with
 * upload progress, the class, a confidence bar, the is-it-a-pet warning and the Grad-CAM heat map.
 * A "wrong?" button on every answer records feedback (open to all); with the admin token an
 * answer that was wrong can be added to the training uploads under its correct class. */
(function () {
  "use strict";
  const { api, adminApi, admin, fmt, el, setText } = window.catdog;
  const CONCURRENCY = 4; // requests in flight at once; the server groups them into batches
  const MAX_RETRIES = 3; // on 503 (busy or still loading), honouring Retry-After
  const MAX_FILES = 64;

  const items = []; // {id, file, card, state, previewUrl}
  let nextId = 1;
  let running = false;

  const form = document.getElementById("predict-form");
  const input = document.getElementById("file-input");
  const zone = document.getElementById("drop-zone");
  const predictButton = document.getElementById("predict-button");
  const clearButton = document.getElementById("clear-button");
  const explainToggle = document.getElementById("explain-toggle");
  const results = document.getElementById("results");
  const template = document.getElementById("result-template");

  function announce(message) {
    setText("predict-status", message);
  }

  function part(card, cls) {
    return card.querySelector("." + cls);
  }

  function updateControls() {
    const queued = items.filter((it) => it.state === "queued").length;
    predictButton.disabled = running || queued === 0;
    clearButton.disabled = running || items.length === 0;
    predictButton.textContent = running ? "Predicting…" : queued > 1 ? `Predict ${queued} photos` : "Predict";
    const summary = items.length
      ? `${items.length} photo${items.length === 1 ? "" : "s"} chosen, ${queued} waiting.`
      : "No photos chosen yet.";
    setText("selection-summary", summary);
  }

  function setProgress(item, value, text) {
    const bar = part(item.card, "result-progress-bar");
    if (value === null) bar.removeAttribute("value");
    else bar.value = value;
    bar.setAttribute("aria-label", `${text}: ${item.file.name}`);
    part(item.card, "result-progress-text").textContent = text;
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    const room = MAX_FILES - items.length;
    if (files.length > room) {
      announce(`At most ${MAX_FILES} photos at a time: ${files.length - Math.max(room, 0)} were left out.`);
    }
    for (const file of files.slice(0, Math.max(room, 0))) {
      const id = nextId++;
      const card = template.content.firstElementChild.cloneNode(true);
      card.id = `result-${id}`;
      part(card, "result-name").textContent = file.name || "(unnamed)";
      part(card, "result-size").textContent = fmt.bytes(file.size);
      const preview = part(card, "result-preview");
      let previewUrl = null;
      if (file.type.startsWith("image/")) {
        previewUrl = URL.createObjectURL(file);
        preview.src = previewUrl;
        preview.alt = `Your photo ${file.name}`;
        preview.addEventListener("error", () => preview.replaceWith(noPreview()), { once: true });
      } else {
        preview.replaceWith(noPreview());
      }
      const item = { id, file, card, state: "queued", previewUrl };
      items.push(item);
      results.append(card);
      setProgress(item, 0, "Waiting");
    }
    updateControls();
  }

  function noPreview() {
    return el("div", { className: "no-preview", text: "No preview" });
  }

  /** POST one file with upload progress (XHR: fetch has no upload progress). */
  function send(item, explain) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", explain ? "/api/predict?explain=true" : "/api/predict");
      xhr.responseType = "json";
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) setProgress(item, Math.round((e.loaded / e.total) * 100), "Uploading");
      });
      xhr.upload.addEventListener("load", () => setProgress(item, null, "Classifying"));
      xhr.addEventListener("load", () => {
        resolve({
          status: xhr.status,
          body: xhr.response,
          retryAfter: Number(xhr.getResponseHeader("Retry-After")) || null,
        });
      });
      xhr.addEventListener("error", () => resolve({ status: 0, body: null, retryAfter: null }));
      xhr.addEventListener("timeout", () => resolve({ status: 0, body: null, retryAfter: null }));
      const data = new FormData();
      data.append("file", item.file, item.file.name);
      item.card.dataset.state = "uploading";
      setProgress(item, 0, "Uploading");
      xhr.send(data);
    });
  }

  function sleep(ms) {
    return new Promise((resolve) => window.setTimeout(resolve, ms));
  }

  async function predictOne(item, explain) {
    item.state = "running";
    for (let attempt = 0; ; attempt++) {
      const answer = await send(item, explain);
      if (answer.status === 200 && answer.body) return showResult(item, answer.body);
      if (answer.status === 503 && attempt < MAX_RETRIES) {
        const wait = Math.min(Math.max(answer.retryAfter || 1, 1), 30);
        setProgress(item, null, `Server busy, retrying in ${wait} s`);
        await sleep(wait * 1000);
        continue;
      }
      const detail =
        answer.body && typeof answer.body.detail === "string"
          ? answer.body.detail
          : answer.status
            ? `HTTP ${answer.status}`
            : "The server could not be reached.";
      return showError(item, answer.status, detail);
    }
  }

  function showResult(item, r) {
    const card = item.card;
    item.state = "done";
    card.dataset.state = "done";
    card.dataset.predictedClass = r.predicted_class;
    card.dataset.predictionId = r.prediction_id;
    part(card, "result-progress").hidden = true;
    const label = r.predicted_class === "dog" ? "Dog" : r.predicted_class === "cat" ? "Cat" : r.predicted_class;
    part(card, "result-class").textContent = label;
    const confidence = Number(r.confidence);
    part(card, "result-confidence").textContent = `${r.confidence_percentage || fmt.percent(confidence, 2)} confident`;
    const meter = part(card, "confidence");
    const pct = Math.round(confidence * 1000) / 10;
    meter.setAttribute("aria-valuenow", String(pct));
    meter.setAttribute("aria-valuetext", `${pct}% confident it is a ${label.toLowerCase()}`);
    meter.setAttribute("aria-label", `Confidence for ${item.file.name}`);
    meter.dataset.level = confidence >= 0.9 ? "high" : confidence >= 0.7 ? "medium" : "low";
    part(card, "confidence-fill").style.width = `${pct}%`;
    const warning = part(card, "result-pet-warning");
    if (r.is_pet === false) {
      warning.textContent = `${r.message || "This does not look like a cat or a dog."} Treat the answer above with care.`;
      warning.hidden = false;
      card.dataset.pet = "no";
    }
    part(card, "result-p-dog").textContent = fmt.number(r.probability, 4);
    part(card, "result-pet-score").textContent =
      r.pet_score === null || r.pet_score === undefined ? "no pet gate" : fmt.number(r.pet_score, 3);
    part(card, "result-model").textContent = `${r.model_version || fmt.missing} (${r.precision || "?"})`;
    const seconds = Number(r.prediction_time);
    part(card, "result-time").textContent =
      (Number.isFinite(seconds) ? fmt.ms(seconds * 1000) : fmt.missing) + (r.cached ? " (cached)" : "");
    part(card, "result-outcome").hidden = false;

    const heatmapButton = part(card, "result-show-heatmap");
    if (r.explanation) {
      showHeatmap(item, r.explanation);
    } else if (r.explanation_url) {
      heatmapButton.id = `show-heatmap-${item.id}`;
      heatmapButton.setAttribute("aria-label", `Show the heat map of ${item.file.name}`);
      heatmapButton.hidden = false;
      heatmapButton.addEventListener(
        "click",
        () => {
          heatmapButton.hidden = true;
          showHeatmap(item, r.explanation_url);
          const figure = part(card, "result-heatmap");
          figure.tabIndex = -1; // keep keyboard focus near the button that just disappeared
          figure.focus();
        },
        { once: true },
      );
    }
    setUpFeedback(item, r, label);
    const warn = r.is_pet === false ? " It may not be a pet." : "";
    announce(`${item.file.name}: ${label}, ${r.confidence_percentage || fmt.percent(confidence, 1)} confident.${warn}`);
  }

  // --- feedback --------------------------------------------------------------------------------------
  function setUpFeedback(item, r, label) {
    const card = item.card;
    const wrong = part(card, "result-wrong");
    if (!r.prediction_id || (r.predicted_class !== "cat" && r.predicted_class !== "dog")) {
      part(card, "result-feedback").hidden = true;
      return;
    }
    const other = r.predicted_class === "cat" ? "dog" : "cat";
    wrong.id = `wrong-${item.id}`;
    wrong.textContent = `Wrong? It is a ${other}`;
    wrong.setAttribute("aria-label", `Wrong? Report ${item.file.name} as a ${other}, not a ${label.toLowerCase()}`);
    wrong.addEventListener("click", () => sendFeedback(item, r, other));
    const add = part(card, "result-add-training");
    add.id = `add-training-${item.id}`;
    add.setAttribute("aria-label", `Add ${item.file.name} to the training data as a ${other}`);
    add.addEventListener("click", () => addToTraining(item, other));
  }

  function feedbackStatus(item, text, kind) {
    const status = part(item.card, "result-feedback-status");
    status.textContent = text;
    status.dataset.kind = kind || "";
    status.hidden = !text;
  }

  async function sendFeedback(item, r, correct) {
    const wrong = part(item.card, "result-wrong");
    wrong.disabled = true;
    wrong.textContent = "Sending…";
    try {
      const answer = await api("/api/feedback", {
        method: "POST",
        headers: { Accept: "application/json", "Content-Type": "application/json" },
        body: JSON.stringify({ prediction_id: r.prediction_id, correct_label: correct }),
      });
      item.feedbackId = answer.feedback_id;
      item.card.dataset.feedback = "recorded";
      item.card.dataset.feedbackId = answer.feedback_id;
      wrong.textContent = "Feedback recorded";
      const model = answer.model_version || "the model";
      const counts =
        answer.counted === false
          ? `This picture already had a verdict for ${model}: live accuracy counts each picture once.`
          : `Thank you, this counts towards the live accuracy of ${model}.`;
      feedbackStatus(item, `Recorded: it is a ${correct}. ${counts}`, "ok");
      announce(`${item.file.name}: feedback recorded, it is a ${correct}.`);
      showAdminActions();
    } catch (err) {
      wrong.disabled = false;
      wrong.textContent = `Wrong? It is a ${correct}`;
      feedbackStatus(item, `Feedback not recorded${err.status ? ` (${err.status})` : ""}: ${err.message}`, "error");
      announce(`${item.file.name}: feedback not recorded. ${err.message}`);
    }
  }

  async function addToTraining(item, correct) {
    const add = part(item.card, "result-add-training");
    if (!item.feedbackId) return;
    add.disabled = true;
    add.textContent = "Adding…";
    try {
      const entry = await adminApi(
        `/api/feedback/${encodeURIComponent(item.feedbackId)}/add-to-training`,
        { method: "POST" },
        "Adding images to the training data needs the admin token.",
      );
      item.addedToTraining = true;
      item.card.dataset.training = entry.status || "stored";
      add.textContent = "Added to training data";
      const where = entry.class || `${correct}s`;
      const how = entry.status === "duplicate" ? "it was already there, stored once" : "stored";
      feedbackStatus(item, `Added to the training uploads as ${where} (${how}). The next retraining learns from it.`, "ok");
      announce(`${item.file.name}: added to the training data as ${where}.`);
    } catch (err) {
      add.disabled = false;
      add.textContent = "Add to training data";
      const text = err.cancelled ? "Not added: no admin token was given." : `Not added to the training data${err.status ? ` (${err.status})` : ""}: ${err.message}`;
      feedbackStatus(item, text, "error");
      announce(`${item.file.name}: ${text}`);
    }
  }

  /** "Add to training data" shows on answers with recorded feedback while this tab has the admin token. */
  function showAdminActions() {
    const signedIn = Boolean(admin.token());
    for (const item of items) {
      if (!item.feedbackId) continue;
      part(item.card, "result-add-training").hidden = !signedIn && !item.addedToTraining;
    }
  }

  function showHeatmap(item, src) {
    const figure = part(item.card, "result-heatmap");
    const img = part(item.card, "result-heatmap-img");
    img.alt = `Heat map of ${item.file.name}: the warm areas drove the prediction`;
    img.addEventListener(
      "error",
      () => {
        figure.hidden = true;
        part(item.card, "result-error").textContent = "The heat map of this photo is no longer kept by the server.";
        part(item.card, "result-error").hidden = false;
      },
      { once: true },
    );
    img.src = src;
    figure.hidden = false;
  }

  function showError(item, status, detail) {
    const card = item.card;
    item.state = "error";
    card.dataset.state = "error";
    part(card, "result-progress").hidden = true;
    const error = part(card, "result-error");
    error.textContent = status ? `Not classified (${status}): ${detail}` : `Not classified: ${detail}`;
    error.hidden = false;
    announce(`${item.file.name}: not classified. ${detail}`);
  }

  async function predictQueued() {
    const queue = items.filter((it) => it.state === "queued");
    if (!queue.length || running) return;
    running = true;
    results.setAttribute("aria-busy", "true");
    updateControls();
    announce(`Classifying ${queue.length} photo${queue.length === 1 ? "" : "s"}…`);
    const explain = explainToggle.checked;
    for (const item of queue) setProgress(item, 0, "Queued");
    let next = 0;
    async function worker() {
      while (next < queue.length) {
        const item = queue[next++];
        await predictOne(item, explain);
      }
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, queue.length) }, worker));
    running = false;
    results.removeAttribute("aria-busy");
    updateControls();
    const done = queue.filter((it) => it.state === "done");
    const cats = done.filter((it) => it.card.dataset.predictedClass === "cat").length;
    const failed = queue.length - done.length;
    if (queue.length > 1) {
      announce(
        `${queue.length} photos: ${cats} cat${cats === 1 ? "" : "s"}, ${done.length - cats} dog` +
          `${done.length - cats === 1 ? "" : "s"}${failed ? `, ${failed} not classified` : ""}.`,
      );
    }
  }

  function clearAll() {
    if (running) return;
    for (const item of items) if (item.previewUrl) URL.revokeObjectURL(item.previewUrl);
    items.length = 0;
    results.replaceChildren();
    input.value = "";
    announce("Cleared.");
    updateControls();
    input.focus();
  }

  function hasFiles(event) {
    return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }

  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = ""; // choosing the same file again still fires "change"
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    predictQueued();
  });
  clearButton.addEventListener("click", clearAll);

  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer) addFiles(event.dataTransfer.files);
  });
  // A photo dropped next to the zone must not navigate away from the page.
  window.addEventListener("dragover", (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  window.addEventListener("drop", (event) => {
    if (hasFiles(event)) event.preventDefault();
  });

  window.addEventListener("catdog-admin", showAdminActions);
  updateControls();
})();
