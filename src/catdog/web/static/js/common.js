/* catdog: helpers shared by every page (no framework, no build step).
 *
 * window.catdog.api(url, options)   fetch JSON; throws catdog.ApiError {status, detail} on 4xx/5xx
 * window.catdog.modelMetrics()      the served model's /api/metrics; ApiError 404 without asking when it has none
 * window.catdog.poll(fn, ms)        run fn now and every ms, paused while the tab is hidden
 * window.catdog.fmt.*               number, percent, bytes, duration and time formatting
 * window.catdog.el(tag, props, kids) build DOM nodes (text always via textContent, never HTML)
 * window.catdog.admin.*             the admin token: asked once in a dialog, checked with /api/auth/check,
 *                                   kept in sessionStorage; withAdmin(fn) / adminApi(url, options) send it
 *                                   as `Authorization: Bearer` and ask again (with the reason) on 401/403
 * window.catdog.confirmAction(...)  an accessible yes/no dialog; resolves true or false
 */
(function () {
  "use strict";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.name = "ApiError";
      this.status = status;
      this.detail = detail;
    }
  }

  /** The server's `detail` (a string, or a validation list) as one readable sentence. */
  function detailText(body, status, statusText) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    }
    return `HTTP ${status}${statusText ? " " + statusText : ""}`;
  }

  async function api(url, options) {
    let response;
    try {
      response = await fetch(url, Object.assign({ headers: { Accept: "application/json" } }, options));
    } catch (err) {
      throw new ApiError(0, "The server could not be reached. Is it running?");
    }
    let body = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      try {
        body = await response.json();
      } catch (err) {
        body = null;
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, detailText(body, response.status, response.statusText));
      error.retryAfter = Number(response.headers.get("Retry-After")) || null;
      error.body = body;
      throw error;
    }
    return body;
  }

  /** Call `fn` now and every `ms` milliseconds; skip while the tab is hidden, catch up when shown. */
  function poll(fn, ms) {
    let timer = null;
    let running = false;
    let paused = false;

    async function tick() {
      if (running || paused || document.hidden) return;
      running = true;
      try {
        await fn();
      } catch (err) {
        // Each page shows its own errors; a failed refresh must never break the next one.
      } finally {
        running = false;
      }
    }

    function start() {
      paused = false;
      if (timer === null) timer = window.setInterval(tick, ms);
      return tick();
    }

    function stop() {
      paused = true;
      if (timer !== null) window.clearInterval(timer);
      timer = null;
    }

    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !paused) tick();
    });
    start();
    return {
      start,
      stop,
      refresh: tick,
      get paused() {
        return paused;
      },
    };
  }

  const numberFormat = new Intl.NumberFormat("en");

  const fmt = {
    missing: "–",
    number(value, digits) {
      if (value === null || value === undefined || Number.isNaN(Number(value))) return fmt.missing;
      if (digits === undefined) return numberFormat.format(value);
      return Number(value).toFixed(digits);
    },
    percent(fraction, digits) {
      if (fraction === null || fraction === undefined || Number.isNaN(Number(fraction))) return fmt.missing;
      return `${(Number(fraction) * 100).toFixed(digits === undefined ? 1 : digits)}%`;
    },
    bytes(value) {
      if (value === null || value === undefined) return fmt.missing;
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let v = Number(value);
      let i = 0;
      while (v >= 1024 && i < units.length - 1) {
        v /= 1024;
        i += 1;
      }
      return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
    },
    duration(seconds) {
      if (seconds === null || seconds === undefined) return fmt.missing;
      let s = Math.floor(Number(seconds));
      const d = Math.floor(s / 86400);
      s -= d * 86400;
      const h = Math.floor(s / 3600);
      s -= h * 3600;
      const m = Math.floor(s / 60);
      s -= m * 60;
      return (d ? `${d}d ` : "") + `${h}h ${m}m ${s}s`;
    },
    ms(value) {
      if (value === null || value === undefined) return fmt.missing;
      const v = Number(value);
      return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 1 : 0)} ms`;
    },
    time(iso) {
      if (!iso) return fmt.missing;
      const date = new Date(iso);
      return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
    },
    clock(date) {
      return (date || new Date()).toLocaleTimeString();
    },
  };

  /** el("p", {className: "x", id: "y", dataset: {...}, attrs: {...}}, ["text", node]) */
  function el(tag, props, children) {
    const node = document.createElement(tag);
    const p = props || {};
    for (const [key, value] of Object.entries(p)) {
      if (value === undefined || value === null) continue;
      if (key === "attrs") {
        for (const [name, v] of Object.entries(value)) {
          if (v !== undefined && v !== null && v !== false) node.setAttribute(name, v === true ? "" : String(v));
        }
      } else if (key === "dataset") {
        Object.assign(node.dataset, value);
      } else if (key === "text") {
        node.textContent = value;
      } else {
        node[key] = value;
      }
    }
    for (const child of [].concat(children || [])) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text === null || text === undefined ? fmt.missing : String(text);
    return node;
  }

  /** Show `message` in the element `id` (hidden when message is empty). */
  function showMessage(id, message) {
    const node = document.getElementById(id);
    if (!node) return;
    node.textContent = message || "";
    node.hidden = !message;
  }

  /** The footer's model line, from a /api/status answer. */
  function updateFooter(status) {
    if (!status) return;
    setText("footer-model-version", status.model_version || `(${status.status || "loading"})`);
    const detail = [status.backbone, status.precision].filter(Boolean).join(", ");
    setText("footer-model-detail", detail ? `(${detail})` : "");
  }

  /** Until the model is loaded the footer says so; fetch the status until it names a version. */
  function watchFooter() {
    const node = document.getElementById("footer-model-version");
    if (!node || !node.textContent.startsWith("(")) return;
    const timer = window.setInterval(async () => {
      try {
        const status = await api("/api/status");
        updateFooter(status);
        if (status.model_version) window.clearInterval(timer);
      } catch (err) {
        // keep the current footer; the page itself reports the outage
      }
    }, 3000);
  }

  // Asks /api/status first, so a model that was never evaluated costs no 404 (browsers log those as errors).
  async function modelMetrics() {
    const status = await api("/api/status");
    if (!status.has_metrics) {
      throw new ApiError(404, "the served model has no metrics.json: run `catdog evaluate --save`");
    }
    return api("/api/metrics");
  }

  // --- admin token ----------------------------------------------------------------------------------
  const TOKEN_KEY = "catdog-admin-token";

  /** The user closed the token dialog: the admin action was not attempted. */
  class Cancelled extends Error {
    constructor(message) {
      super(message || "No admin token given: nothing was done.");
      this.name = "Cancelled";
      this.cancelled = true;
    }
  }

  function storedToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || null;
    } catch (err) {
      return null; // storage disabled: ask every time
    }
  }

  function adminChanged() {
    const signedIn = Boolean(storedToken());
    setText("admin-state", signedIn ? "Admin: signed in for this tab" : "Admin: not signed in");
    setText("admin-toggle", signedIn ? "Forget admin token" : "Enter admin token");
    window.dispatchEvent(new CustomEvent("catdog-admin", { detail: { signedIn } }));
  }

  function saveToken(token) {
    try {
      window.sessionStorage.setItem(TOKEN_KEY, token);
    } catch (err) {
      // storage disabled: the token lives until the next request asks again
    }
    adminChanged();
  }

  function clearToken() {
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (err) {
      // nothing kept
    }
    adminChanged();
  }

  let asking = null; // one dialog at a time: callers that ask together share the answer

  /** Open the token dialog (reason: why the last token failed, shown as an alert); resolves the checked token. */
  function askToken(reason, why) {
    if (asking) return asking;
    asking = new Promise((resolve, reject) => {
      const dialog = document.getElementById("token-dialog");
      const form = document.getElementById("token-form");
      const input = document.getElementById("token-input");
      const submit = document.getElementById("token-submit");
      const cancel = document.getElementById("token-cancel");
      if (!dialog || typeof dialog.showModal !== "function") {
        reject(new Cancelled("This browser cannot show the admin token dialog."));
        return;
      }
      const opener = document.activeElement;
      setText("token-dialog-why", why || "This action needs the admin token.");
      showMessage("token-error", reason || "");
      input.value = "";
      input.setAttribute("aria-invalid", reason ? "true" : "false");
      dialog.showModal();
      input.focus();

      function finish(settle, value) {
        form.removeEventListener("submit", onSubmit);
        cancel.removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onEscape);
        if (dialog.open) dialog.close();
        asking = null;
        if (opener && typeof opener.focus === "function" && document.contains(opener)) opener.focus();
        settle(value);
      }
      async function onSubmit(event) {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) {
          showMessage("token-error", "Enter the admin token.");
          input.setAttribute("aria-invalid", "true");
          input.focus();
          return;
        }
        submit.disabled = true;
        submit.textContent = "Checking…";
        try {
          await api("/api/auth/check", { headers: { Accept: "application/json", Authorization: `Bearer ${token}` } });
          saveToken(token);
          finish(resolve, token);
        } catch (err) {
          const refused = err.status === 401 || err.status === 403;
          showMessage(
            "token-error",
            refused ? `The server refused this token (${err.status}): ${err.detail}` : `The token could not be checked: ${err.message}`,
          );
          input.setAttribute("aria-invalid", "true");
          input.select();
          input.focus();
        } finally {
          submit.disabled = false;
          submit.textContent = "Sign in";
        }
      }
      function onCancel() {
        finish(reject, new Cancelled());
      }
      function onEscape(event) {
        event.preventDefault(); // close through finish(), which also settles the promise
        onCancel();
      }
      form.addEventListener("submit", onSubmit);
      cancel.addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onEscape);
    });
    return asking;
  }

  /** Run action(token) with the session's token (asking for one first); on 401/403 forget it and ask again. */
  async function withAdmin(action, why) {
    let reason = "";
    for (;;) {
      const token = (!reason && storedToken()) || (await askToken(reason, why));
      try {
        return await action(token);
      } catch (err) {
        if (err && (err.status === 401 || err.status === 403)) {
          clearToken();
          reason = `The server refused the admin token (${err.status}): ${err.detail}. Enter it again.`;
          continue;
        }
        throw err;
      }
    }
  }

  /** catdog.api with the admin token. */
  function adminApi(url, options, why) {
    return withAdmin((token) => {
      const merged = Object.assign({}, options || {});
      merged.headers = Object.assign({ Accept: "application/json" }, merged.headers || {}, {
        Authorization: `Bearer ${token}`,
      });
      return api(url, merged);
    }, why);
  }

  function setUpAdminLine() {
    const toggle = document.getElementById("admin-toggle");
    if (!toggle) return;
    toggle.addEventListener("click", () => {
      if (storedToken()) clearToken();
      else askToken("", "Sign in to upload training images, retrain, promote and roll back.").catch(() => {});
    });
    adminChanged();
  }

  // --- confirmation -----------------------------------------------------------------------------------
  /** Ask before an action that changes what is served; resolves true when confirmed. Cancel has the focus. */
  function confirmAction(title, text, okLabel, cancelLabel) {
    const dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return Promise.resolve(false);
    const opener = document.activeElement;
    setText("confirm-dialog-title", title);
    setText("confirm-dialog-text", text);
    setText("confirm-ok", okLabel || "Confirm");
    setText("confirm-cancel", cancelLabel || "Cancel");
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          if (opener && typeof opener.focus === "function" && document.contains(opener)) opener.focus();
          resolve(dialog.returnValue === "ok");
        },
        { once: true },
      );
    });
  }

  const admin = {
    token: storedToken,
    clear: clearToken,
    ask: askToken,
    withAdmin,
    Cancelled,
  };

  window.catdog = {
    api,
    adminApi,
    admin,
    withAdmin,
    confirmAction,
    modelMetrics,
    ApiError,
    poll,
    fmt,
    el,
    setText,
    showMessage,
    updateFooter,
  };
  /** A `.table-scroll` box around a `.table-wrap`: say when the table is wider than the box
   *  (data-overflows) and which edges hide columns (data-more-left / -right); CSS draws the cues. */
  function watchTableScroll(box) {
    const wrap = box.querySelector(".table-wrap");
    if (!wrap) return;
    const update = () => {
      const hidden = wrap.scrollWidth - wrap.clientWidth;
      box.toggleAttribute("data-overflows", hidden > 1);
      box.toggleAttribute("data-more-left", hidden > 1 && wrap.scrollLeft > 1);
      box.toggleAttribute("data-more-right", hidden > 1 && wrap.scrollLeft < hidden - 1);
    };
    wrap.addEventListener("scroll", update, { passive: true });
    const observer = new ResizeObserver(update); // the box resizes, or rows arrive and widen the table
    observer.observe(wrap);
    for (const table of wrap.querySelectorAll("table")) observer.observe(table);
    update();
  }

  document.addEventListener("DOMContentLoaded", () => {
    watchFooter();
    setUpAdminLine();
    document.querySelectorAll(".table-scroll").forEach(watchTableScroll);
  });
})();
