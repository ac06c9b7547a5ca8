/* Retrain page: what exists today (upload-folder counts, retraining status, the served model).
 * Uploading and starting a job arrive with the retraining issue; their controls stay disabled. */
(function () {
  "use strict";
  const { api, modelMetrics, poll, fmt, setText, showMessage, updateFooter } = window.catdog;
  const REFRESH_MS = 5000;

  async function refreshUploads() {
    try {
      const stats = await api("/api/dataset-stats");
      const uploads = stats.retraining || {};
      setText("uploads-cats", fmt.number(uploads.cats));
      setText("uploads-dogs", fmt.number(uploads.dogs));
      setText("uploads-total", fmt.number(uploads.total));
      showMessage("uploads-error", "");
    } catch (err) {
      showMessage("uploads-error", `Upload folders unavailable: ${err.message}`);
    }
  }

  async function refreshRetrain() {
    try {
      const s = await api("/api/retrain-status");
      setText("retrain-running", s.is_retraining ? "yes" : "no");
      setText("retrain-total", fmt.number(s.total_retrains));
      setText("retrain-last", s.last_retrain ? fmt.time(s.last_retrain) : "never");
      const progress = typeof s.progress === "number" ? s.progress : null;
      document.getElementById("retrain-progress-box").hidden = progress === null;
      if (progress !== null) {
        const pct = progress <= 1 ? progress * 100 : progress;
        document.getElementById("retrain-progress").value = pct;
        setText("retrain-progress-text", `${pct.toFixed(0)}%`);
      }
      showMessage("retrain-error", "");
    } catch (err) {
      showMessage("retrain-error", `Retraining status unavailable: ${err.message}`);
    }
    setText("retrain-updated", `Updated ${fmt.clock()} · refreshes every ${REFRESH_MS / 1000} s`);
  }

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
  }

  async function loadAccuracy() {
    try {
      const metrics = await modelMetrics();
      setText("served-accuracy", `${fmt.percent(metrics.accuracy, 2)} on ${fmt.number(metrics.n)} images`);
    } catch (err) {
      setText("served-accuracy", err.status === 404 ? "not evaluated" : "unavailable");
    }
  }

  document.getElementById("upload-form").addEventListener("submit", (event) => event.preventDefault());
  poll(() => Promise.all([refreshUploads(), refreshRetrain(), refreshModel()]), REFRESH_MS);
  loadAccuracy();
})();
