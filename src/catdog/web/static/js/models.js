/* Models page: the served model and its evaluation. The registry (versions, production/staging
 * aliases, promote and roll back) arrives with the retraining issue and fills the same table. */
(function () {
  "use strict";
  const { api, modelMetrics, fmt, el, setText, showMessage, updateFooter } = window.catdog;
  const PLOT_TITLES = {
    confusion_matrix: "Confusion matrix",
    roc_curve: "ROC curve",
    training_curves: "Training curves",
    worst_mistakes: "Most confident mistakes",
  };

  function modelRow(status, metrics) {
    const m = metrics || {};
    const cell = (text, cls) => el("td", { className: cls || "", text });
    return el("tr", { id: "model-row-served" }, [
      el("th", { scope: "row", className: "mono", text: status.model_version || "(loading)" }),
      cell(status.backbone || fmt.missing),
      cell(status.precision || fmt.missing),
      cell(metrics ? fmt.percent(m.accuracy, 2) : "not evaluated", "num"),
      cell(metrics ? fmt.number(m.roc_auc, 4) : fmt.missing, "num"),
      cell(metrics ? fmt.percent(m.f1_score, 2) : fmt.missing, "num"),
      el("td", {}, [el("span", { className: "badge badge-ok", text: "serving" })]),
      cell("none yet", "muted"),
    ]);
  }

  async function load() {
    let status;
    try {
      status = await api("/api/status");
    } catch (err) {
      showMessage("models-error", `Status unavailable: ${err.message}`);
      return;
    }
    updateFooter(status);
    let metrics = null;
    let missing = "";
    try {
      metrics = await modelMetrics();
    } catch (err) {
      missing = err.status === 404 ? `No evaluation for this model yet: ${err.message}` : `Metrics unavailable: ${err.message}`;
    }
    document.getElementById("models-rows").replaceChildren(modelRow(status, metrics));
    setText("model-version", status.model_version || "(loading)");
    setText("model-backbone", status.backbone);
    setText("model-precision", status.precision);
    setText("model-dir", status.model_dir);
    setText("model-evaluated", metrics ? `${fmt.number(metrics.n)} held-out images, ${fmt.time(metrics.timestamp)}` : "not evaluated");
    setText("model-log-loss", metrics ? fmt.number(metrics.log_loss, 4) : fmt.missing);
    showMessage("model-metrics-missing", missing);
    const plots = Object.entries((metrics && metrics.plots) || {});
    document.getElementById("model-plots").replaceChildren(
      ...(plots.length
        ? plots.map(([name, url]) => el("li", {}, [el("a", { href: url, text: PLOT_TITLES[name] || name.replace(/_/g, " ") })]))
        : [el("li", { className: "muted", text: "No plots for this model." })]),
    );
    setText("models-updated", `Updated ${fmt.clock()}`);
    if (!status.model_version) window.setTimeout(load, 3000); // still loading: look again
  }

  load();
})();
