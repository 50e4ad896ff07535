// The cleaner's pages: decisions saved without a reload, many at once, and keyboard navigation.
// Without JavaScript every form still posts and the page comes back with the same result.
(function () {
  "use strict";
  const said = document.querySelector(".clean-said");
  const grid = document.querySelector(".clean-grid, .pairs");
  const bulk = document.getElementById("bulk");
  const cards = () => Array.from(document.querySelectorAll(".clean-card"));
  const OUTCOME = { keep: () => "Kept", delete: () => "Deleted", relabel: (l) => `Relabelled as ${l}` };
  let current = -1;
  let left = 0; // decided cards that drop out of this list: the next page starts that much earlier

  function say(text, error) {
    if (!said) return;
    said.textContent = text;
    said.classList.toggle("error", Boolean(error));
  }

  async function post(form, data) {
    // getAttribute: the forms have a button named "action", which shadows form.action.
    const res = await fetch(form.getAttribute("action"), { method: "POST", body: data, headers: { Accept: "application/json" } });
    let body = {};
    try { body = await res.json(); } catch (e) { /* not JSON: say the status */ }
    if (!res.ok) throw new Error(body.error || `The server answered ${res.status}.`);
    return body;
  }

  function leaves(action) {
    return action !== "relabel" || (grid && grid.dataset.leavesOnRelabel === "yes");
  }

  function mark(card, action, label) {
    if (!card || card.classList.contains("decided")) return;
    card.classList.add("decided", action);
    card.querySelectorAll(".outcome").forEach((p) => { p.textContent = OUTCOME[action](label); });
    card.querySelectorAll("button, select, input").forEach((el) => { el.disabled = true; });
    if (leaves(action)) left += 1;
    const next = document.querySelector(".pager a.next");
    if (next) {
      const url = new URL(next.href);
      url.searchParams.set("offset", Math.max(0, Number(next.dataset.offset) - left));
      next.href = url.toString();
    }
  }

  function countSelected() {
    const n = document.querySelectorAll('input[name="image_id"][form="bulk"]:checked').length;
    document.querySelectorAll(".n-selected").forEach((el) => { el.textContent = n; });
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("decide")) return;
    event.preventDefault();
    const button = event.submitter;
    const data = new FormData(form, button);
    if (button && button.dataset.label) data.set("label", button.dataset.label);
    const action = data.get("action");
    const ids = data.getAll("image_id");
    if (!ids.length) { say("Select some images first.", true); return; }
    let answer;
    try {
      answer = await post(form, data);
    } catch (e) {
      say(e.message, true);
      return;
    }
    say(answer.message);
    const changed = (answer.changed || []).map(String);
    if (!changed.length) return; // nothing changed ("already …"): the cards stay as they are
    const decided = form === bulk
      ? changed.map((id) => document.querySelector(`.clean-card[data-image-id="${id}"]`))
      : [form.closest(".clean-card")];
    decided.forEach((card) => mark(card, action, data.get("label")));
    if (form === bulk) {
      document.querySelectorAll('input[form="bulk"]:checked').forEach((box) => { box.checked = false; });
      countSelected();
    }
  });

  document.addEventListener("change", (event) => {
    if (event.target.matches('input[form="bulk"]')) countSelected();
  });
  document.querySelectorAll(".select-all").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll('input[form="bulk"]:not(:disabled)').forEach((box) => { box.checked = true; });
    countSelected();
  }));

  function focusCard(i) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, i));
    all.forEach((c) => c.classList.remove("current"));
    all[current].classList.add("current");
    all[current].focus({ preventScroll: true });
    all[current].scrollIntoView({ block: "nearest" });
  }

  function decideCurrent(action, pick) {
    const card = cards()[current];
    if (!card || card.classList.contains("decided")) return;
    const button = card.querySelector(`button[value="${action}"]${pick === "accept" ? ".accept" : ":not(.accept)"}`);
    if (!button) return;
    const form = button.form;
    if (typeof pick === "number") {
      const select = form.querySelector('select[name="label"]');
      if (!select || pick >= select.options.length) return;
      select.selectedIndex = pick;
    }
    form.requestSubmit(button);
    focusCard(current + 1);
  }

  document.addEventListener("keydown", (event) => {
    const t = event.target;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (t.matches("select, textarea, input:not([type=checkbox])")) return;
    const k = event.key;
    if (k === "ArrowRight" || k === "j") focusCard(current + 1);
    else if (k === "ArrowLeft" || k === "k") focusCard(current - 1);
    else if (k === " " && current >= 0) {
      const box = cards()[current].querySelector('input[form="bulk"]');
      if (box && !box.disabled) { box.checked = !box.checked; countSelected(); }
    } else if (k === "e") decideCurrent("keep");
    else if (k === "d") decideCurrent("delete");
    else if (k === "a") decideCurrent("relabel", "accept");
    else if (/^[1-9]$/.test(k)) decideCurrent("relabel", Number(k) - 1);
    else if (k === "u") { const undo = document.getElementById("undo-last"); if (undo) undo.requestSubmit(); }
    else return;
    event.preventDefault();
  });

  // New scores arrived: show the lists they give.
  document.addEventListener("job-finished", () => window.location.reload());
})();
