/* Models page: the registry's versions (GET /api/models) with their test metrics, aliases, gate
 * verdict with each check's figures, the gate's reference version, and lineage; which version
 * each alias serves right now; promote and roll back (admin, confirmed first); two versions'
 * plots side by side. */
(function () {
  "use strict";
  const { api, adminApi, confirmAction, fmt, el, setText, showMessage, updateFooter } = window.catdog;
  const REFRESH_MS = 10000;
  const SETTLING_MS = 2000; // after a promote or rollback, until every alias serves its version
  const PLOT_TITLES = {
    confusion_matrix: "Confusion matrix",
    roc_curve: "ROC curve",
    training_curves: "Training curves",
    worst_mistakes: "Most confident mistakes",
  };
  const ALIAS_BADGE = { production: "badge-ok", staging: "badge-warn" };
  const VERDICT_BADGE = {
    promoted: "badge-ok",
    staging: "badge-warn",
    manual: "badge-info",
    shipped: "badge-info",
    interrupted: "badge-error", // its job stopped while registering it (catdog.jobs.reconcile)
  };

  const rows = document.getElementById("models-rows");
  const rollbackButton = document.getElementById("rollback-button");
  const compareA = document.getElementById("compare-a");
  const compareB = document.getElementById("compare-b");

  let registry = null;
  let busy = false;
  let timer = null;
  let settleUntil = 0;
  let lastServing = null;

  function plotTitle(name) {
    return PLOT_TITLES[name] || name.replace(/_/g, " ");
  }

  function aliasBadges(aliases) {
    return (aliases || []).map((alias) =>
      el("span", { className: `badge ${ALIAS_BADGE[alias] || ""} alias-badge`, text: alias, dataset: { alias } }),
    );
  }

  function servedAliases(v) {
    const served = (registry && registry.served) || {};
    return Object.entries(served)
      .filter(([, s]) => s && s.version === v.version)
      .map(([alias]) => alias);
  }

  // the gate's checks (GET /api/models: versions[].gate.checks), each one line with its figures
  const CHECK_TITLES = { production: "vs production", mcnemar: "McNemar", reference: "vs reference", floor: "floor" };

  function checkFigures(c) {
    const pct = (x) => fmt.percent(x, 2);
    if (c.name === "production" && c.production_accuracy !== undefined)
      return `${pct(c.accuracy)} vs ${pct(c.production_accuracy)} (v${c.production_version}), tolerance ${pct(c.tolerance)}`;
    if (c.name === "mcnemar" && !c.skipped && c.p_value !== undefined)
      return `b ${c.b}, c ${c.c} of ${fmt.number(c.n)}: p ${c.p_value < 0.001 ? "< 0.001" : fmt.number(c.p_value, 3)} (α ${c.alpha})`;
    if (c.name === "mcnemar" && c.skipped) return "not run: no paired predictions (another backbone)";
    if (c.name === "reference" && c.reference_accuracy !== undefined)
      return `${pct(c.accuracy)} vs ${pct(c.reference_accuracy)} (v${c.reference_version}${c.source ? `, ${c.source}` : ""})`;
    if (c.name === "floor" && c.accuracy !== undefined)
      return `${pct(c.accuracy)} ${c.passed ? "≥" : "<"} ${pct(c.min_accuracy)}`;
    return c.detail || "";
  }

  function gateChecks(checks) {
    return el(
      "ul",
      { className: "gate-checks" },
      checks.map((c) => {
        const state = c.skipped ? "skipped" : c.passed ? "passed" : "failed";
        const mark = { passed: "✓", failed: "✗", skipped: "–" }[state];
        const item = { className: `gate-check gate-check-${state}`, dataset: { check: c.name, state }, attrs: { title: c.detail || "" } };
        return el("li", item, [
          el("span", { className: "gate-check-mark", text: mark, attrs: { "aria-hidden": "true" } }),
          el("span", { className: "visually-hidden", text: `${state}: ` }),
          el("span", { className: "gate-check-name", text: `${CHECK_TITLES[c.name] || c.name} ` }),
          el("span", { className: "gate-check-figures", text: checkFigures(c) }),
        ]);
      }),
    );
  }

  function gateCell(v) {
    const gate = v.gate || {};
    const checks = Array.isArray(gate.checks) ? gate.checks : [];
    if (!gate.verdict && !gate.reason && !checks.length) return el("td", { className: "muted", text: fmt.missing });
    return el("td", { className: "gate" }, [
      gate.verdict ? el("span", { className: `badge ${VERDICT_BADGE[gate.verdict] || ""}`, text: gate.verdict }) : null,
      // with checks, each says its part of the reason; without (shipped, older versions) the reason itself
      gate.reason && !checks.length ? el("span", { className: "small gate-reason", text: gate.reason }) : null,
      checks.length ? gateChecks(checks) : null,
    ]);
  }

  function versionRow(v) {
    const m = v.metrics || {};
    const isProduction = registry.production === v.version || (v.aliases || []).includes("production");
    const promote = el("button", {
      className: "button button-small button-secondary promote-button",
      type: "button",
      text: isProduction ? "Production" : "Promote",
      disabled: isProduction || busy,
      attrs: { "aria-label": isProduction ? `Version ${v.version} is production` : `Promote version ${v.version} to production` },
    });
    promote.addEventListener("click", () => promoteVersion(v));
    const served = servedAliases(v);
    const num = (text) => el("td", { className: "num", text });
    const hasParent = v.parent_version !== null && v.parent_version !== undefined;
    return el("tr", { id: `model-row-${v.version}`, dataset: { version: String(v.version) } }, [
      el("th", { scope: "row", className: "version-cell" }, [
        el("span", { className: "version-number", text: `v${v.version}` }),
        el("span", {
          className: "small muted model-source",
          text: [v.source, hasParent ? `from v${v.parent_version}` : null].filter(Boolean).join(" · "),
          dataset: { parent: hasParent ? String(v.parent_version) : "" },
        }),
        el("span", { className: "small muted model-created", text: fmt.time(v.created_at) }),
      ]),
      el("td", {}, [
        el("span", { className: "mono", text: v.model_version || fmt.missing }),
        v.backbone && !String(v.model_version || "").startsWith(v.backbone)
          ? el("span", { className: "small muted model-backbone", text: v.backbone })
          : null,
      ]),
      el("td", { className: "aliases" }, [
        ...aliasBadges(v.aliases),
        isReference(v)
          ? el("span", { className: "badge badge-info", text: "gate reference", dataset: { reference: String(v.version) } })
          : null,
        ...served.map((alias) =>
          el("span", { className: "badge badge-served", text: `serving ${alias}`, dataset: { served: alias } }),
        ),
        v.load_error
          ? el("span", {
              className: "badge badge-error",
              text: "failed to load",
              title: v.load_error.reason,
              dataset: { loadError: String(v.version) },
            })
          : null,
      ]),
      num(fmt.percent(m.accuracy, 2)),
      num(fmt.percent(m.precision, 2)),
      num(fmt.percent(m.recall, 2)),
      num(fmt.percent(m.f1 ?? m.f1_score, 2)),
      num(fmt.number(m.roc_auc, 4)),
      gateCell(v),
      el("td", {}, [promote]),
    ]);
  }

  function isReference(v) {
    return Boolean(registry.reference) && registry.reference.version === v.version;
  }

  function describeReference() {
    const ref = registry.reference;
    if (!ref || ref.version === null || ref.version === undefined) return "none yet";
    const v = (registry.versions || []).find((x) => x.version === ref.version);
    const accuracy = v && v.metrics ? ` · ${fmt.percent(v.metrics.accuracy, 2)}` : "";
    return `version ${ref.version} (${ref.source || "?"})${accuracy}`;
  }

  function describeAlias(alias) {
    const version = registry[alias];
    if (version === null || version === undefined) return "none";
    const v = (registry.versions || []).find((x) => x.version === version);
    return v ? `version ${version} (${v.model_version || v.backbone || "?"})` : `version ${version}`;
  }

  function describeServed(alias) {
    const served = registry.served && registry.served[alias];
    if (!served) return alias === "staging" ? "none (no staging share or no staging version)" : "(loading)";
    const text = `${served.version === null || served.version === undefined ? "unregistered" : `version ${served.version}`}` +
      (served.model_version ? ` (${served.model_version})` : "");
    const wanted = registry[alias];
    if (wanted === null || wanted === undefined || served.version === wanted) return text;
    if (loadFailure(alias, wanted)) return `${text}: version ${wanted} failed to load, so this one keeps serving`;
    return `${text}, switching to version ${wanted}…`;
  }

  /** Why `version` does not serve as `alias` on this server (GET /api/models swap_errors), or null. */
  function loadFailure(alias, version) {
    return (registry.swap_errors || []).find((f) => f.alias === alias && f.version === version) || null;
  }

  function describeSwapErrors() {
    return (registry.swap_errors || [])
      .map((f) =>
        f.version === null || f.version === undefined
          ? `The model registry could not be asked (${fmt.time(f.at)}): ${f.reason}. The served models keep serving.`
          : `Version ${f.version} (${f.alias}) failed to load (${fmt.time(f.at)}): ${f.reason}. ` +
            "The version before it keeps serving; this server tries again later, or at once when the alias moves.",
      )
      .join(" ");
  }

  function settled() {
    const served = registry.served || {};
    return ["production", "staging"].every((alias) => {
      const wanted = registry[alias];
      if (wanted === null || wanted === undefined || !served[alias]) return true;
      return served[alias].version === wanted || Boolean(loadFailure(alias, wanted)); // a failure is final until retried
    });
  }

  let shownRows = "";

  function showRegistry() {
    const versions = registry.versions || [];
    // re-render only on change: a refresh must not take the keyboard focus off a row's button
    const stable = (k, value) => (k === "at" || k === "retry_in_seconds" ? undefined : value); // these tick every poll
    const key = JSON.stringify([versions, registry.production, registry.staging, registry.served, registry.reference, busy], stable);
    if (key !== shownRows) {
      shownRows = key;
      renderRows(versions);
    }
    setText("alias-production", describeAlias("production"));
    setText("alias-staging", describeAlias("staging"));
    setText("served-production", describeServed("production"));
    setText("served-staging", describeServed("staging"));
    showMessage("swap-error", describeSwapErrors());
    setText("gate-reference", describeReference());
    rollbackButton.disabled = busy || registry.production === null || registry.production === undefined;
    fillCompareChoices(versions);
  }

  function renderRows(versions) {
    rows.replaceChildren(
      ...(versions.length
        ? versions.map(versionRow)
        : [el("tr", {}, [el("td", { colSpan: 10, className: "muted", text: "No registered model version yet." })])]),
    );
  }

  // --- compare --------------------------------------------------------------------------------------
  function option(v) {
    const aliases = (v.aliases || []).length ? ` (${v.aliases.join(", ")})` : "";
    return el("option", { value: String(v.version), text: `v${v.version} · ${v.backbone || "?"}${aliases}` });
  }

  let shownChoices = "";

  function fillCompareChoices(versions) {
    const choices = JSON.stringify([versions.map((v) => [v.version, v.backbone, v.aliases]), registry.production]);
    if (choices === shownChoices) {
      showCompare();
      return;
    }
    shownChoices = choices;
    const keepA = compareA.value;
    const keepB = compareB.value;
    const known = new Set(versions.map((v) => String(v.version)));
    compareA.replaceChildren(...versions.map(option));
    compareB.replaceChildren(...versions.map(option));
    const production = registry.production !== null && registry.production !== undefined ? String(registry.production) : null;
    const other = versions.find((v) => String(v.version) !== production);
    const fallbackA = production && known.has(production) ? production : versions.length ? String(versions[0].version) : "";
    const fallbackB = other ? String(other.version) : fallbackA;
    compareA.value = known.has(keepA) ? keepA : fallbackA;
    compareB.value = known.has(keepB) ? keepB : fallbackB;
    showCompare();
  }

  let shownPair = "";

  function showCompare() {
    const versions = (registry && registry.versions) || [];
    const pair = [compareA.value, compareB.value].map((value) => versions.find((v) => String(v.version) === value));
    const key = pair.map((v) => (v ? `${v.version}:${Object.values(v.plots || {}).join(",")}` : "")).join("|");
    if (key === shownPair) return; // the periodic refresh must not reload the images
    shownPair = key;
    const box = document.getElementById("compare-plots");
    if (!pair[0] || !pair[1]) {
      box.replaceChildren(el("p", { className: "muted", text: "No versions to compare yet." }));
      return;
    }
    const names = [];
    for (const v of pair) for (const name of Object.keys(v.plots || {})) if (!names.includes(name)) names.push(name);
    const order = Object.keys(PLOT_TITLES);
    names.sort((a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99) || a.localeCompare(b));
    const head = el(
      "div",
      { className: "compare-row compare-head" },
      pair.map((v, i) =>
        el("div", { className: "compare-title", id: `compare-${i ? "b" : "a"}-title` }, [
          el("h3", { text: `Version ${v.version}` }, []),
          el("p", { className: "small muted" }, [
            [v.backbone, (v.aliases || []).join(", "), v.source].filter(Boolean).join(" · "),
          ]),
          el("p", { className: "small" }, [
            `Accuracy ${fmt.percent((v.metrics || {}).accuracy, 2)} · ROC-AUC ${fmt.number((v.metrics || {}).roc_auc, 4)}`,
          ]),
        ]),
      ),
    );
    const plotRows = names.map((name) =>
      el(
        "div",
        { className: "compare-row", dataset: { plot: name } },
        pair.map((v) => {
          const url = (v.plots || {})[name];
          if (!url) return el("p", { className: "plot plot-missing muted small", text: `No ${plotTitle(name).toLowerCase()} for version ${v.version}.` });
          return el("figure", { className: "plot" }, [
            el("img", { src: url, alt: `${plotTitle(name)} of version ${v.version}`, loading: "lazy", width: 640, height: 480 }),
            el("figcaption", { text: `${plotTitle(name)} · version ${v.version}` }),
          ]);
        }),
      ),
    );
    box.replaceChildren(
      head,
      ...(plotRows.length ? plotRows : [el("p", { className: "muted", text: "Neither version has plots." })]),
    );
  }

  // --- actions ----------------------------------------------------------------------------------------
  function setBusy(value) {
    busy = value;
    rollbackButton.disabled = value || !registry || registry.production === null || registry.production === undefined;
    for (const button of rows.querySelectorAll(".promote-button")) {
      if (value) button.disabled = true;
    }
    if (!value && registry) showRegistry();
  }

  function actionError(err, what) {
    if (err.cancelled) return `${what}: no admin token was given.`;
    return `${what} (${err.status || "no answer"}): ${err.message}`;
  }

  async function promoteVersion(v) {
    const current = registry.production;
    const ok = await confirmAction(
      `Promote version ${v.version}?`,
      `Version ${v.version} (${v.model_version || v.backbone}) becomes production: every server switches to it within a ` +
        `few seconds.${current !== null && current !== undefined ? ` Version ${current} stays available for a rollback.` : ""}`,
      `Promote version ${v.version}`,
    );
    if (!ok) return;
    setBusy(true);
    try {
      const answer = await adminApi(
        `/api/models/${encodeURIComponent(v.version)}/promote`,
        { method: "POST" },
        "Promoting a model version needs the admin token.",
      );
      const was = answer.previous === null || answer.previous === undefined ? "" : ` (was version ${answer.previous})`;
      setText("models-result", `Promoted: production is now version ${answer.production}${was}.`);
      settleUntil = Date.now() + 30000;
    } catch (err) {
      setText("models-result", actionError(err, `Version ${v.version} was not promoted`));
    }
    setBusy(false);
    await refresh();
  }

  async function rollback() {
    const ok = await confirmAction(
      "Roll back production?",
      `Production (version ${registry.production}) goes back to the version that was production before it; ` +
        "every server switches within a few seconds.",
      "Roll back",
    );
    if (!ok) return;
    setBusy(true);
    try {
      const answer = await adminApi("/api/models/rollback", { method: "POST" }, "Rolling back needs the admin token.");
      setText("models-result", `Rolled back: production is now version ${answer.production} (was version ${answer.rolled_back_from}).`);
      settleUntil = Date.now() + 30000;
    } catch (err) {
      setText(
        "models-result",
        err.status === 409 ? `Nothing to roll back to: ${err.message}` : actionError(err, "Not rolled back"),
      );
    }
    setBusy(false);
    await refresh();
  }

  // --- refresh ----------------------------------------------------------------------------------------
  async function refresh() {
    window.clearTimeout(timer);
    try {
      registry = await api("/api/models");
      showRegistry();
      showMessage("models-error", "");
    } catch (err) {
      showMessage("models-error", `The model registry is unavailable: ${err.message}`);
    }
    const settling = registry && !settled() && Date.now() < settleUntil;
    const every = settling ? SETTLING_MS : REFRESH_MS;
    setText("models-updated", `Updated ${fmt.clock()} · refreshes every ${every / 1000} s`);
    timer = window.setTimeout(function tick() {
      if (document.hidden) timer = window.setTimeout(tick, REFRESH_MS);
      else refresh();
    }, every);
    const serving = registry && registry.served && registry.served.production;
    const servingNow = serving ? serving.model_version : null;
    if (servingNow && servingNow !== lastServing) {
      if (lastServing !== null) loadServer(); // this server swapped its model: the footer and details follow
      lastServing = servingNow;
    }
  }

  async function loadServer() {
    try {
      const status = await api("/api/status");
      updateFooter(status);
      setText("model-version", status.model_version || "(loading)");
      setText("model-backbone", status.backbone);
      setText("model-precision", status.precision);
      setText("model-dir", status.model_dir);
      if (!status.model_version) window.setTimeout(loadServer, 3000); // still loading: look again
    } catch (err) {
      setText("model-version", "unavailable");
    }
  }

  rollbackButton.addEventListener("click", rollback);
  compareA.addEventListener("change", showCompare);
  compareB.addEventListener("change", showCompare);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  refresh();
  loadServer();
})();
