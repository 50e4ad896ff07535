// The cleaner's Map tab: every scored image as a dot at its place in the 2D projection, coloured
// by label and marked with what the other tabs suspect (dot_canvas.js draws it). Hover shows the
// thumbnail, a click opens the picture, a dragged box selects; decisions post to the same
// endpoint as the other tabs' bulk bar, and the page's "Undo last decision" (or u) takes one
// back and reloads the page, and with it the map.
import { DotCanvas, colour, markPath } from "./dot_canvas.js";

const root = document.getElementById("map");
const MARKS = {
  label_issue: { title: "suspected label errors", shape: "ring" },
  outlier: { title: "outliers", shape: "cross" },
  duplicate: { title: "near-duplicates", shape: "square" },
};
const LISTED = 200;

if (root) {
  const canvas = document.getElementById("map-canvas");
  const dots = new DotCanvas(canvas);
  const tip = document.getElementById("map-tip");
  const form = document.getElementById("map-decide");
  const note = root.querySelector(".map-note");
  const said = document.querySelector(".clean-said");
  const url = (kind, id) => root.dataset[kind].replace("123456789", String(id));

  let P = null; // map.json's columns
  let n = 0, alive, selected, labelOf;
  let classes = [];
  let hovered = -1, drag = null, opened = -1;
  const shown = { label_issue: true, outlier: true, duplicate: true };
  const timings = { load_ms: null, draw_ms: null, select_ms: null, hover_ms: [] };

  const say = (text, error) => {
    if (!said) return;
    said.textContent = text;
    said.classList.toggle("error", Boolean(error));
  };

  const classIndex = (label) => {
    if (!classes.includes(label)) classes.push(label);
    return classes.indexOf(label);
  };

  function redraw() {
    timings.draw_ms = dots.draw({
      shown: alive, selected, labelOf, classes: classes.length,
      marks: Object.keys(MARKS).filter((k) => shown[k]).map((k) => ({ shape: MARKS[k].shape, on: P[k] })),
    });
    frame();
  }

  const frame = () => dots.frame(hovered, drag && drag.moved ? drag : null);

  // ---- hover, click, box selection ---------------------------------------------------------

  const thumbs = new Map(); // image id -> <img>, so hovering back does not fetch again
  function thumb(i) {
    const id = P.image_id[i];
    if (!thumbs.has(id)) {
      const img = new Image(128, 128);
      img.alt = `image #${id}, labelled ${P.label[i]}`;
      img.src = url("thumbUrl", id);
      thumbs.set(id, img);
      if (thumbs.size > 300) thumbs.delete(thumbs.keys().next().value);
    }
    return thumbs.get(id);
  }

  function facts(i) {
    const marks = Object.keys(MARKS).filter((k) => P[k][i]).map((k) => MARKS[k].title.replace(/s$/, ""));
    return `${P.label[i]} · ${P.split[i]}${marks.length ? ` · ${marks.join(", ")}` : ""}`;
  }

  function showTip(i, x, y) {
    tip.querySelector(".map-tip-img").replaceChildren(thumb(i));
    tip.querySelector("p").textContent = `${P.name[i]}\n${facts(i)}`;
    tip.hidden = false;
    placeTip(x, y);
  }

  function placeTip(x, y) {
    const w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = `${x + 16 + w > dots.width ? x - 16 - w : x + 16}px`;
    tip.style.top = `${Math.max(0, Math.min(dots.height - h, y - h / 2))}px`;
  }

  function at(event) {
    const box = canvas.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !P) return;
    const [x, y] = at(event);
    drag = { x0: x, y0: y, x1: x, y1: y, moved: false, add: event.shiftKey };
    canvas.setPointerCapture(event.pointerId);
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!P) return;
    const started = performance.now();
    const [x, y] = at(event);
    if (drag) {
      Object.assign(drag, { x1: x, y1: y });
      drag.moved = drag.moved || Math.abs(x - drag.x0) + Math.abs(y - drag.y0) > 4;
      if (drag.moved) { hovered = -1; tip.hidden = true; frame(); }
      return;
    }
    const i = dots.hit(x, y, alive);
    if (i !== hovered) {
      hovered = i;
      if (i >= 0) showTip(i, x, y); else tip.hidden = true;
      frame();
    } else if (i >= 0) placeTip(x, y);
    timings.hover_ms.push(performance.now() - started);
    if (timings.hover_ms.length > 500) timings.hover_ms.shift();
  });

  canvas.addEventListener("pointerup", () => {
    if (!drag) return;
    const d = drag;
    drag = null;
    const started = performance.now();
    if (d.moved) {
      select(dots.inBox(d, alive), !d.add);
      timings.select_ms = performance.now() - started;
    } else {
      const i = dots.hit(d.x0, d.y0, alive);
      if (i >= 0) { select([i], !d.add, d.add); open(i); } else if (!d.add) select([], true);
    }
    frame();
  });

  canvas.addEventListener("pointerleave", () => {
    if (drag || !P) return;
    hovered = -1;
    tip.hidden = true;
    frame();
  });

  // Select rows: `fresh` clears the selection first, `toggle` flips a row that is already in.
  function select(rows, fresh, toggle) {
    if (fresh) selected.fill(0);
    for (const i of rows) selected[i] = toggle ? 1 - selected[i] : 1;
    selectionChanged();
  }

  function selectedRows() {
    const rows = [];
    for (let i = 0; i < n; i++) if (alive[i] && selected[i]) rows.push(i);
    return rows;
  }

  function nameItem(i) {
    const li = document.createElement("li");
    const a = Object.assign(document.createElement("a"), {
      href: url("imageUrl", P.image_id[i]), target: "_blank", rel: "noopener", textContent: P.name[i] });
    li.append(a, ` ${facts(i)}`);
    return li;
  }

  function selectionChanged() {
    const rows = selectedRows();
    document.getElementById("map-n").textContent = rows.length;
    form.hidden = rows.length === 0;
    const box = document.getElementById("map-selected");
    box.hidden = rows.length === 0;
    const more = rows.length > LISTED
      ? [Object.assign(document.createElement("li"), { textContent: `and ${rows.length - LISTED} more` })] : [];
    box.querySelector(".map-names").replaceChildren(...rows.slice(0, LISTED).map(nameItem), ...more);
    redraw();
  }

  function open(i) {
    opened = i;
    const panel = document.getElementById("map-open");
    const img = new Image(256, 256);
    img.alt = `image #${P.image_id[i]}, labelled ${P.label[i]}`;
    img.src = url("openUrl", P.image_id[i]);
    const link = panel.querySelector(".map-open-img");
    link.href = url("imageUrl", P.image_id[i]);
    link.replaceChildren(img);
    panel.querySelector(".map-open-name").textContent = P.name[i];
    panel.querySelector(".map-open-facts").textContent = facts(i);
    panel.querySelector(".map-open-full").href = url("imageUrl", P.image_id[i]);
    panel.hidden = false;
  }

  // ---- decisions ---------------------------------------------------------------------------

  async function post(data) {
    const res = await fetch(form.getAttribute("action"), { method: "POST", body: data, headers: { Accept: "application/json" } });
    let body = {};
    try { body = await res.json(); } catch (e) { /* not JSON: say the status */ }
    if (!res.ok) throw new Error(body.error || `The server answered ${res.status}.`);
    return body;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form, event.submitter);
    const rows = selectedRows();
    if (!rows.length) { say("Select some images first.", true); return; }
    rows.forEach((i) => data.append("image_id", P.image_id[i]));
    let answer;
    try {
      answer = await post(data);
    } catch (e) {
      say(e.message, true);
      return;
    }
    say(answer.message);
    const label = data.get("label");
    const changed = new Set((answer.changed || rows.map((i) => P.image_id[i])).map(Number));
    for (const i of rows.filter((r) => changed.has(P.image_id[r]))) {
      if (data.get("action") === "delete") alive[i] = 0;
      else { P.label[i] = label; labelOf[i] = classIndex(label); }
    }
    if (opened >= 0 && rows.includes(opened)) {
      if (alive[opened]) open(opened); else document.getElementById("map-open").hidden = true;
    }
    legend();
    select([], true);
  });

  document.getElementById("map-clear").addEventListener("click", () => select([], true));

  // ---- legend and loading ------------------------------------------------------------------

  function classItem(name, k, count) {
    const li = document.createElement("li");
    const swatch = Object.assign(document.createElement("span"), { className: "swatch" });
    swatch.style.background = colour(k);
    li.append(swatch, ` ${name} (${count})`);
    return li;
  }

  function markItem(kind) {
    const rows = [];
    for (let i = 0; i < n; i++) if (alive[i] && P[kind][i]) rows.push(i);
    const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: shown[kind] });
    box.addEventListener("change", () => { shown[kind] = box.checked; redraw(); });
    const icon = Object.assign(document.createElement("canvas"), { width: 18, height: 18 });
    const g = icon.getContext("2d");
    g.lineWidth = 1.2;
    g.beginPath();
    markPath(g, MARKS[kind].shape, 9, 9, 6);
    g.stroke();
    const label = Object.assign(document.createElement("label"), { title: P.marks[kind] });
    label.append(box, icon, ` ${MARKS[kind].title} (${rows.length})`);
    const pick = Object.assign(document.createElement("button"), {
      type: "button", className: "secondary small", textContent: "Select them", disabled: !rows.length });
    pick.addEventListener("click", () => select(rows, true));
    const li = document.createElement("li");
    li.append(label, " ", pick);
    return li;
  }

  function legend() {
    const counts = new Array(classes.length).fill(0);
    for (let i = 0; i < n; i++) if (alive[i]) counts[labelOf[i]] += 1;
    root.querySelector(".map-classes").replaceChildren(
      ...classes.map((name, k) => classItem(name, k, counts[k])).filter((li, k) => counts[k] > 0));
    root.querySelector(".map-marks").replaceChildren(...Object.keys(MARKS).map(markItem));
  }

  async function load() {
    const started = performance.now();
    const res = await fetch(root.dataset.pointsUrl, { headers: { Accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || `The server answered ${res.status}.`);
    P = { ...body.points, marks: body.marks };
    n = P.x.length;
    alive = new Uint8Array(n).fill(1);
    selected = new Uint8Array(n);
    classes = Array.from(form.querySelectorAll('select[name="label"] option'), (o) => o.value);
    labelOf = Int32Array.from(P.label, classIndex);
    dots.setPoints(P.x, P.y);
    dots.layout();
    legend();
    redraw();
    timings.load_ms = performance.now() - started;
    root.dataset.points = String(n); // drawn: the tests wait for this
    const unplaced = body.unplaced ? `${body.unplaced} image${body.unplaced === 1 ? "" : "s"} added since `
      + "scoring are not on the map: rescore to place them." : "";
    note.textContent = n ? unplaced : "There are no scored images to show.";
  }

  let pending = 0;
  window.addEventListener("resize", () => {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(() => { if (P) { dots.layout(); redraw(); } });
  });

  // For the browser tests and bench/clean_map.py: where a dot is, and how long drawing takes.
  window.winnowMap = {
    timings,
    count: () => n,
    where: (imageId) => (P && P.image_id.includes(imageId) ? dots.where(P.image_id.indexOf(imageId)) : null),
    selectedIds: () => selectedRows().map((i) => P.image_id[i]),
    redraw() { // the whole draw, rasterised
      const started = performance.now();
      redraw();
      dots.flush();
      return performance.now() - started;
    },
  };

  load().catch((e) => {
    note.textContent = `The map could not be loaded: ${e.message}`;
    note.classList.add("error");
  });
}
