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

  // Link an outcome's image: the detail's own "image #N" ("same picture as image #3"), else in front.
  function link(tr, href, imageId) {
    const cell = tr.cells[tr.cells.length - 1];
    if (cell.querySelector("a")) return;
    const ref = `image #${imageId}`;
    const a = document.createElement("a");
    a.className = "image-link";
    a.href = href;
    a.textContent = ref;
    const text = cell.textContent;
    const at = text.indexOf(ref);
    if (at < 0) cell.replaceChildren(a, text ? ` ${text}` : "");
    else cell.replaceChildren(text.slice(0, at), a, text.slice(at + ref.length));
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

  // An upload's id: its batches name it, so the server lists them as one import.
  function uploadId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs https
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
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
    let sending = null; // the upload under way: leaving the page now would drop its other batches

    // Tell the server the rest of an upload will not come, so its import says it was cut short.
    function stopped(id) {
      const data = new FormData();
      data.append("csrf_token", form.elements.csrf_token.value);
      data.append("upload_id", id);
      navigator.sendBeacon(form.dataset.stopped, data);
    }

    // While batches remain, leaving the page asks first.
    window.addEventListener("beforeunload", (e) => {
      if (!sending) return;
      e.preventDefault();
      e.returnValue = "";
    });
    window.addEventListener("pagehide", () => { if (sending) stopped(sending); });

    async function send(files) {
      if (!files.length) return;
      const id = uploadId();
      const counts = {};
      let done = 0;
      bar.hidden = false;
      bar.max = files.length;
      bar.value = 0;
      card.hidden = false;
      body.textContent = "";
      button.disabled = true;
      sending = id;
      try {
        for (const batch of batches(files)) {
          status.textContent = `Uploading ${done + 1}–${done + batch.length} of ${files.length}…`;
          const data = new FormData();
          data.append("csrf_token", form.elements.csrf_token.value);
          data.append("label", form.elements.label.value);
          data.append("upload_id", id);
          data.append("upload_total", files.length);
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
        stopped(id);
      }
      sending = null;
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
        const queue = document.getElementById("queue");
        if (!target && queue && !e.target.closest("button, a")) { // nothing to accept: say why
          e.preventDefault();
          document.getElementById("queue-said").textContent = queue.dataset.noSuggestion;
          return;
        }
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
