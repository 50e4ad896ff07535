// Admin pages: the running training's latest losses, a fresh page when it finishes, an
// "uploading" note while a notebook model is sent, and a fresh import job page when the import
// ends (its link to the new model). jobs.js does the polling.
(function () {
  "use strict";

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
