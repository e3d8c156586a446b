// The review workspace: a finished job's slide in OpenSeadragon with the models' calls over it,
// a review queue, each tile's scores and Grad-CAMs, and the reviewer's decisions and sign-off.
// Plain script, no build step: everything it calls is the service's own REST API.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const job = params.get("job") || "";
  // A token handed over in the fragment (never sent to a server) is kept for this tab only.
  if (fragment.get("token")) {
    sessionStorage.setItem("wbc-ray-token", fragment.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = () => sessionStorage.getItem("wbc-ray-token") || "";
  const auth = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
  const root = new URL(".", location.href); // the service's root, wherever it is mounted
  const url = (path) => new URL(path, root).toString();
  const DECISION_KEYS = { 1: "agree", 2: "benign", 3: "malignant", 4: "not_assessable" };
  const GROUPS = {
    suspicious: "most suspicious calls",
    uncertain: "most uncertain (nearest the tile threshold)",
    out_of_range: "outside the domain check's range",
  };
  const state = { queue: [], pos: -1, tile: null, reviews: {}, marks: {}, viewer: null, loaded: 0 };
  window.wbcReview = state; // for people at the console, and the browser tests

  class ApiError extends Error {
    constructor(status, detail) {
      super(`${status}: ${detail}`);
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const r = await fetch(url(path), { ...options, headers: { ...auth(), ...(options.headers || {}) } });
    if (!r.ok) {
      let detail = r.statusText;
      try {
        const body = await r.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) {
        /* not JSON: the status text says it */
      }
      throw new ApiError(r.status, detail);
    }
    return r;
  }
  const json = async (path, options) => (await api(path, options)).json();

  function showError(err) {
    if (err instanceof ApiError && err.status === 401) {
      $("token-bar").hidden = false;
    }
    $("error").textContent = String(err.message || err);
    $("error").hidden = false;
  }
  const clearError = () => {
    $("error").hidden = true;
  };

  const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const h = (tag, attrs = {}, ...children) => {
    const el = document.createElement(tag);
    Object.entries(attrs).forEach(([k, v]) => (k === "class" ? (el.className = v) : el.setAttribute(k, v)));
    children.forEach((c) => el.append(c));
    return el;
  };

  // ---- the slide: Deep Zoom layers from the service ----------------------------------------
  async function dziSource(layer) {
    const xml = await (await api(`jobs/${job}/${layer}.dzi`)).text();
    const img = new DOMParser().parseFromString(xml, "application/xml").documentElement;
    const size = img.getElementsByTagName("Size")[0];
    return {
      Image: {
        xmlns: "http://schemas.microsoft.com/deepzoom/2008",
        Url: url(`jobs/${job}/${layer}_files/`),
        Format: img.getAttribute("Format"),
        Overlap: img.getAttribute("Overlap"),
        TileSize: img.getAttribute("TileSize"),
        Size: { Width: size.getAttribute("Width"), Height: size.getAttribute("Height") },
      },
    };
  }

  async function openSlide() {
    const [slide, overlay] = await Promise.all([dziSource("slide"), dziSource("overlay")]);
    const viewer = OpenSeadragon({
      id: "osd",
      prefixUrl: url("viewer/vendor/openseadragon/images/"),
      drawer: "canvas",
      loadTilesWithAjax: true,
      ajaxHeaders: auth(),
      showNavigator: true,
      navigatorPosition: "BOTTOM_RIGHT",
      maxZoomPixelRatio: 4,
      gestureSettingsMouse: { clickToZoom: false },
      tileSources: [
        { tileSource: slide },
        { tileSource: overlay, opacity: $("opacity").value / 100 },
      ],
    });
    state.viewer = viewer;
    viewer.world.addHandler("add-item", () => {
      state.loaded += 1;
      if (state.loaded === 2) drawMarks();
    });
    viewer.addHandler("canvas-click", (e) => {
      if (!e.quick) return;
      const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(e.position);
      openAt(p.x, p.y).catch(showError);
    });
  }

  function overlayItem() {
    return state.viewer && state.viewer.world.getItemCount() > 1 ? state.viewer.world.getItemAt(1) : null;
  }
  function setOverlay() {
    const item = overlayItem();
    if (item) item.setOpacity($("overlay-on").checked ? $("opacity").value / 100 : 0);
  }

  function rect(rec) {
    return state.viewer.world.getItemAt(0).imageToViewportRectangle(rec.x, rec.y, rec.size, rec.size);
  }

  function highlight(rec) {
    const el = $("hl") || h("div", { id: "hl", class: "hl" });
    state.viewer.removeOverlay(el);
    state.viewer.addOverlay({ element: el, location: rect(rec) });
  }

  function fly(rec) {
    const r = rect(rec);
    // The tile and as much again around it: the cells and their neighbours.
    state.viewer.viewport.fitBounds(new OpenSeadragon.Rect(r.x - r.width, r.y - r.height, 3 * r.width, 3 * r.height));
  }

  function drawMarks() {
    if (!state.viewer || state.loaded < 2) return;
    Object.values(state.marks).forEach((el) => state.viewer.removeOverlay(el));
    state.marks = {};
    Object.entries(state.reviews).forEach(([tile, r]) => {
      if (!r.rec) return;
      const el = h("div", { class: `mark mark-${r.label || "none"}`, "data-tile": tile });
      state.viewer.addOverlay({ element: el, location: rect(r.rec) });
      state.marks[tile] = el;
    });
  }

  // ---- the slide's summary and sign-off -------------------------------------------------------
  async function showSummary() {
    const [status, result] = await Promise.all([json(`jobs/${job}`), json(`jobs/${job}/result`)]);
    $("slide-name").textContent = status.slide;
    const dims = status.dimensions ? `${status.dimensions[0].toLocaleString()} × ${status.dimensions[1].toLocaleString()} px` : "";
    const mpp = status.mpp ? `${Number(status.mpp).toFixed(3)} µm/px` : "scale not recorded";
    $("slide-details").textContent = [status.vendor, dims, mpp].filter(Boolean).join(" · ");
    const [lo, hi] = result.interval;
    $("verdict").replaceChildren(
      h("div", { class: `v v-${result.verdict}` }, `Models: ${result.verdict.replace(/_/g, " ")}`),
      h(
        "div",
        {},
        // The estimate is of tiles, not cells; corrected for the models' tile error rates where
        // the release measured them, so it is not simply called / scored.
        `Malignant share of the scored tiles ${fmt(result.malignant_fraction)} ` +
          `(${Math.round(100 * result.confidence)} % interval ${fmt(lo)}–${fmt(hi)}; slide threshold τ ${result.tau})` +
          (result.adjusted_by ? ", corrected for the models' tile error rates" : "") +
          `; ${result.n_malignant.toLocaleString()} of ${result.n_tiles.toLocaleString()} scored tiles called malignant` +
          (result.n_rejected ? `, ${result.n_rejected.toLocaleString()} rejected by quality control` : "") +
          (result.n_excluded ? `, ${result.n_excluded.toLocaleString()} excluded (mostly glass)` : "") +
          ".",
      ),
    );
    showReviewSummary(result.review);
  }

  function showReviewSummary(s) {
    $("review-counts").textContent =
      `Reviewed ${s.reviewed} tiles: ${s.agreed} agreed, ${s.overturned} overturned, ${s.not_assessable} not assessable.`;
    $("signed").textContent = s.signoff
      ? `Signed off ${s.signoff.verdict.replace(/_/g, " ")} by ${s.signoff.reviewer} at ${new Date(s.signoff.at * 1000).toLocaleString()}` +
        (s.signoff.note ? ` — ${s.signoff.note}` : "")
      : "Not signed off yet.";
    if (s.signoff) $("signoff-verdict").value = s.signoff.verdict;
  }

  // ---- the queue and one tile -------------------------------------------------------------
  async function loadQueue() {
    const q = await json(`jobs/${job}/queue?per_group=25`);
    state.queue = q.items;
    showQueuePos();
  }

  function showQueuePos() {
    const n = state.queue.length;
    $("queue-pos").textContent = n ? `${state.pos >= 0 ? state.pos + 1 : "–"} / ${n}` : "nothing to review";
    const it = state.queue[state.pos];
    $("queue-group").textContent = it ? GROUPS[it.group] : "";
  }

  async function step(delta) {
    if (!state.queue.length) return;
    state.pos = Math.min(state.queue.length - 1, Math.max(0, state.pos + delta));
    showQueuePos();
    const it = state.queue[state.pos];
    await openTile(await json(`jobs/${job}/tiles/${it.tile}`), true);
  }

  async function openAt(x, y) {
    const rec = await json(`jobs/${job}/tiles?x=${Math.round(x)}&y=${Math.round(y)}`);
    const inQueue = state.queue.findIndex((it) => it.tile === rec.tile);
    if (inQueue >= 0) {
      state.pos = inQueue;
      showQueuePos();
    }
    await openTile(rec, false);
  }

  async function openTile(rec, move) {
    clearError();
    state.tile = rec;
    $("tile").hidden = false;
    $("tile").dataset.tile = rec.tile;
    if (move) fly(rec);
    highlight(rec);
    const call =
      rec.call === "rejected"
        ? `rejected by quality control (${rec.qc})`
        : rec.call === "excluded"
          ? "mostly glass: scored, not counted"
          : `called ${rec.call}`;
    $("tile-title").textContent = `Tile ${rec.tile} · ${call}`;
    const rows = [
      ["fused score", `${fmt(rec.fused)} (tile threshold ${fmt(rec.tile_threshold, 2)})`],
      ...Object.entries(rec.models).map(([m, p]) => [`${m}: p(malignant)`, fmt(p)]),
      ["tissue in the tile", fmt(rec.tissue, 2)],
      ["domain distance", `${fmt(rec.domain_distance, 2)}${rec.out_of_range ? " · out of range" : ""}`],
      ["position (level 0)", `${rec.x}, ${rec.y} · ${Math.round(rec.size)} px`],
    ];
    $("tile-scores").replaceChildren(...rows.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))));
    showTileReview(rec.review);
    await showCams(rec);
  }

  function showTileReview(review) {
    document.querySelectorAll(".decisions button").forEach((b) => b.classList.toggle("chosen", !!review && b.dataset.decision === review.decision));
    $("reason").value = review && review.reason ? review.reason : "";
    $("tile-review").textContent = review
      ? `Reviewed: ${review.decision.replace(/_/g, " ")} → ${review.label || "not assessable"} by ${review.reviewer}, ${new Date(review.at * 1000).toLocaleString()}`
      : "Not reviewed yet.";
  }

  async function showCams(rec) {
    const cams = $("cams");
    cams.replaceChildren();
    if (rec.call === "rejected") {
      cams.append(h("p", { class: "muted" }, "Quality control rejected this tile: the models did not score it."));
      return;
    }
    for (const model of Object.keys(rec.models)) {
      const fig = h("figure", { "data-model": model }, h("figcaption", {}, `${model}: computing…`));
      cams.append(fig);
    }
    for (const model of Object.keys(rec.models)) {
      const r = await api(`jobs/${job}/tiles/${rec.tile}/gradcam.png?model=${encodeURIComponent(model)}`);
      if (!state.tile || state.tile.tile !== rec.tile) return; // the reviewer moved on
      const img = h("img", { alt: `Grad-CAM of ${model} for tile ${rec.tile}` });
      img.src = URL.createObjectURL(await r.blob());
      const evidence = r.headers.get("X-Evidence") === "none" ? " (no evidence found)" : "";
      const fig = cams.querySelector(`figure[data-model="${model}"]`);
      fig.replaceChildren(
        img,
        h(
          "figcaption",
          {},
          `${model}: p(malignant) ${fmt(r.headers.get("X-Model-Probability-Malignant"))}; ` +
            `right: evidence for ${r.headers.get("X-Explained-Class")}${evidence}`,
        ),
      );
    }
  }

  async function decide(decision) {
    const rec = state.tile;
    if (!rec) return;
    const out = await json(`jobs/${job}/tiles/${rec.tile}/review`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ decision, reason: $("reason").value || null }),
    });
    rec.review = out.review;
    state.reviews[rec.tile] = { ...out.review, rec };
    const queued = state.queue.find((it) => it.tile === rec.tile);
    if (queued) queued.review = out.review;
    showTileReview(out.review);
    showReviewSummary(out.summary);
    drawMarks();
  }

  async function loadReviews() {
    const r = await json(`jobs/${job}/reviews`);
    const recs = await Promise.all(r.reviews.map((rv) => json(`jobs/${job}/tiles/${rv.tile}`)));
    state.reviews = {};
    r.reviews.forEach((rv, i) => (state.reviews[rv.tile] = { ...rv, rec: recs[i] }));
    drawMarks();
  }

  // ---- wiring -----------------------------------------------------------------------------
  const run = (fn) => (...args) => fn(...args).catch(showError);
  $("next").addEventListener("click", run(() => step(+1)));
  $("prev").addEventListener("click", run(() => step(-1)));
  document.querySelectorAll(".decisions button").forEach((b) => b.addEventListener("click", run(() => decide(b.dataset.decision))));
  $("overlay-on").addEventListener("change", setOverlay);
  $("opacity").addEventListener("input", setOverlay);
  $("signoff").addEventListener(
    "submit",
    run(async (e) => {
      e.preventDefault();
      await json(`jobs/${job}/signoff`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ verdict: $("signoff-verdict").value, note: $("signoff-note").value || null }),
      });
      showReviewSummary((await json(`jobs/${job}/result`)).review);
    }),
  );
  $("token-bar").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("wbc-ray-token", $("token").value.trim());
    location.reload();
  });
  // In the capture phase: OpenSeadragon's canvas keeps the keys it gets to itself.
  document.addEventListener(
    "keydown",
    (e) => {
      const typing = e.target.matches("input:not([type=checkbox]):not([type=range]), textarea, select");
      if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "n") run(() => step(+1))();
      else if (e.key === "p") run(() => step(-1))();
      else if (DECISION_KEYS[e.key]) run(() => decide(DECISION_KEYS[e.key]))();
      else return;
      e.preventDefault();
      e.stopPropagation();
    },
    true,
  );

  async function start() {
    if (!job) throw new Error("no job: open this page as /viewer?job=JOB_ID");
    await showSummary();
    await openSlide();
    await Promise.all([loadQueue(), loadReviews()]);
    document.body.dataset.ready = "1";
  }
  start().catch(showError);
})();
