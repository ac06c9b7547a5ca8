/* Retrain page: upload labelled photos (one XHR per batch of files, each with its own progress
 * bar), list and delete uploads, start a retraining job, follow it live (at once and every 2 s
 * while one runs, every 10 s otherwise), cancel it, and read its result and the job history. */
(function () {
  "use strict";
  const { api, adminApi, withAdmin, confirmAction, ApiError, modelMetrics, fmt, el, setText, showMessage, updateFooter } =
    window.catdog;
  const FILES_PER_REQUEST = 20; // one request, one progress bar; the server caps a request at 256 files
  const ACTIVE_MS = 2000;
  const IDLE_MS = 10000;
  const PAGE_SIZE = 24;
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

  const form = document.getElementById("upload-form");
  const fileInput = document.getElementById("upload-files");
  const uploadButton = document.getElementById("upload-button");
  const fieldset = document.getElementById("upload-fieldset");
  const requestsList = document.getElementById("upload-requests");
  const retrainButton = document.getElementById("retrain-button");
  const cancelButton = document.getElementById("retrain-cancel");
  const uploadsList = document.getElementById("uploads-list");
  const moreButton = document.getElementById("uploads-more");
  const filter = document.getElementById("uploads-filter");

  let uploading = false;
  let current = null; // the newest /api/retrain-status answer
  let lastAnnounced = "";

  function cancelledText(err, what) {
    return err && err.cancelled ? `${what}: no admin token was given.` : null;
  }

  function short(id) {
    return id ? String(id).slice(0, 8) : fmt.missing;
  }

  function eta(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(Number(seconds))) return null;
    const s = Math.max(0, Math.round(Number(seconds)));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  // --- uploads --------------------------------------------------------------------------------------
  function selectedClass() {
    const checked = form.querySelector('input[name="class_name"]:checked');
    return checked ? checked.value : "cats";
  }

  function updateSelection() {
    const n = fileInput.files ? fileInput.files.length : 0;
    uploadButton.disabled = uploading || n === 0;
    uploadButton.textContent = uploading ? "Uploading…" : n > 1 ? `Upload ${n} files` : "Upload files";
    setText("upload-selection", n ? `${plural(n, "file")} chosen.` : "No files chosen yet.");
  }

  /** One POST of up to FILES_PER_REQUEST files with upload progress; resolves the JSON body or throws ApiError. */
  function sendRequest(files, className, token, row) {
    const bar = row.querySelector("progress");
    const text = row.querySelector(".upload-request-text");
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/api/upload-training-data?class_name=${encodeURIComponent(className)}`);
      xhr.responseType = "json";
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.round((e.loaded / e.total) * 100);
        bar.value = pct;
        text.textContent = `Sending ${pct}% of ${fmt.bytes(e.total)}`;
      });
      xhr.upload.addEventListener("load", () => {
        bar.removeAttribute("value");
        text.textContent = `Checking ${plural(files.length, "image")}…`;
      });
      xhr.addEventListener("load", () => {
        const body = xhr.response;
        if (xhr.status >= 200 && xhr.status < 300 && body) {
          resolve(body);
          return;
        }
        let detail = `HTTP ${xhr.status}`;
        if (body && typeof body.detail === "string") detail = body.detail;
        else if (body && Array.isArray(body.detail)) detail = body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
        reject(new ApiError(xhr.status, detail));
      });
      const unreachable = () => reject(new ApiError(0, "The server could not be reached. Is it running?"));
      xhr.addEventListener("error", unreachable);
      xhr.addEventListener("timeout", unreachable);
      const data = new FormData();
      for (const file of files) data.append("files", file, file.name);
      bar.value = 0;
      text.textContent = "Sending…";
      xhr.send(data);
    });
  }

  function requestRow(index, count, files) {
    const label = `Upload request ${index + 1} of ${count}`;
    const row = el("li", { className: "upload-request", dataset: { state: "waiting" } }, [
      el("span", { className: "upload-request-name small", text: `${label}: ${plural(files.length, "file")}` }),
      el("progress", { max: 100, attrs: { "aria-label": label } }),
      el("span", { className: "upload-request-text small", text: "Waiting" }),
    ]);
    requestsList.append(row);
    return row;
  }

  function outcomeItem(status, filename, detail) {
    const badge = { stored: "badge-ok", duplicate: "badge-warn", conflict: "badge-error", error: "badge-error" }[status];
    return el("li", { dataset: { status } }, [
      el("span", { className: `badge ${badge}`, text: status }),
      " ",
      el("span", { className: "mono outcome-name", text: filename || "(unnamed)" }),
      detail ? el("span", { className: "muted", text: ` ${detail}` }) : null,
    ]);
  }

  /** The served model's verdict on an uploaded photo: "model: dog, P(cat) 3.1%" (nothing while no model serves). */
  function opinionText(entry, className) {
    if (!entry.predicted_class) return "";
    const verdict = entry.label_agrees === false ? "disagrees" : "agrees";
    const asked = className === "dogs" ? "dog" : "cat";
    return ` The model ${verdict}: ${entry.predicted_class}, P(${asked}) ${fmt.percent(entry.p_label, 1)}.`;
  }

  function duplicateText(entry) {
    if (entry.status === "conflict") return `label conflict: ${entry.detail || "already stored under the other class"}.`;
    if (entry.duplicate_of === "training set") return "is already in the base training set: not stored again.";
    if (entry.duplicate_of === "upload") return "was uploaded before: stored once.";
    return "is a duplicate: stored once.";
  }

  function showUploadResult(result, className) {
    const items = [
      ...result.stored.map((f) => outcomeItem("stored", f.filename, `as ${f.class || className}.${opinionText(f, className)}`)),
      ...result.duplicates.map((f) => outcomeItem(f.status === "conflict" ? "conflict" : "duplicate", f.filename, duplicateText(f))),
      ...result.errors.map((f) => outcomeItem("error", f.filename, f.error)),
    ];
    document.getElementById("upload-outcomes").replaceChildren(...items);
    setText("upload-stored", result.stored.length);
    setText("upload-duplicates", result.duplicates.length);
    setText("upload-errors", result.errors.length);
    document.getElementById("upload-result").hidden = false;
  }

  async function upload(event) {
    event.preventDefault();
    const files = Array.from(fileInput.files || []);
    if (!files.length || uploading) return;
    const className = selectedClass();
    uploading = true;
    fieldset.disabled = true;
    form.setAttribute("aria-busy", "true");
    updateSelection();
    requestsList.replaceChildren();
    document.getElementById("upload-result").hidden = true;
    const chunks = [];
    for (let i = 0; i < files.length; i += FILES_PER_REQUEST) chunks.push(files.slice(i, i + FILES_PER_REQUEST));
    const rows = chunks.map((chunk, i) => requestRow(i, chunks.length, chunk));
    const result = { stored: [], duplicates: [], errors: [] };
    setText("upload-status", `Uploading ${plural(files.length, "file")} as ${className}…`);
    let failure = null;
    for (let i = 0; i < chunks.length; i++) {
      const row = rows[i];
      row.dataset.state = "sending";
      try {
        const body = await withAdmin(
          (token) => sendRequest(chunks[i], className, token, row),
          "Uploading training images needs the admin token.",
        );
        const entries = body.files || [];
        const seen = new Set();
        for (const entry of [...entries, ...(body.duplicates || [])]) {
          const key = `${entry.sha256}/${entry.filename}`;
          if (seen.has(key)) continue;
          seen.add(key);
          (entry.status === "duplicate" || entry.status === "conflict" || entry.duplicate_of ? result.duplicates : result.stored).push(entry);
        }
        result.errors.push(...(body.errors || []));
        row.dataset.state = "done";
        row.querySelector("progress").value = 100;
        const dup = (body.duplicates || []).length;
        row.querySelector(".upload-request-text").textContent =
          `Done: ${body.uploaded ?? entries.length} stored, ${dup} duplicate${dup === 1 ? "" : "s"}, ` +
          `${plural((body.errors || []).length, "error")}`;
      } catch (err) {
        row.dataset.state = "error";
        row.querySelector("progress").value = 0;
        const reason = cancelledText(err, "Not uploaded") || `Failed${err.status ? ` (${err.status})` : ""}: ${err.message}`;
        row.querySelector(".upload-request-text").textContent = reason;
        for (const file of chunks[i]) result.errors.push({ filename: file.name, error: reason });
        failure = reason;
        if (err.cancelled || err.status === 0) {
          for (const rest of rows.slice(i + 1)) {
            rest.dataset.state = "error";
            rest.querySelector(".upload-request-text").textContent = "Not sent";
          }
          for (const chunk of chunks.slice(i + 1)) for (const file of chunk) result.errors.push({ filename: file.name, error: "not sent" });
          break;
        }
      }
    }
    showUploadResult(result, className);
    const summary =
      `${plural(result.stored.length, "file")} stored as ${className}, ` +
      `${plural(result.duplicates.length, "duplicate")}, ${plural(result.errors.length, "error")}.`;
    setText("upload-status", failure && !result.stored.length && !result.duplicates.length ? failure : `Upload finished: ${summary}`);
    uploading = false;
    fieldset.disabled = false;
    form.removeAttribute("aria-busy");
    if (result.stored.length || result.duplicates.length) {
      fileInput.value = "";
    }
    updateSelection();
    refreshDataset();
    loadUploads(false);
  }

  // --- the uploads list ---------------------------------------------------------------------------------
  let uploadsShown = 0;
  let uploadsTotal = 0;

  function thumb(u) {
    const name = u.filename || short(u.sha256);
    const label = u.class === "dogs" ? "dog" : u.class === "cats" ? "cat" : u.class;
    const remove = el("button", {
      className: "button button-small button-secondary upload-delete",
      type: "button",
      text: "Delete",
      attrs: { "aria-label": `Delete ${name} (${label})` },
    });
    const item = el("li", { className: "thumb", id: `upload-${u.sha256}`, dataset: { sha256: u.sha256, class: u.class } }, [
      el("img", {
        src: u.url || `/api/uploads/${encodeURIComponent(u.sha256)}/image`,
        alt: `Uploaded ${label} photo ${name}`,
        loading: "lazy",
        width: 112,
        height: 112,
      }),
      el("span", { className: "thumb-name mono small", text: name, title: name }),
      el("span", { className: "thumb-meta small muted" }, [
        `${label}${u.source === "feedback" ? " · from feedback" : ""}`,
        u.width && u.height ? ` · ${u.width}×${u.height}` : "",
        u.predicted_class ? ` · model: ${u.predicted_class} (P(${label}) ${fmt.percent(u.p_label, 0)})` : "",
      ]),
      u.quarantined
        ? el("span", { className: "badge badge-warn", text: "quarantined", title: u.quarantine_reason || "" })
        : u.kept_by_admin
          ? el("span", { className: "badge badge-info", text: "kept by an admin" })
          : null,
      remove,
    ]);
    remove.addEventListener("click", () => deleteUpload(u, item, name));
    return item;
  }

  async function loadUploads(append) {
    const offset = append ? uploadsShown : 0;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset) });
    if (filter.value) params.set("class_name", filter.value);
    try {
      const body = await api(`/api/uploads?${params}`);
      const items = (body.uploads || []).map(thumb);
      if (append) uploadsList.append(...items);
      else uploadsList.replaceChildren(...items);
      uploadsShown = offset + items.length;
      uploadsTotal = Number(body.total) || uploadsShown;
      showUploadCount();
      showMessage("uploads-list-error", "");
    } catch (err) {
      showMessage("uploads-list-error", `Uploads unavailable: ${err.message}`);
    }
  }

  function showUploadCount() {
    const which = filter.value ? ` of ${filter.value}` : "";
    setText(
      "uploads-count",
      uploadsTotal ? `Showing ${uploadsShown} of ${plural(uploadsTotal, "upload")}${which}.` : `No uploads${which} yet.`,
    );
    moreButton.hidden = uploadsShown >= uploadsTotal;
    if (!uploadsTotal) uploadsList.replaceChildren();
  }

  async function deleteUpload(u, item, name) {
    const ok = await confirmAction("Delete this upload?", `${name} will no longer be used by the next retraining.`, "Delete", "Keep it");
    if (!ok) return;
    try {
      await adminApi(`/api/uploads/${encodeURIComponent(u.sha256)}`, { method: "DELETE" }, "Deleting uploads needs the admin token.");
      const next = item.nextElementSibling || item.previousElementSibling;
      item.remove();
      uploadsShown = Math.max(0, uploadsShown - 1);
      uploadsTotal = Math.max(0, uploadsTotal - 1);
      showUploadCount();
      setText("upload-status", `Deleted ${name}.`);
      const focusTarget = next ? next.querySelector(".upload-delete") : document.getElementById("uploads-title");
      if (focusTarget) {
        if (!next) focusTarget.tabIndex = -1;
        focusTarget.focus();
      }
      refreshDataset();
    } catch (err) {
      setText("upload-status", cancelledText(err, "Not deleted") || `${name} was not deleted: ${err.message}`);
      if (err.status === 404) loadUploads(false);
    }
  }

  // --- dataset counts -----------------------------------------------------------------------------------
  async function refreshDataset() {
    try {
      const stats = await api("/api/dataset-stats");
      for (const part of ["training", "retraining", "testing"]) {
        const counts = stats[part] || {};
        const cells = document.querySelectorAll(`#dataset-${part} td`);
        cells[0].textContent = fmt.number(counts.cats ?? 0);
        cells[1].textContent = fmt.number(counts.dogs ?? 0);
        cells[2].textContent = fmt.number(counts.total ?? 0);
      }
      showMessage("uploads-error", "");
    } catch (err) {
      showMessage("uploads-error", `Dataset counts unavailable: ${err.message}`);
    }
  }

  // --- retraining ---------------------------------------------------------------------------------------
  function isActive(s) {
    return Boolean(s && (s.is_retraining || s.status === "queued" || s.status === "running"));
  }

  const PHASE_BADGE = { done: "badge-ok", failed: "badge-error", cancelled: "badge-warn" };

  function showProgress(s) {
    const box = document.getElementById("retrain-progress-box");
    box.hidden = !s.job_id;
    if (!s.job_id) return;
    const active = isActive(s);
    const phase = s.phase || s.status || "queued";
    const badge = document.getElementById("retrain-phase");
    badge.textContent = s.cancel_requested && active ? `${phase} (cancelling)` : phase;
    badge.className = `badge ${PHASE_BADGE[phase] || "badge-info"}`;
    setText("retrain-job-id", `job ${short(s.job_id)}`);
    document.getElementById("retrain-job-id").title = s.job_id;
    const bar = document.getElementById("retrain-progress");
    const percent = s.percent === null || s.percent === undefined ? null : Math.max(0, Math.min(100, Number(s.percent)));
    if (s.status === "succeeded") bar.value = 100;
    else if (percent === null) {
      if (active) bar.removeAttribute("value");
      else bar.value = 0;
    } else bar.value = percent;
    const parts = [];
    if (active) {
      parts.push(s.phase_detail || phase);
      if (percent !== null) parts.push(`${percent.toFixed(0)}%`);
      const left = eta(s.eta_seconds);
      if (left) parts.push(`about ${left} left`);
    } else {
      parts.push(FINISHED.has(s.status) ? s.status : phase); // phase_detail may still name the last step
      if (s.finished_at) parts.push(`finished ${fmt.time(s.finished_at)}`);
    }
    const text = parts.join(" · ");
    setText("retrain-progress-text", text);
    bar.setAttribute("aria-valuetext", text);
    cancelButton.hidden = !active;
    cancelButton.disabled = Boolean(s.cancel_requested);
    cancelButton.textContent = s.cancel_requested ? "Cancelling…" : "Cancel the job";
  }

  function showResult(s) {
    const box = document.getElementById("retrain-result");
    const finished = FINISHED.has(s.status);
    box.hidden = !finished;
    if (!finished) return;
    const summary = document.getElementById("retrain-result-summary");
    const gate = document.getElementById("retrain-gate");
    const metricsBox = document.getElementById("retrain-metrics");
    box.dataset.status = s.status;
    if (s.status === "succeeded") {
      summary.className = "";
      summary.textContent = `Job ${short(s.job_id)} registered model version ${s.version ?? fmt.missing}` +
        (s.finished_at ? ` at ${fmt.time(s.finished_at)}.` : ".");
    } else if (s.status === "failed") {
      summary.className = "notice notice-error";
      summary.textContent = `Job ${short(s.job_id)} failed: ${s.error || "no reason given"}`;
    } else {
      summary.className = "notice notice-warn";
      summary.textContent = `Job ${short(s.job_id)} was cancelled; nothing was registered.`;
    }
    if (s.gate) {
      gate.hidden = false;
      gate.className = `notice ${s.gate.promoted ? "notice-info" : "notice-warn"}`;
      gate.textContent = s.gate.promoted
        ? `Promotion gate: promoted to production. ${s.gate.reason || ""}`
        : `Promotion gate: kept as staging, production unchanged. ${s.gate.reason || ""}`;
    } else {
      gate.hidden = true;
    }
    const m = s.metrics;
    metricsBox.hidden = !m;
    if (m) {
      setText("retrain-accuracy", fmt.percent(m.accuracy, 2));
      setText("retrain-precision", fmt.percent(m.precision, 2));
      setText("retrain-recall", fmt.percent(m.recall, 2));
      setText("retrain-f1", fmt.percent(m.f1 ?? m.f1_score, 2));
      setText("retrain-roc-auc", fmt.number(m.roc_auc, 4));
    }
  }

  function announce(s) {
    if (!s.job_id) return;
    let message;
    if (s.status === "succeeded") {
      message = `Retraining finished: version ${s.version ?? "?"}` +
        (s.gate ? (s.gate.promoted ? ", promoted to production." : ", kept as staging.") : ".");
    } else if (s.status === "failed") message = `Retraining failed: ${s.error || "no reason given"}`;
    else if (s.status === "cancelled") message = "Retraining cancelled.";
    else message = `Retraining: ${s.phase || s.status}.`; // phases, not every percent: a calm live region
    const key = `${s.job_id}/${message}`;
    if (key === lastAnnounced) return;
    lastAnnounced = key;
    setText("retrain-live", message);
  }

  // The idle worker's feature-cache warming (catdog.jobs.warm): how fast the next retrain will be.
  function showCache(c) {
    const bar = document.getElementById("retrain-cache-progress");
    const state = c ? c.state : null;
    const counted = c && c.total ? `${fmt.number(c.done)}/${fmt.number(c.total)}` : "";
    let text = "unknown";
    let detail = "";
    if (state === "ready") {
      text = "fast retrain ready";
      detail = `Every backbone feature a retrain reads is cached (${fmt.number(c.total)} images × views, ${c.backbone}, ${c.precision}).`;
    } else if (state === "warming") {
      text = `warming ${counted}`;
      const eta = c.eta_seconds ? `, about ${Math.ceil(c.eta_seconds / 60)} min left` : "";
      const rate = c.images_per_second ? ` at ${c.images_per_second} images/s` : "";
      detail = `The idle worker computes ${c.backbone} features ahead of the next retrain${rate}${eta}; serving comes first.`;
    } else if (state === "paused") {
      text = counted ? `warming paused at ${counted}` : "warming paused";
      detail = c.reason || "A retrain is running; warming goes on when it ends.";
    } else if (state === "off") {
      text = "not warmed";
      detail = c.reason || "";
    } else if (state === "error") {
      text = "warming failed";
      detail = c.error || "";
    }
    setText("retrain-cache", text);
    setText("retrain-cache-detail", detail);
    const showBar = (state === "warming" || state === "paused") && c.total > 0;
    bar.hidden = !showBar;
    if (showBar) bar.value = (100 * c.done) / c.total;
  }

  function showStatus(s) {
    const previous = current;
    current = s;
    const active = isActive(s);
    setText("retrain-running", active ? "yes" : "no");
    setText("retrain-total", fmt.number(s.total_retrains));
    setText("retrain-last", s.last_retrain ? fmt.time(s.last_retrain) : "never");
    retrainButton.disabled = active;
    retrainButton.textContent = active ? "Retraining…" : "Start retraining";
    showProgress(s);
    showResult(s);
    showCache(s.feature_cache);
    if (previous) announce(s); // not on page load: only what changes while the page is open
    else lastAnnounced = `${s.job_id}/`;
    document.dispatchEvent(new CustomEvent("catdog:retrain-status", { detail: s })); // quarantine.js listens
    const changed = !previous || previous.job_id !== s.job_id || previous.status !== s.status;
    if (changed) loadJobs();
    if (previous && isActive(previous) && !active) {
      refreshDataset();
      refreshModel();
    }
  }

  let statusTimer = null;
  let statusBusy = false;

  async function refreshStatus() {
    window.clearTimeout(statusTimer);
    if (statusBusy) return;
    if (document.hidden) {
      statusTimer = window.setTimeout(refreshStatus, IDLE_MS);
      return;
    }
    statusBusy = true;
    try {
      showStatus(await api("/api/retrain-status"));
      showMessage("retrain-error", "");
    } catch (err) {
      showMessage("retrain-error", `Retraining status unavailable: ${err.message}`);
    } finally {
      statusBusy = false;
    }
    const every = isActive(current) ? ACTIVE_MS : IDLE_MS;
    setText("retrain-updated", `Updated ${fmt.clock()} · refreshes every ${every / 1000} s`);
    window.clearTimeout(statusTimer);
    statusTimer = window.setTimeout(refreshStatus, every);
  }

  async function startRetraining() {
    showMessage("retrain-message", "");
    retrainButton.disabled = true;
    const backbone = document.getElementById("retrain-backbone").value || null;
    try {
      const job = await adminApi(
        "/api/retrain",
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ backbone }) },
        "Starting a retraining job needs the admin token.",
      );
      setText("retrain-live", `Retraining job ${short(job.job_id)} queued.`);
    } catch (err) {
      let message = cancelledText(err, "Not started");
      if (!message && err.status === 409) message = `A retraining job is already queued or running: ${err.message}`;
      if (!message && err.status === 400) message = `Cannot retrain yet: ${err.message}`;
      showMessage("retrain-message", message || `Retraining did not start: ${err.message}`);
    }
    await refreshStatus();
  }

  async function cancelJob() {
    if (!current || !current.job_id) return;
    const id = current.job_id;
    const ok = await confirmAction(
      "Cancel the retraining job?",
      `Job ${short(id)} stops at its next checkpoint (between batches or epochs); no model version is registered and production stays as it is.`,
      "Cancel the job",
      "Keep it running",
    );
    if (!ok) return;
    cancelButton.disabled = true;
    try {
      await adminApi(`/api/retrain/${encodeURIComponent(id)}/cancel`, { method: "POST" }, "Cancelling a job needs the admin token.");
      setText("retrain-live", `Cancelling job ${short(id)}…`);
    } catch (err) {
      let message = cancelledText(err, "Not cancelled");
      if (!message && err.status === 409) message = `The job has already finished: ${err.message}`;
      showMessage("retrain-message", message || `The job was not cancelled: ${err.message}`);
    }
    await refreshStatus();
  }

  // --- job history --------------------------------------------------------------------------------------
  function duration(job) {
    if (!job.started_at) return fmt.missing;
    const end = job.finished_at ? new Date(job.finished_at) : new Date();
    const seconds = (end - new Date(job.started_at)) / 1000;
    return Number.isFinite(seconds) ? eta(seconds) : fmt.missing;
  }

  function jobRow(job) {
    const statusBadge = { succeeded: "badge-ok", failed: "badge-error", cancelled: "badge-warn" }[job.status] || "badge-info";
    let phase = job.phase_detail || job.phase || fmt.missing;
    if (job.status === "failed") phase = `failed: ${job.error || "no reason given"}`;
    else if (FINISHED.has(job.status)) phase = job.phase || job.status; // phase_detail may still name the last step
    const gate = job.gate
      ? el("span", {}, [
          el("span", { className: `badge ${job.gate.promoted ? "badge-ok" : "badge-warn"}`, text: job.gate.promoted ? "promoted" : "staging" }),
          job.gate.reason ? el("span", { className: "small muted gate-reason", text: ` ${job.gate.reason}` }) : null,
        ])
      : fmt.missing;
    return el("tr", { dataset: { jobId: job.job_id || "", status: job.status || "" } }, [
      el("th", { scope: "row", className: "mono", text: short(job.job_id), title: job.job_id || "" }),
      el("td", {}, [el("span", { className: `badge ${statusBadge}`, text: job.status || fmt.missing })]),
      el("td", { className: "small job-phase-cell", text: phase }),
      el("td", { text: fmt.time(job.started_at || job.created_at) }),
      el("td", { className: "num", text: duration(job) }),
      el("td", { className: "num", text: job.version ?? fmt.missing }),
      el("td", { className: "num", text: job.metrics ? fmt.percent(job.metrics.accuracy, 2) : fmt.missing }),
      el("td", {}, [gate]),
    ]);
  }

  async function loadJobs() {
    const rows = document.getElementById("jobs-rows");
    try {
      const body = await api("/api/retrain/jobs?limit=20");
      const jobs = body.jobs || [];
      rows.replaceChildren(
        ...(jobs.length ? jobs.map(jobRow) : [el("tr", {}, [el("td", { colSpan: 8, className: "muted", text: "No retraining job yet." })])]),
      );
      showMessage("jobs-error", "");
    } catch (err) {
      showMessage("jobs-error", `Job history unavailable: ${err.message}`);
    }
  }

  // --- the served model ---------------------------------------------------------------------------------
  async function refreshModel() {
    try {
      const status = await api("/api/status");
      setText("served-version", status.model_version || "(loading)");
      setText("served-backbone", status.backbone);
      setText("served-precision", status.precision);
      updateFooter(status);
    } catch (err) {
      setText("served-version", "unavailable");
    }
    try {
      const metrics = await modelMetrics();
      setText("served-accuracy", `${fmt.percent(metrics.accuracy, 2)} on ${fmt.number(metrics.n)} images`);
    } catch (err) {
      setText("served-accuracy", err.status === 404 ? "not evaluated" : "unavailable");
    }
  }

  // --- wiring -------------------------------------------------------------------------------------------
  fileInput.addEventListener("change", updateSelection);
  form.addEventListener("submit", upload);
  retrainButton.addEventListener("click", startRetraining);
  cancelButton.addEventListener("click", cancelJob);
  moreButton.addEventListener("click", () => loadUploads(true));
  filter.addEventListener("change", () => loadUploads(false));
  document.addEventListener("catdog:uploads-changed", () => {
    loadUploads(false); // an upload kept or deleted from the quarantine list (quarantine.js)
    refreshDataset();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshStatus();
  });

  updateSelection();
  refreshStatus();
  refreshDataset();
  loadUploads(false);
  refreshModel();
})();
