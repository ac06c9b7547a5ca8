/* Home page: system status (live), the served model's evaluation and plots, dataset counts (live). */
(function () {
  "use strict";
  const { api, modelMetrics, poll, fmt, el, setText, showMessage, updateFooter } = window.catdog;
  const REFRESH_MS = 5000;
  const PLOT_TITLES = {
    confusion_matrix: "Confusion matrix",
    roc_curve: "ROC curve",
    training_curves: "Training curves",
    worst_mistakes: "Most confident mistakes",
  };

  let metricsVersion;

  function setBadge(status) {
    const badge = document.getElementById("status-state");
    const state = status.status || "unknown";
    badge.textContent = state;
    badge.className = "badge " + (state === "healthy" ? "badge-ok" : state === "failed" ? "badge-error" : "badge-warn");
  }

  async function refreshStatus() {
    let status;
    try {
      status = await api("/api/status");
    } catch (err) {
      showMessage("status-error", `Status unavailable: ${err.message}`);
      setText("status-updated", `Last attempt ${fmt.clock()}`);
      return;
    }
    showMessage("status-error", "");
    setBadge(status);
    setText("status-uptime", status.uptime || fmt.duration(status.uptime_seconds));
    setText("status-predictions", fmt.number(status.total_predictions));
    setText("status-model-version", status.model_version || "(loading)");
    setText("status-backbone", [status.backbone, status.precision].filter(Boolean).join(" · ") || fmt.missing);
    setText("status-queue", `${fmt.number(status.queue_depth)} image${status.queue_depth === 1 ? "" : "s"}`);
    const retrains = fmt.number(status.total_retrains) + (status.is_retraining ? " (one running)" : "");
    setText("status-retrains", retrains);
    const b = status.batching || {};
    setText(
      "status-batching",
      b.max_batch_size ? `up to ${b.max_batch_size} images, waits ≤ ${fmt.number(b.max_batch_wait_ms)} ms` : fmt.missing,
    );
    setText("status-updated", `Updated ${fmt.clock()} · refreshes every ${REFRESH_MS / 1000} s`);
    updateFooter(status);
    if (status.model_version && status.model_version !== metricsVersion) {
      metricsVersion = status.model_version;
      refreshMetrics();
    }
  }

  function plotFigure(name, url) {
    const title = PLOT_TITLES[name] || name.replace(/_/g, " ");
    const img = el("img", {
      src: url,
      alt: `${title} of the served model on its test images`,
      loading: "lazy",
      attrs: { width: 480, height: 360 },
    });
    const link = el("a", { href: url, attrs: { "aria-label": `${title} (full size)` } }, [img]);
    return el("figure", { className: "plot" }, [link, el("figcaption", { text: title })]);
  }

  async function refreshMetrics() {
    let metrics;
    try {
      metrics = await modelMetrics();
    } catch (err) {
      document.getElementById("metrics-body").hidden = true;
      const message =
        err.status === 404
          ? `No evaluation for this model yet: ${err.message}`
          : `Metrics unavailable: ${err.message}`;
      showMessage("metrics-missing", message);
      setText("metrics-source", "");
      return;
    }
    showMessage("metrics-missing", "");
    document.getElementById("metrics-body").hidden = false;
    setText("metric-accuracy", fmt.percent(metrics.accuracy, 2));
    setText("metric-precision", fmt.percent(metrics.precision, 2));
    setText("metric-recall", fmt.percent(metrics.recall, 2));
    setText("metric-f1", fmt.percent(metrics.f1_score, 2));
    setText("metric-roc-auc", fmt.number(metrics.roc_auc, 4));
    setText("metric-log-loss", fmt.number(metrics.log_loss, 4));
    const cm = metrics.confusion_matrix;
    if (Array.isArray(cm) && cm.length === 2) {
      setText("cm-tn", fmt.number(cm[0][0]));
      setText("cm-fp", fmt.number(cm[0][1]));
      setText("cm-fn", fmt.number(cm[1][0]));
      setText("cm-tp", fmt.number(cm[1][1]));
    }
    const when = metrics.timestamp ? `, evaluated ${fmt.time(metrics.timestamp)}` : "";
    setText("metrics-source", `${fmt.number(metrics.n)} test images${when}`);
    const gallery = document.getElementById("metrics-plots");
    const plots = Object.entries(metrics.plots || {});
    gallery.replaceChildren(
      ...(plots.length
        ? plots.map(([name, url]) => plotFigure(name, url))
        : [el("p", { className: "muted", text: "This model has no plots." })]),
    );
  }

  function fillDatasetRow(id, counts) {
    const row = document.getElementById(id);
    const cells = row.querySelectorAll("td");
    const c = counts || {};
    cells[0].textContent = fmt.number(c.cats);
    cells[1].textContent = fmt.number(c.dogs);
    cells[2].textContent = fmt.number(c.total);
    const total = Number(c.total) || 0;
    const catShare = total ? Number(c.cats || 0) / total : 0;
    const label = total ? `${fmt.percent(catShare, 0)} cats, ${fmt.percent(1 - catShare, 0)} dogs` : "empty";
    const bar = el("div", { className: "balance", attrs: { role: "img", "aria-label": label } }, [
      el("span", { className: "balance-cats", style: `width:${(catShare * 100).toFixed(1)}%` }),
      el("span", { className: "balance-dogs", style: `width:${total ? ((1 - catShare) * 100).toFixed(1) : 0}%` }),
    ]);
    cells[3].replaceChildren(total ? bar : el("span", { className: "muted", text: "empty" }));
  }

  async function refreshDataset() {
    let stats;
    try {
      stats = await api("/api/dataset-stats");
    } catch (err) {
      showMessage("dataset-error", `Dataset statistics unavailable: ${err.message}`);
      return;
    }
    showMessage("dataset-error", "");
    fillDatasetRow("dataset-training", stats.training);
    fillDatasetRow("dataset-testing", stats.testing);
    fillDatasetRow("dataset-retraining", stats.retraining);
    setText("dataset-dir", stats.data_dir ? `from ${stats.data_dir}` : "");
  }

  document.addEventListener("DOMContentLoaded", () => {
    poll(() => Promise.all([refreshStatus(), refreshDataset()]), REFRESH_MS);
  });
})();
