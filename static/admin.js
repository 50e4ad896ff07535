// Admin pages: the retrain form's estimate and ImageNet-weights note, kept up with the form;
// the running training's latest losses, a fresh page when it finishes, an "uploading" note while
// a notebook model is sent, and a fresh import job page when the import ends (its link to the
// new model). jobs.js does the polling.
(function () {
  "use strict";

  // The estimate: asked of /admin/estimate.json a moment after the form stops changing; an
  // answer to an older question is dropped.
  const trainForm = document.querySelector("form.train-form");
  const box = trainForm && trainForm.querySelector("[data-estimate-url]");
  let asked = 0, timer = null;

  function showEstimate(e) {
    if (e.weights) {  // a form that cannot run keeps the last word on the weights
      const note = box.querySelector("[data-weights-note]");
      note.hidden = false;
      note.textContent = e.weights.note;
      note.classList.toggle("warning", e.weights.warning);
    }
    const rows = box.querySelector("[data-estimate-phases]");
    rows.replaceChildren(...(e.phases || []).map((p) => {
      const tr = document.createElement("tr");
      for (const [tag, text, cls] of [["th", p.name], ["td", p.time], ["td", p.detail, "hint"]]) {
        const cell = document.createElement(tag);
        cell.textContent = text;
        if (tag === "th") cell.scope = "row";
        if (cls) cell.className = cls;
        tr.append(cell);
      }
      return tr;
    }));
    box.querySelector("[data-estimate-table]").hidden = !(e.phases && e.phases.length);
    box.querySelector("[data-estimate-total]").textContent = e.total || "";
    const basis = box.querySelector("[data-estimate-basis]");
    basis.textContent = e.error || e.basis;
    basis.classList.toggle("error-message", Boolean(e.error));
  }

  async function askEstimate() {
    const n = ++asked;
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(trainForm)) {
      if (name !== "csrf_token") query.append(name, value);
    }
    try {
      const r = await fetch(`${box.dataset.estimateUrl}?${query}`,
                            { headers: { Accept: "application/json" } });
      const e = await r.json();
      if (n === asked) showEstimate(e);
    } catch (err) {
      if (n === asked) showEstimate({ error: "No estimate: the server did not answer." });
    }
  }

  if (box) {
    const later = () => { clearTimeout(timer); timer = setTimeout(askEstimate, 250); };
    trainForm.addEventListener("input", later);
    trainForm.addEventListener("change", later);
  }

  function lossesLine(d) {
    if (!d) return "";
    const parts = [];
    if (d.epoch) parts.push(`epoch ${d.epoch} · batch ${d.batch}`);
    if (d.smooth_loss !== undefined) parts.push(`smoothed loss ${d.smooth_loss}`);
    if (d.last_train_loss !== undefined) {
      parts.push(`last epoch: train_loss ${d.last_train_loss}, valid_loss ${d.last_valid_loss}, error_rate ${d.last_error_rate}`);
    }
    return parts.join(" · ");
  }

  const losses = document.querySelector("[data-train-losses]");
  document.addEventListener("job-update", (e) => {
    if (losses && e.detail.kind === "train") losses.textContent = lossesLine(e.detail.detail);
  });
  // When the training finishes, show the page again: the new version, its outcome, its report.
  document.addEventListener("job-finished", (e) => {
    if (e.detail.kind === "train") setTimeout(() => window.location.reload(), 800);
  });

  const form = document.getElementById("import-form");
  if (form) {
    form.addEventListener("submit", () => {
      document.getElementById("import-wait").hidden = false;
      form.querySelector("button[type=submit]").disabled = true;
    });
  }
  // An import job's page (or the import page waiting on another model job): show the outcome.
  const importPage = form || document.querySelector("script[data-import-job]");
  document.addEventListener("job-finished", (e) => {
    if (importPage && e.detail.kind !== "train") setTimeout(() => window.location.reload(), 800);
  });
})();
