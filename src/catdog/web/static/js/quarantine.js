/* Retrain page, quarantined uploads: the last label check's figures (from the retrain status that
 * retrain.js polls and passes on as a "catdog:retrain-status" event), the uploads it left out of
 * training with the model's P(class) and the reason, and an admin's Keep / Delete for each.
 * Loaded before retrain.js; tells it with "catdog:uploads-changed" when an upload was kept or deleted. */
(function () {
  "use strict";
  const { api, adminApi, confirmAction, fmt, el, setText, showMessage } = window.catdog;
  const LIMIT = 100;
  const list = document.getElementById("quarantine-list");
  let lastKey = null;

  function className(u) {
    return u.class === "dogs" ? "dog" : u.class === "cats" ? "cat" : u.class;
  }

  function item(u) {
    const name = u.filename || String(u.sha256).slice(0, 8);
    const label = className(u);
    const keep = el("button", {
      className: "button button-small",
      type: "button",
      text: "Keep",
      attrs: { "aria-label": `Keep ${name} as ${label} and train on it` },
    });
    const remove = el("button", {
      className: "button button-small button-secondary",
      type: "button",
      text: "Delete",
      attrs: { "aria-label": `Delete ${name}` },
    });
    const p = u.label_p === null || u.label_p === undefined ? fmt.missing : fmt.number(u.label_p, 3);
    const node = el("li", { className: "thumb quarantined", id: `quarantined-${u.sha256}`, dataset: { sha256: u.sha256 } }, [
      el("img", {
        src: u.url || `/api/uploads/${encodeURIComponent(u.sha256)}/image`,
        alt: `Quarantined photo ${name}, uploaded as ${label}`,
        loading: "lazy",
        width: 112,
        height: 112,
      }),
      el("span", { className: "thumb-name mono small", text: name, title: name }),
      el("span", { className: "small" }, [`uploaded as ${label} · P(${label}) `, el("strong", { text: p })]),
      u.predicted_class
        ? el("span", { className: "small muted", text: `at upload the served model said ${u.predicted_class}` })
        : null,
      el("span", { className: "small muted quarantine-reason", text: u.quarantine_reason || "" }),
      el("span", { className: "actions" }, [keep, " ", remove]),
    ]);
    keep.addEventListener("click", () => act(u, node, name, "keep"));
    remove.addEventListener("click", () => act(u, node, name, "delete"));
    return node;
  }

  async function act(u, node, name, what) {
    const url = `/api/uploads/${encodeURIComponent(u.sha256)}`;
    if (what === "delete") {
      const ok = await confirmAction("Delete this upload?", `${name} will be removed from the training uploads.`, "Delete", "Cancel");
      if (!ok) return;
    }
    try {
      if (what === "keep") {
        await adminApi(`${url}/keep`, { method: "POST" }, "Keeping a quarantined upload needs the admin token.");
      } else {
        await adminApi(url, { method: "DELETE" }, "Deleting uploads needs the admin token.");
      }
      node.remove();
      showMessage("quarantine-error", "");
      setText("quarantine-count", what === "keep" ? `Kept ${name}: the next retrain trains on it.` : `Deleted ${name}.`);
      document.dispatchEvent(new CustomEvent("catdog:uploads-changed"));
      if (!list.children.length) load();
    } catch (err) {
      if (err && err.cancelled) return;
      const why = err.status === 409 ? `${err.message}` : `${name}: ${err.message}`;
      showMessage("quarantine-error", `Not ${what === "keep" ? "kept" : "deleted"}: ${why}`);
    }
  }

  async function load() {
    try {
      const body = await api(`/api/uploads?quarantined=true&limit=${LIMIT}`);
      const rows = body.uploads || [];
      list.replaceChildren(...rows.map(item));
      const total = Number(body.total) || rows.length;
      const kept = body.quarantine ? body.quarantine.kept : 0;
      const keptText = kept ? ` ${fmt.number(kept)} kept by an admin.` : "";
      setText(
        "quarantine-count",
        total
          ? `${fmt.number(total)} quarantined: not trained on.${total > rows.length ? ` Showing ${rows.length}.` : ""}${keptText}`
          : `No upload is quarantined.${keptText}`,
      );
      showMessage("quarantine-error", "");
    } catch (err) {
      showMessage("quarantine-error", `Quarantined uploads unavailable: ${err.message}`);
    }
  }

  function showSummary(check) {
    const box = document.getElementById("base-issues");
    if (!check) {
      setText("label-check-summary", "No retrain has checked the labels yet.");
      box.hidden = true;
      return;
    }
    if (!check.enabled) {
      setText("label-check-summary", `Last retrain: the label check is off (${check.reason || "CATDOG_LABEL_CHECK"}); every upload trained.`);
      box.hidden = true;
      return;
    }
    const base = check.base_issues || { count: 0, examples: [] };
    const parts = [
      `Last label check: ${fmt.number(check.checked)} uploads checked`,
      `${fmt.number(check.quarantined)} quarantined`,
      `${fmt.number(check.kept)} kept by an admin`,
      `${fmt.number(check.trained)} trained on`,
      `${fmt.number(base.count)} possible label issues in the base set (trained on as they are)`,
    ];
    setText("label-check-summary", `${parts.join(", ")}.${check.skipped ? ` Skipped: ${check.skipped}.` : ""}`);
    const examples = base.examples || [];
    box.hidden = !examples.length;
    document.getElementById("base-issues-list").replaceChildren(
      ...examples.map((e) =>
        el("li", {}, [
          el("span", { className: "mono", text: e.file }),
          el("span", { className: "muted", text: ` as ${e.class}: P(${e.class === "dogs" ? "dog" : "cat"}) ${fmt.number(e.p_label, 4)}` }),
        ]),
      ),
    );
  }

  document.addEventListener("catdog:retrain-status", (event) => {
    const s = event.detail || {};
    const key = `${s.job_id}/${s.status}/${s.phase}`;
    if (key === lastKey) return;
    const first = lastKey === null;
    lastKey = key;
    showSummary(s.label_check);
    if (first || ["succeeded", "failed", "cancelled"].includes(s.status) || s.phase === "training") load();
  });
  load();
})();
