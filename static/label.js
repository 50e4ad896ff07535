// Labeling pages: uploads in batches with progress, linked outcomes, and the queue's keyboard.
// Every page works without this script; it makes large uploads and labeling quick.
(function () {
  "use strict";
  const BATCH_FILES = 20;
  const BATCH_BYTES = 8 * 1024 * 1024; // well under the server's upload cap

  function row(item) {
    const tr = document.createElement("tr");
    tr.className = item.status;
    tr.dataset.item = item.id;
    for (const value of [item.key, item.status, item.detail || ""]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.cells[0].className = "key";
    if (item.url) link(tr, item.url, item.image_id);
    return tr;
  }

  function link(tr, href, imageId) {
    const cell = tr.cells[tr.cells.length - 1];
    if (cell.querySelector("a")) return;
    const a = document.createElement("a");
    a.className = "image-link";
    a.href = href;
    a.textContent = `image #${imageId}`;
    cell.append(" ", a);
  }

  function batches(files) {
    const out = [];
    let batch = [], bytes = 0;
    for (const f of files) {
      if (batch.length && (batch.length >= BATCH_FILES || bytes + f.size > BATCH_BYTES)) {
        out.push(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(f);
      bytes += f.size;
    }
    if (batch.length) out.push(batch);
    return out;
  }

  // ---- uploads: send the chosen or dropped files in batches, showing each file's outcome ----
  function setUpUpload(form) {
    const input = form.querySelector("#files");
    const bar = form.querySelector("#upload-progress");
    const status = form.querySelector("#upload-status");
    const card = document.getElementById("upload-results-card");
    const body = document.querySelector("#upload-results tbody");
    const summary = document.getElementById("upload-summary");
    const button = form.querySelector("button[type=submit]");

    async function send(files) {
      if (!files.length) return;
      const counts = {};
      let done = 0;
      bar.hidden = false;
      bar.max = files.length;
      bar.value = 0;
      card.hidden = false;
      body.textContent = "";
      button.disabled = true;
      try {
        for (const batch of batches(files)) {
          status.textContent = `Uploading ${done + 1}–${done + batch.length} of ${files.length}…`;
          const data = new FormData();
          data.append("csrf_token", form.elements.csrf_token.value);
          data.append("label", form.elements.label.value);
          batch.forEach((f) => data.append("files", f, f.name));
          const res = await fetch(form.dataset.json, { method: "POST", body: data, headers: { Accept: "application/json" } });
          const answer = await res.json().catch(() => ({ error: `the server answered ${res.status}` }));
          if (!res.ok) {
            batch.forEach((f) => body.appendChild(row({ key: f.name, status: "rejected", detail: answer.error })));
            counts.rejected = (counts.rejected || 0) + batch.length;
          } else {
            for (const item of answer.items) {
              body.appendChild(row(item));
              counts[item.status] = (counts[item.status] || 0) + 1;
            }
          }
          done += batch.length;
          bar.value = done;
        }
        status.textContent = `Uploaded ${done} of ${files.length}.`;
      } catch (e) {
        status.textContent = `The upload stopped after ${done} of ${files.length} files: ${e.message}. Those shown are stored.`;
      }
      summary.textContent = `stored ${counts.stored || 0}, duplicates ${counts.duplicate || 0}, rejected ${counts.rejected || 0}`;
      button.disabled = false;
      input.value = "";
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      send([...input.files]);
    });
    window.winnowDropZone(form, send);
  }

  // ---- an import's page: link the images that jobs.js adds as outcomes arrive ----
  function setUpImport(table) {
    const base = table.dataset.media.replace(/0$/, "");
    document.addEventListener("job-update", (e) => {
      for (const item of e.detail.items || []) {
        const tr = table.querySelector(`tr[data-item="${item.id}"]`);
        if (tr && item.image_id) link(tr, base + item.image_id, item.image_id);
      }
    });
  }

  // ---- the queue: number keys label, Enter accepts the suggestion, S skips, D deletes, U undoes ----
  function setUpQueue() {
    const press = (el) => { if (el && !el.disabled) { el.classList.add("pressed"); el.form.requestSubmit(el); } };
    let sent = false;
    document.addEventListener("keydown", (e) => {
      if (sent || e.altKey || e.metaKey || e.target.closest("input, textarea, select")) return;
      const undo = (e.key === "z" && e.ctrlKey) || (!e.ctrlKey && e.key.toLowerCase() === "u");
      if (e.ctrlKey && !undo) return;
      let target = null;
      if (/^[1-9]$/.test(e.key)) target = document.querySelector(`.class-button[data-key="${e.key}"]`);
      else if (e.key === "Enter") {
        const s = document.getElementById("suggestion");
        target = s && document.querySelector(`.class-button[data-label="${CSS.escape(s.dataset.label)}"]`);
      } else if (e.key.toLowerCase() === "s" || e.key === "ArrowRight") target = document.getElementById("skip");
      else if (e.key.toLowerCase() === "d" || e.key === "Delete") target = document.getElementById("delete");
      else if (undo) target = document.getElementById("undo");
      if (!target || target.disabled) return;
      e.preventDefault();
      sent = true; // one key, one action: the page reloads with the next image
      press(target);
    });
  }

  const upload = document.getElementById("upload-form");
  if (upload) setUpUpload(upload);
  const items = document.getElementById("import-items");
  if (items) setUpImport(items);
  if (document.getElementById("queue") || document.getElementById("queue-empty")) setUpQueue();
})();
