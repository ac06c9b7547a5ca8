/* Monitoring page: Chart.js (served from /static/vendor) over GET /api/monitoring and
 * GET /api/dataset-stats, refreshed every 5 s while the tab is visible. */
(function () {
  "use strict";
  const { api, poll, fmt, el, setText, showMessage } = window.catdog;
  const Chart = window.Chart;
  const REFRESH_MS = 5000;
  const DATASET_EVERY = 6; // dataset folders are counted every 6th refresh (30 s)
  const SYSTEM_SAMPLES = 120; // 10 minutes of 5 s samples
  const COLORS = {
    blue: "#2563eb",
    orange: "#c2410c",
    cat: "#7c3aed",
    dog: "#b45309",
    green: "#15803d",
    gray: "#9ca3af",
    teal: "#0f766e",
  };

  const charts = {};
  const systemSamples = { labels: [], cpu: [], memory: [] };
  let ticks = 0;

  // --- Chart.js set-up -------------------------------------------------------------------------------
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#374151";
  Chart.defaults.borderColor = "#e5e7eb";
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation.duration = 300;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  function axis(title, extra) {
    return Object.assign({ title: { display: Boolean(title), text: title }, beginAtZero: true }, extra || {});
  }

  function makeChart(key, config) {
    const canvas = document.getElementById(`chart-${key}`);
    charts[key] = new Chart(canvas, config);
    return charts[key];
  }

  function createCharts() {
    makeChart("requests", {
      type: "bar",
      data: {
        labels: [],
        datasets: [
          { label: "Requests", data: [], backgroundColor: COLORS.blue, order: 2 },
          {
            label: "Images predicted",
            data: [],
            type: "line",
            borderColor: COLORS.orange,
            backgroundColor: COLORS.orange,
            pointRadius: 0,
            borderWidth: 2,
            order: 1,
          },
        ],
      },
      options: { scales: { x: axis("", { ticks: { maxTicksLimit: 8 } }), y: axis("per minute", { ticks: { precision: 0 } }) } },
    });
    makeChart("latency", {
      type: "line",
      data: {
        labels: [],
        datasets: [
          { label: "p50", data: [], borderColor: COLORS.blue, backgroundColor: COLORS.blue, pointRadius: 2, spanGaps: false },
          { label: "p95", data: [], borderColor: COLORS.orange, backgroundColor: COLORS.orange, pointRadius: 2, spanGaps: false },
        ],
      },
      options: { scales: { x: axis("", { ticks: { maxTicksLimit: 8 } }), y: axis("ms") } },
    });
    makeChart("classes", {
      type: "doughnut",
      data: { labels: ["Cat", "Dog"], datasets: [{ data: [0, 0], backgroundColor: [COLORS.cat, COLORS.dog] }] },
      options: { plugins: { legend: { position: "bottom" } } },
    });
    makeChart("confidence", {
      type: "bar",
      data: { labels: [], datasets: [{ label: "Predictions", data: [], backgroundColor: COLORS.teal }] },
      options: {
        plugins: { legend: { display: false } },
        scales: { x: axis("confidence"), y: axis("predictions", { ticks: { precision: 0 } }) },
      },
    });
    makeChart("batches", {
      type: "bar",
      data: { labels: [], datasets: [{ label: "Predictions", data: [], backgroundColor: COLORS.blue }] },
      options: {
        plugins: { legend: { display: false } },
        scales: { x: axis("images per run"), y: axis("predictions", { ticks: { precision: 0 } }) },
      },
    });
    makeChart("cache", {
      type: "doughnut",
      data: { labels: ["Cache hits", "Computed"], datasets: [{ data: [0, 0], backgroundColor: [COLORS.green, COLORS.gray] }] },
      options: { plugins: { legend: { position: "bottom" } } },
    });
    makeChart("dataset", {
      type: "bar",
      data: {
        labels: ["Training", "Testing", "Uploads"],
        datasets: [
          { label: "Cats", data: [], backgroundColor: COLORS.cat },
          { label: "Dogs", data: [], backgroundColor: COLORS.dog },
        ],
      },
      options: { scales: { y: axis("images", { ticks: { precision: 0 } }) } },
    });
    makeChart("system", {
      type: "line",
      data: {
        labels: systemSamples.labels,
        datasets: [
          { label: "CPU %", data: systemSamples.cpu, borderColor: COLORS.blue, backgroundColor: COLORS.blue, pointRadius: 1.5 },
          { label: "Memory %", data: systemSamples.memory, borderColor: COLORS.cat, backgroundColor: COLORS.cat, pointRadius: 1.5 },
        ],
      },
      options: { scales: { x: axis("", { ticks: { maxTicksLimit: 6 } }), y: axis("%", { max: 100 }) } },
    });
  }

  /** Replace a chart's data, say whether there is any, and describe it for screen readers. */
  function update(key, labels, datasets, hasData, description) {
    const chart = charts[key];
    if (labels) chart.data.labels = labels;
    datasets.forEach((data, i) => {
      chart.data.datasets[i].data = data;
    });
    chart.update(chart.$drawnOnce ? "none" : undefined);
    chart.$drawnOnce = true;
    document.getElementById(`chart-${key}-empty`).hidden = hasData;
    const title = document.getElementById(`chart-${key}-title`).textContent;
    chart.canvas.setAttribute("aria-label", `${title}: ${hasData ? description : "not enough data yet"}`);
  }

  function minuteLabel(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function sum(values) {
    return values.reduce((a, b) => a + (Number(b) || 0), 0);
  }

  // --- the figures ------------------------------------------------------------------------------------
  function showTraffic(m) {
    const rows = Array.isArray(m.per_minute) ? m.per_minute : [];
    const labels = rows.map((r) => minuteLabel(r.minute));
    const requests = rows.map((r) => r.requests ?? 0);
    const images = rows.map((r) => r.predictions ?? 0);
    const totalRequests = sum(requests);
    const peak = requests.length ? Math.max(...requests) : 0;
    update("requests", labels, [requests, images], totalRequests > 0, `${totalRequests} requests, at most ${peak} in a minute`);

    const p50 = rows.map((r) => r.latency_p50_ms ?? null);
    const p95 = rows.map((r) => r.latency_p95_ms ?? null);
    const lat = m.latency || {};
    update(
      "latency",
      labels,
      [p50, p95],
      p50.some((v) => v !== null),
      `p50 ${fmt.ms(lat.p50_ms)}, p95 ${fmt.ms(lat.p95_ms)} over the window`,
    );

    const minutes = (m.window && m.window.minutes) || rows.length || 1;
    setText("kpi-predictions", fmt.number(m.window_predictions ?? sum(images)));
    setText("kpi-rpm", fmt.number(totalRequests / minutes, 2));
    setText("kpi-p50", fmt.ms(lat.p50_ms));
    setText("kpi-p95", fmt.ms(lat.p95_ms));
    setText("kpi-total", fmt.number(m.total_predictions));
    setText("kpi-queue", fmt.number(m.queue_depth));
  }

  function showClasses(m) {
    const classes = m.classes || {};
    const cats = classes.cat ?? 0;
    const dogs = classes.dog ?? 0;
    update("classes", null, [[cats, dogs]], cats + dogs > 0, `${cats} cats, ${dogs} dogs`);

    const hist = m.confidence_histogram || {};
    const edges = Array.isArray(hist.edges) ? hist.edges : [];
    const counts = Array.isArray(hist.counts) ? hist.counts : [];
    const labels = counts.map((_, i) =>
      edges.length > i + 1 ? `${Number(edges[i]).toFixed(2)}–${Number(edges[i + 1]).toFixed(2)}` : `bin ${i + 1}`,
    );
    const total = sum(counts);
    const top = counts.length ? counts.indexOf(Math.max(...counts)) : -1;
    update("confidence", labels, [counts], total > 0, `${total} predictions, most between ${labels[top] || "–"}`);

    const sizes = Array.isArray(m.batch_sizes) ? m.batch_sizes : [];
    const batchTotal = sum(sizes.map((b) => b.predictions));
    update(
      "batches",
      sizes.map((b) => String(b.size)),
      [sizes.map((b) => b.predictions)],
      batchTotal > 0,
      sizes.map((b) => `${b.predictions} predictions in runs of ${b.size}`).join(", "),
    );

    const cache = m.cache || {};
    const hits = cache.hits ?? 0;
    const misses = cache.misses ?? 0;
    charts.cache.options.plugins.title = {
      display: cache.hit_rate !== null && cache.hit_rate !== undefined,
      text: `Hit rate ${fmt.percent(cache.hit_rate, 1)}`,
    };
    update("cache", null, [[hits, misses]], hits + misses > 0, `${hits} hits, ${misses} computed`);
    setText("kpi-cache", fmt.percent(cache.hit_rate, 1));

    const pet = m.not_a_pet || {};
    setText(
      "kpi-not-pet",
      pet.checked ? `${fmt.percent(pet.share, 1)} (${fmt.number(pet.flagged)} of ${fmt.number(pet.checked)})` : fmt.missing,
    );
  }

  function showSystem(system) {
    if (!system) return;
    setText("sys-cpu", `${fmt.number(system.cpu_percent, 1)}% of ${fmt.number(system.cpu_count)} cores`);
    setText(
      "sys-load",
      Array.isArray(system.load_average) ? system.load_average.map((v) => Number(v).toFixed(2)).join(", ") : fmt.missing,
    );
    setText(
      "sys-memory",
      `${fmt.number(system.memory_percent, 1)}% (${fmt.bytes(system.memory_used_bytes)} of ${fmt.bytes(system.memory_total_bytes)})`,
    );
    setText("sys-rss", fmt.bytes(system.process_rss_bytes));
    setText("sys-uptime", fmt.duration(system.uptime_seconds));

    systemSamples.labels.push(fmt.clock());
    systemSamples.cpu.push(system.cpu_percent ?? null);
    systemSamples.memory.push(system.memory_percent ?? null);
    if (systemSamples.labels.length > SYSTEM_SAMPLES) {
      systemSamples.labels.shift();
      systemSamples.cpu.shift();
      systemSamples.memory.shift();
    }
    update(
      "system",
      systemSamples.labels,
      [systemSamples.cpu, systemSamples.memory],
      systemSamples.labels.length > 0,
      `CPU ${fmt.number(system.cpu_percent, 1)}%, memory ${fmt.number(system.memory_percent, 1)}%`,
    );
  }

  // --- drift ------------------------------------------------------------------------------------------
  /* A drift report comes as stored by the database layer (ks_statistic, ks_p_value, psi,
   * prediction_drift, domain_auc, domain_threshold, feature_drift, window_size, created_at, details)
   * with the full catdog.ml.drift report in `details` ({prediction: {...}, feature: {...}, ...}),
   * or as that report itself. Thresholds come from the report, never from this page. */
  function first(...values) {
    for (const v of values) if (v !== undefined && v !== null) return v;
    return null;
  }

  function normalizeDrift(raw) {
    const details = raw.details && typeof raw.details === "object" ? raw.details : {};
    const report = details.prediction || details.feature ? details : raw;
    const p = report.prediction || {};
    const f = report.feature || {};
    const values = report.values || {};
    return {
      ksP: first(raw.ks_p_value, p.ks_p_value, values.ks_p_value),
      ksStat: first(raw.ks_statistic, p.ks_statistic, values.ks_statistic),
      ksAlpha: first(p.ks_p_value_threshold, raw.ks_p_value_threshold),
      psi: first(raw.psi, p.psi, values.psi),
      psiThreshold: first(p.psi_threshold, raw.psi_threshold),
      predictionDrift: first(raw.prediction_drift, p.drift),
      predictionReason: p.reason || null,
      predictionTest: p.test || null,
      auc: first(raw.domain_auc, f.roc_auc, values.domain_auc),
      aucThreshold: first(raw.domain_threshold, f.auc_threshold),
      featureDrift: first(raw.feature_drift, f.drift),
      featureReason: f.reason || null,
      featureTest: f.test || null,
      window: first(raw.window_size, report.window_size),
      at: first(raw.created_at, report.computed_at),
      version: raw.model_version || null,
    };
  }

  function verdict(id, drift) {
    const badge = document.getElementById(id);
    if (drift === null || drift === undefined) {
      badge.textContent = "no verdict";
      badge.className = "badge";
    } else {
      badge.textContent = drift ? "drift" : "no drift";
      badge.className = "badge " + (drift ? "badge-error" : "badge-ok");
    }
  }

  /** "K-S p-value 0.31 (drift below 0.05)": every figure with its test's name and threshold. */
  function figure(name, value, rule, threshold) {
    if (value === null || value === undefined) return `${name} ${fmt.missing}`;
    const shown = Math.abs(value) >= 0.001 || value === 0 ? Number(value).toFixed(3) : Number(value).toExponential(1);
    const limit = threshold === null ? "" : ` (drift ${rule} ${Number(Number(threshold).toFixed(3))})`;
    return `${name} ${shown}${limit}`;
  }

  function showCheck(kind, figures, checked, reason, test) {
    document.getElementById(`drift-${kind}-figures`).hidden = !checked;
    const why = document.getElementById(`drift-${kind}-reason`);
    why.textContent = checked ? "" : `Not enough data yet: ${reason || "this check has not run"}.`;
    why.hidden = checked;
    setText(`drift-${kind}-test`, test ? `Test: ${test}.` : "");
    for (const [id, text] of figures) setText(id, text);
  }

  function showDrift(raw, reason) {
    const body = document.getElementById("drift-body");
    if (!raw) {
      body.hidden = true;
      showMessage(
        "drift-empty",
        `Not enough data yet: ${reason || "a drift report needs recent predictions and the model's drift reference"}.`,
      );
      setText("drift-meta", "");
      return;
    }
    const d = normalizeDrift(raw);
    showMessage("drift-empty", "");
    body.hidden = false;
    const predictionChecked = d.ksP !== null && d.psi !== null;
    showCheck(
      "prediction",
      predictionChecked
        ? [
            ["drift-ks", figure("K-S p-value", d.ksP, "below", d.ksAlpha)],
            ["drift-ks-stat", figure("K-S statistic", d.ksStat, "", null)],
            ["drift-psi", figure("PSI", d.psi, "above", d.psiThreshold)],
          ]
        : [],
      predictionChecked,
      d.predictionReason,
      d.predictionTest,
    );
    verdict("drift-prediction-verdict", predictionChecked ? d.predictionDrift : null);
    const featureChecked = d.auc !== null;
    showCheck(
      "feature",
      featureChecked ? [["drift-auc", figure("Domain classifier ROC-AUC", d.auc, "above", d.aucThreshold)]] : [],
      featureChecked,
      d.featureReason,
      d.featureTest,
    );
    verdict("drift-feature-verdict", featureChecked ? d.featureDrift : null);
    setText(
      "drift-meta",
      [
        d.window !== null ? `${fmt.number(d.window)} recent predictions` : null,
        d.at ? `checked ${fmt.time(d.at)}` : null,
        d.version ? `model ${d.version}` : null,
      ]
        .filter(Boolean)
        .join(", "),
    );
  }

  // --- model versions side by side --------------------------------------------------------------------
  function counted(n, word) {
    const k = Number(n) || 0;
    return `${fmt.number(k)} ${word}${k === 1 ? "" : "s"}`;
  }

  function showVersions(versions) {
    const rows = document.getElementById("versions-rows");
    const list = Array.isArray(versions) ? versions : [];
    if (!list.length) {
      rows.replaceChildren(
        el("tr", {}, [el("td", { colSpan: 8, className: "muted", text: "No predictions in the window yet." })]),
      );
      return;
    }
    const total = sum(list.map((v) => Number(v.predictions) || 0));
    rows.replaceChildren(
      ...list.map((v) => {
        const feedback = v.feedback || {};
        // live accuracy counts each picture once per version (the first verdict on it): say from how
        // many pictures and clients it comes, and how many verdicts were given in all
        const accuracy =
          feedback.accuracy === null || feedback.accuracy === undefined
            ? "no feedback yet"
            : `${fmt.percent(feedback.accuracy, 1)} (${fmt.number(feedback.correct)} of ${fmt.number(feedback.n)} right) ` +
              `from ${counted(feedback.pictures ?? feedback.n, "picture")}, ${counted(feedback.clients, "client")}`;
        const given = Number(feedback.given ?? feedback.n) || 0;
        const verdicts =
          given > (Number(feedback.n) || 0)
            ? `${fmt.number(given)} (${fmt.number(feedback.n ?? 0)} counted)`
            : fmt.number(given);
        const num = (text) => el("td", { className: "num", text });
        return el("tr", { dataset: { modelVersion: v.model_version || "" } }, [
          el("th", { scope: "row", className: "mono", text: v.model_version || fmt.missing }),
          num(v.registry_version === null || v.registry_version === undefined ? fmt.missing : `v${v.registry_version}`),
          num(fmt.number(v.predictions)),
          num(total ? fmt.percent((Number(v.predictions) || 0) / total, 1) : fmt.missing),
          num(fmt.percent(v.mean_confidence, 1)),
          num(
            v.latency_p50_ms !== null && v.latency_p50_ms !== undefined
              ? `${fmt.ms(v.latency_p50_ms)} p50`
              : v.mean_latency_ms !== null && v.mean_latency_ms !== undefined
                ? `${fmt.ms(v.mean_latency_ms)} mean`
                : fmt.missing,
          ),
          num(verdicts),
          num(accuracy),
        ]);
      }),
    );
  }

  // --- refresh ----------------------------------------------------------------------------------------
  async function refreshDataset() {
    const stats = await api("/api/dataset-stats");
    const folders = [stats.training, stats.testing, stats.retraining].map((f) => f || {});
    const cats = folders.map((f) => f.cats ?? 0);
    const dogs = folders.map((f) => f.dogs ?? 0);
    update(
      "dataset",
      null,
      [cats, dogs],
      sum(cats) + sum(dogs) > 0,
      `training ${cats[0]} cats and ${dogs[0]} dogs, testing ${cats[1]} and ${dogs[1]}, uploads ${cats[2]} and ${dogs[2]}`,
    );
  }

  async function refresh() {
    const minutes = document.getElementById("window-select").value;
    const jobs = [api(`/api/monitoring?minutes=${encodeURIComponent(minutes)}`)];
    if (ticks % DATASET_EVERY === 0) jobs.push(refreshDataset());
    ticks += 1;
    const [outcome, datasetOutcome] = await Promise.allSettled(jobs);
    const problems = [];
    if (outcome.status === "fulfilled") {
      const m = outcome.value;
      showTraffic(m);
      showClasses(m);
      showSystem(m.system);
      showDrift(m.drift, m.drift_reason);
      showVersions(m.versions);
    } else {
      problems.push(`Monitoring figures unavailable: ${outcome.reason.message}`);
    }
    if (datasetOutcome && datasetOutcome.status === "rejected") {
      problems.push(`Dataset statistics unavailable: ${datasetOutcome.reason.message}`);
    }
    showMessage("monitoring-error", problems.join(" "));
    setText(
      "monitoring-updated",
      `Updated ${fmt.clock()}` + (poller && poller.paused ? " · live refresh paused" : ` · refreshes every ${REFRESH_MS / 1000} s`),
    );
  }

  createCharts();
  let poller = null;
  poller = poll(refresh, REFRESH_MS);

  const toggle = document.getElementById("refresh-toggle");
  toggle.addEventListener("click", () => {
    if (poller.paused) {
      poller.start();
      toggle.textContent = "Pause live refresh";
    } else {
      poller.stop();
      toggle.textContent = "Resume live refresh";
      setText("monitoring-updated", `Live refresh paused at ${fmt.clock()}`);
    }
  });
  document.getElementById("window-select").addEventListener("change", () => {
    refresh().catch(() => {});
  });
})();
