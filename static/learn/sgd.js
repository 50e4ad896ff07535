// SGD from scratch, animated: fetch a run's trajectory and replay it, one SGD step per frame.
(function () {
  "use strict";

  const form = document.getElementById("sgd-form");
  const fitCanvas = document.getElementById("sgd-canvas");
  const lossCanvas = document.getElementById("sgd-loss");
  const stepText = document.getElementById("sgd-step");
  const status = document.getElementById("sgd-status");
  const gifLink = document.getElementById("sgd-gif");
  const replay = document.getElementById("sgd-replay");
  const defaults = JSON.parse(form.dataset.defaults);
  const COLORS = { ink: "#1d2327", muted: "#8a959c", grid: "#eceeea", line: "#c0392b",
                   loss: "#2f6f4f", blue: [31, 119, 180], orange: [255, 127, 14] };

  let run = null, view = null, started = 0, raf = 0, latest = 0;

  function fmt(v) {
    return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : v.toPrecision(3);
  }

  // Map data coordinates to canvas pixels inside a margin.
  function frame(canvas, xmin, xmax, ymin, ymax) {
    const m = { l: 44, r: 18, t: 12, b: 34 };
    const w = canvas.width - m.l - m.r, h = canvas.height - m.t - m.b;
    return {
      m, w, h, xmin, xmax, ymin, ymax,
      x: (v) => m.l + (v - xmin) / (xmax - xmin) * w,
      y: (v) => m.t + (1 - (v - ymin) / (ymax - ymin)) * h,
    };
  }

  function axes(ctx, f, xticks, yticks, ylabel) {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    ctx.strokeStyle = COLORS.grid; ctx.fillStyle = COLORS.muted; ctx.lineWidth = 1;
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const [v, label] of xticks) {
      ctx.beginPath(); ctx.moveTo(f.x(v), f.m.t); ctx.lineTo(f.x(v), f.m.t + f.h); ctx.stroke();
      ctx.fillText(label, f.x(v), f.m.t + f.h + 6);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const [v, label] of yticks) {
      ctx.beginPath(); ctx.moveTo(f.m.l, f.y(v)); ctx.lineTo(f.m.l + f.w, f.y(v)); ctx.stroke();
      ctx.fillText(label, f.m.l - 6, f.y(v));
    }
    ctx.strokeStyle = COLORS.muted; ctx.strokeRect(f.m.l, f.m.t, f.w, f.h);
    if (ylabel) { ctx.textAlign = "left"; ctx.textBaseline = "top"; ctx.fillText(ylabel, f.m.l + 6, f.m.t + 4); }
  }

  function ticks(lo, hi, n) {
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    const nice = [1, 2, 5, 10].map((k) => k * step).find((s) => (hi - lo) / s <= n);
    const out = [];
    for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push([v, +v.toFixed(6) + ""]);
    return out;
  }

  // Fix each canvas's scales once per run, so that only the model moves.
  function prepare(data) {
    const xs = data.points.map((p) => p[0]), ys = data.points.map((p) => p[1]);
    const pad = 0.3;
    const fit = frame(fitCanvas, Math.min(...xs) - pad, Math.max(...xs) + pad,
                      Math.min(...ys) - pad, Math.max(...ys) + pad);
    const logs = data.steps.map((s) => Math.log10(Math.max(s.loss, 1e-12)));
    let lo = Math.floor(Math.min(...logs) * 2) / 2, hi = Math.ceil(Math.max(...logs) * 2) / 2;
    if (hi <= lo) hi = lo + 1;
    const loss = frame(lossCanvas, 0, Math.max(1, data.steps_total), lo, hi);
    const yt = [];
    for (let e = Math.ceil(lo); e <= hi; e++) yt.push([e, e >= -2 && e <= 3 ? String(Math.pow(10, e)) : "1e" + e]);
    return { fit, loss, fitTicks: [ticks(fit.xmin, fit.xmax, 6), ticks(fit.ymin, fit.ymax, 6)],
             lossTicks: [ticks(0, loss.xmax, 5), yt] };
  }

  function shade(ctx, f, p) {
    const cell = 8;
    for (let px = f.m.l; px < f.m.l + f.w; px += cell) {
      for (let py = f.m.t; py < f.m.t + f.h; py += cell) {
        const x1 = f.xmin + (px + cell / 2 - f.m.l) / f.w * (f.xmax - f.xmin);
        const x2 = f.ymax - (py + cell / 2 - f.m.t) / f.h * (f.ymax - f.ymin);
        const prob = 1 / (1 + Math.exp(-(p[0] * x1 + p[1] * x2 + p[2])));
        const c = prob > 0.5 ? COLORS.orange : COLORS.blue;
        ctx.fillStyle = `rgba(${c[0]},${c[1]},${c[2]},${(0.28 * Math.abs(2 * prob - 1)).toFixed(3)})`;
        ctx.fillRect(px, py, cell, cell);
      }
    }
  }

  function modelLine(ctx, f, p) {
    ctx.beginPath();
    if (run.model === "linear") {
      ctx.moveTo(f.x(f.xmin), f.y(p[0] * f.xmin + p[1]));
      ctx.lineTo(f.x(f.xmax), f.y(p[0] * f.xmax + p[1]));
    } else if (Math.abs(p[1]) > 1e-9) {
      ctx.moveTo(f.x(f.xmin), f.y(-(p[0] * f.xmin + p[2]) / p[1]));
      ctx.lineTo(f.x(f.xmax), f.y(-(p[0] * f.xmax + p[2]) / p[1]));
    } else if (Math.abs(p[0]) > 1e-9) {
      ctx.moveTo(f.x(-p[2] / p[0]), f.m.t); ctx.lineTo(f.x(-p[2] / p[0]), f.m.t + f.h);
    }
    ctx.stroke();
  }

  function drawFit(i) {
    const ctx = fitCanvas.getContext("2d"), f = view.fit, p = run.steps[i].params;
    axes(ctx, f, view.fitTicks[0], view.fitTicks[1], run.model === "linear" ? "y against x" : "x₂ against x₁");
    ctx.save();
    ctx.beginPath(); ctx.rect(f.m.l, f.m.t, f.w, f.h); ctx.clip();
    if (run.model === "logistic") shade(ctx, f, p);
    run.points.forEach((pt, k) => {
      const c = run.labels ? (run.labels[k] ? COLORS.orange : COLORS.blue) : null;
      ctx.fillStyle = c ? `rgb(${c.join(",")})` : COLORS.ink;
      ctx.beginPath(); ctx.arc(f.x(pt[0]), f.y(pt[1]), 3, 0, 2 * Math.PI); ctx.fill();
    });
    ctx.strokeStyle = COLORS.line; ctx.lineWidth = 1.5;
    for (let k = Math.max(0, i - 5); k < i; k++) {  // the last few steps, fading: SGD's path
      ctx.globalAlpha = 0.1 + 0.06 * (k - i + 6);
      modelLine(ctx, f, run.steps[k].params);
    }
    ctx.globalAlpha = 1; ctx.lineWidth = 2.5;
    modelLine(ctx, f, p);
    ctx.restore();
    if (run.diverged && i === run.steps.length - 1) {
      ctx.font = "bold 16px system-ui, sans-serif";
      ctx.textAlign = "center"; ctx.textBaseline = "middle";
      const text = "Diverged: each step overshoots further", cx = f.m.l + f.w / 2, cy = f.m.t + 40;
      const tw = ctx.measureText(text).width;
      ctx.fillStyle = "rgba(255,255,255,.88)"; ctx.fillRect(cx - tw / 2 - 8, cy - 14, tw + 16, 28);
      ctx.fillStyle = "rgba(161,42,42,.95)"; ctx.fillText(text, cx, cy);
    }
  }

  function drawLoss(upto) {
    const ctx = lossCanvas.getContext("2d"), f = view.loss;
    axes(ctx, f, view.lossTicks[0], view.lossTicks[1], run.words.loss + " (log scale)");
    const y = (s) => f.y(Math.log10(Math.max(s.loss, 1e-12)));
    ctx.strokeStyle = COLORS.loss; ctx.lineWidth = 2; ctx.beginPath();
    for (let i = 0; i <= upto; i++) {
      const s = run.steps[i];
      if (i === 0) ctx.moveTo(f.x(s.step), y(s)); else ctx.lineTo(f.x(s.step), y(s));
    }
    ctx.stroke();
    const s = run.steps[upto];
    ctx.fillStyle = COLORS.line; ctx.beginPath(); ctx.arc(f.x(s.step), y(s), 4.5, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = COLORS.muted; ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText("step", f.m.l + f.w / 2, lossCanvas.height - 1);
  }

  function describe(s) {
    const params = run.words.names.map((n, i) => `${n} ${fmt(s.params[i])}`).join(", ");
    const acc = s.accuracy === null ? "" : ` · accuracy ${Math.round(s.accuracy * 100)}%`;
    return `loss ${fmt(s.loss)} · ${params}${acc}`;
  }

  function show(i) {
    const s = run.steps[i], last = i === run.steps.length - 1;
    drawFit(i);
    drawLoss(i);
    stepText.textContent = `Step ${s.step} of ${run.steps_total} · epoch ${s.epoch} of ${run.options.epochs}`;
    fitCanvas.dataset.step = String(s.step);
    if (!run.diverged) status.textContent = last ? run.summary : describe(s);
  }

  // About 50 ms per step, between two and eight seconds in all.
  function tick(now) {
    const n = run.steps.length;
    const duration = Math.min(8000, Math.max(2000, n * 50));
    const i = Math.min(n - 1, Math.max(0, Math.floor((now - started) / duration * n)));  // rAF's time may precede play()
    show(i);
    if (i < n - 1) raf = requestAnimationFrame(tick);
    else { replay.hidden = false; fitCanvas.dataset.done = "1"; }
  }

  function play() {
    cancelAnimationFrame(raf);
    replay.hidden = true;
    delete fitCanvas.dataset.done;
    started = performance.now();
    raf = requestAnimationFrame(tick);
  }

  function fillWords(data) {
    const opts = Object.assign({ steps_per_epoch: data.steps_per_epoch }, data.options);
    document.querySelectorAll("[data-opt]").forEach((el) => { el.textContent = opts[el.dataset.opt]; });
    document.querySelectorAll("[data-word]").forEach((el) => { el.textContent = data.words[el.dataset.word]; });
  }

  function query() {
    const params = new URLSearchParams(new FormData(form));
    return params.toString();
  }

  async function load() {
    const mine = ++latest, q = query();
    status.classList.remove("diverged", "error-message");
    status.textContent = "Fitting…";
    gifLink.href = form.dataset.gif + "?" + q;
    history.replaceState(null, "", form.action + "?" + q);
    let data;
    try {
      const r = await fetch(form.dataset.json + "?" + q, { headers: { Accept: "application/json" } });
      data = await r.json();
      if (!r.ok) throw new Error(data.error || "the run failed (" + r.status + ")");
    } catch (e) {
      if (mine !== latest) return;
      cancelAnimationFrame(raf);
      status.classList.add("error-message");
      status.textContent = "Cannot run: " + e.message;
      return;
    }
    if (mine !== latest) return;  // a newer request has been made since
    run = data;
    gifLink.parentElement.hidden = false;
    view = prepare(data);
    fillWords(data);
    if (data.diverged) {
      status.classList.add("diverged");
      status.textContent = "Diverged. " + data.reason;
    }
    play();
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  form.elements.model.addEventListener("change", () => {
    const d = defaults[form.elements.model.value];
    for (const k of ["lr", "bs", "epochs"]) form.elements[k].value = d[k];
    load();
  });
  replay.addEventListener("click", play);
  if (!("error" in form.dataset)) load();  // else the server's message stays until the next run
})();
