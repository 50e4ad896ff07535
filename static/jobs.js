// Keep every job progress block (templates/jobs/_progress.html) current by polling its JSON.
(function () {
  "use strict";
  const FINISHED = ["succeeded", "failed", "cancelled"];

  function text(root, sel, value) {
    const el = root.querySelector(sel);
    if (el) el.textContent = value;
  }

  function addItems(items) {
    const body = document.querySelector("table.job-items tbody");
    if (!body) return;
    for (const it of items) {
      if (body.querySelector(`tr[data-item="${it.id}"]`)) continue;
      const tr = document.createElement("tr");
      tr.dataset.item = it.id;
      tr.className = it.status;
      for (const value of [it.key, it.status, it.detail || ""]) {
        const td = document.createElement("td");
        td.textContent = value;
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function render(root, job) {
    text(root, ".job-status", job.status);
    text(root, ".job-phase", FINISHED.includes(job.status) ? "" : job.phase || ""); // not "succeeded downloading"
    const bar = root.querySelector(".job-bar");
    if (bar && job.percent !== null) bar.value = job.percent;
    text(root, ".job-count", job.total ? `${job.done} / ${job.total}` : job.done ? `${job.done}` : "");
    text(root, ".job-percent", job.percent !== null ? `${job.percent}%` : "");
    text(root, ".job-eta", job.eta_seconds !== null ? `about ${Math.round(job.eta_seconds)} s left` : "");
    text(root, ".job-message", job.message || "");
    const detail = root.querySelector(".job-detail");
    if (detail) {
      detail.replaceChildren(...Object.entries(job.detail || {}).map(([k, v]) => {
        const span = document.createElement("span");
        const strong = document.createElement("strong");
        span.textContent = `${k.replaceAll("_", " ")}: `;
        strong.textContent = v;
        span.appendChild(strong);
        return span;
      }));
    }
    const counts = document.querySelector(".job-counts");
    if (counts && job.counts) { // the same pills the page drew
      counts.replaceChildren(...Object.entries(job.counts).flatMap(([k, n]) => {
        const pill = document.createElement("span");
        pill.className = `pill ${k}`;
        pill.textContent = `${k}: ${n}`;
        return [pill, " "];
      }));
    }
    if (FINISHED.includes(job.status)) {
      const cancel = root.querySelector(".job-cancel");
      if (cancel) cancel.remove();
    }
    root.dispatchEvent(new CustomEvent("job-update", { detail: job, bubbles: true }));
  }

  function poll(root) {
    let after = 0;
    const withItems = root.dataset.jobItems === "yes";
    document.querySelectorAll("table.job-items tr[data-item]").forEach((tr) => {
      after = Math.max(after, Number(tr.dataset.item));
    });
    async function tick() {
      let job;
      try {
        const res = await fetch(`${root.dataset.jobStatus}?after=${after}`, { headers: { Accept: "application/json" } });
        if (!res.ok) throw new Error(res.status);
        job = await res.json();
      } catch (e) {
        setTimeout(tick, 3000);
        return;
      }
      if (withItems && job.items.length) {
        addItems(job.items);
        after = job.items[job.items.length - 1].id;
      }
      render(root, job);
      if (!FINISHED.includes(job.status)) setTimeout(tick, 700);
      else if (root.dataset.jobStatusNow !== job.status) root.dispatchEvent(new CustomEvent("job-finished", { detail: job, bubbles: true }));
    }
    if (!FINISHED.includes(root.dataset.jobStatusNow)) tick();
  }

  document.querySelectorAll("[data-job-status]").forEach(poll);
})();
