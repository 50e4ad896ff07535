// Many dots on a canvas that stays smooth at 20 000 of them (the cleaner's map).
// The dots are drawn once into an offscreen canvas, and again only when what they show changes
// (labels, marks, the selection); a frame copies that canvas and adds the hovered dot and the
// box being dragged. The nearest dot to the pointer is found through a grid of 8-px cells.
export const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const CELL = 8, PAD = 14, HIT = 7, INK = "#1d2327", ACCENT = "#2f6f4f";

export function colour(k) {
  return k < PALETTE.length ? PALETTE[k] : `hsl(${(k * 137.5) % 360} 55% 45%)`;
}

// A mark's outline around (x, y): a ring, a cross or a square.
export function markPath(g, shape, x, y, r) {
  if (shape === "ring") { g.moveTo(x + r, y); g.arc(x, y, r, 0, 2 * Math.PI); }
  else if (shape === "cross") { g.moveTo(x - r, y - r); g.lineTo(x + r, y + r); g.moveTo(x + r, y - r); g.lineTo(x - r, y + r); }
  else g.rect(x - r - 1, y - r - 1, 2 * r + 2, 2 * r + 2);
}

export class DotCanvas {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.base = document.createElement("canvas");
    this.baseCtx = this.base.getContext("2d");
    this.n = 0;
  }

  // Take the dots' places (x, y in [0, 1], y up); call layout() next.
  setPoints(x, y) {
    this.x = x;
    this.y = y;
    this.n = x.length;
    this.px = new Float32Array(this.n);
    this.py = new Float32Array(this.n);
    this.dot = this.n > 10000 ? 3 : this.n > 2000 ? 4 : 6;
    this.markSize = this.dot + (this.n > 2000 ? 1 : 2.5); // small marks on a crowded map
  }

  // Size the canvas to its container and place the dots on it (aspect ratio kept).
  layout() {
    const { canvas, base, n } = this;
    this.dpr = window.devicePixelRatio || 1;
    this.width = canvas.parentElement.clientWidth;
    this.height = Math.round(Math.min(720, Math.max(320, this.width * 0.7)));
    for (const c of [canvas, base]) {
      c.width = Math.round(this.width * this.dpr);
      c.height = Math.round(this.height * this.dpr);
    }
    canvas.style.width = `${this.width}px`;
    canvas.style.height = `${this.height}px`;
    const side = Math.min(this.width, this.height) - 2 * PAD;
    const ox = (this.width - side) / 2, oy = (this.height - side) / 2;
    for (let i = 0; i < n; i++) { this.px[i] = ox + this.x[i] * side; this.py[i] = oy + (1 - this.y[i]) * side; }
    this.buildGrid();
  }

  buildGrid() { // a counting sort of the dots by cell: items[start[c]..start[c+1]] are cell c's
    const { n, px, py } = this;
    const cols = Math.ceil(this.width / CELL) + 1, rows = Math.ceil(this.height / CELL) + 1;
    const cells = new Int32Array(n), start = new Int32Array(cols * rows + 1);
    for (let i = 0; i < n; i++) {
      const gx = Math.min(cols - 1, Math.max(0, Math.floor(px[i] / CELL)));
      const gy = Math.min(rows - 1, Math.max(0, Math.floor(py[i] / CELL)));
      cells[i] = gy * cols + gx;
      start[cells[i] + 1] += 1;
    }
    for (let c = 0; c < cols * rows; c++) start[c + 1] += start[c];
    const fill = start.slice(0, -1), items = new Int32Array(n);
    for (let i = 0; i < n; i++) items[fill[cells[i]]++] = i;
    this.grid = { cols, rows, start, items };
  }

  // The nearest shown dot within a few pixels of (x, y), or -1.
  hit(x, y, shown) {
    const { grid, px, py } = this;
    let best = -1, bestD = HIT * HIT;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL), r = Math.ceil(HIT / CELL);
    for (let gy = Math.max(0, cy - r); gy <= Math.min(grid.rows - 1, cy + r); gy++) {
      for (let gx = Math.max(0, cx - r); gx <= Math.min(grid.cols - 1, cx + r); gx++) {
        const c = gy * grid.cols + gx;
        for (let k = grid.start[c]; k < grid.start[c + 1]; k++) {
          const i = grid.items[k];
          const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
          if (shown[i] && d <= bestD) { bestD = d; best = i; }
        }
      }
    }
    return best;
  }

  // The shown dots inside a box {x0, y0, x1, y1}, in canvas pixels.
  inBox(box, shown) {
    const x0 = Math.min(box.x0, box.x1), x1 = Math.max(box.x0, box.x1);
    const y0 = Math.min(box.y0, box.y1), y1 = Math.max(box.y0, box.y1);
    const inside = [];
    for (let i = 0; i < this.n; i++) {
      if (shown[i] && this.px[i] >= x0 && this.px[i] <= x1 && this.py[i] >= y0 && this.py[i] <= y1) inside.push(i);
    }
    return inside;
  }

  squares(g, which, labelOf, classes, grow) {
    const h = this.dot / 2 + grow;
    for (let k = 0; k < classes; k++) {
      g.beginPath();
      for (let i = 0; i < this.n; i++) if (which(i) && labelOf[i] === k) g.rect(this.px[i] - h, this.py[i] - h, 2 * h, 2 * h);
      g.fillStyle = colour(k);
      g.fill();
    }
  }

  // Draw every dot into the offscreen canvas. `s`: {shown, selected, labelOf, classes (count),
  // marks: [{shape, on: per-dot flags}]}. Return the milliseconds it took.
  draw(s) {
    const started = performance.now();
    const { baseCtx: g, n, px, py } = this;
    g.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    g.fillStyle = "#fff";
    g.fillRect(0, 0, this.width, this.height);
    this.squares(g, (i) => s.shown[i], s.labelOf, s.classes, 0);
    g.lineWidth = n > 2000 ? 1 : 1.2;
    g.strokeStyle = INK;
    for (const mark of s.marks) {
      g.beginPath();
      for (let i = 0; i < n; i++) if (s.shown[i] && mark.on[i]) markPath(g, mark.shape, px[i], py[i], this.markSize);
      g.stroke();
    }
    const h = this.dot / 2 + 2.5; // a selected dot: larger, outlined
    g.beginPath();
    for (let i = 0; i < n; i++) if (s.shown[i] && s.selected[i]) g.rect(px[i] - h, py[i] - h, 2 * h, 2 * h);
    g.fillStyle = INK;
    g.fill();
    this.squares(g, (i) => s.shown[i] && s.selected[i], s.labelOf, s.classes, 1);
    return performance.now() - started;
  }

  // Show the drawn dots, a ring round the hovered one (-1: none) and the box being dragged.
  frame(hovered, box) {
    const { ctx } = this;
    if (!this.base.width || !this.base.height) return; // not laid out (hidden, or the page is leaving)
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(this.base, 0, 0);
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    if (hovered >= 0) {
      ctx.beginPath();
      ctx.arc(this.px[hovered], this.py[hovered], this.dot + 5, 0, 2 * Math.PI);
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = ACCENT;
      ctx.stroke();
    }
    if (box) {
      const x = Math.min(box.x0, box.x1), y = Math.min(box.y0, box.y1);
      const w = Math.abs(box.x1 - box.x0), h = Math.abs(box.y1 - box.y0);
      ctx.fillStyle = "rgba(47, 111, 79, 0.12)";
      ctx.fillRect(x, y, w, h);
      ctx.setLineDash([5, 4]);
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = ACCENT;
      ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);
    }
  }

  // Where dot i is in the viewport (for the tests and the bench).
  where(i) {
    const rect = this.canvas.getBoundingClientRect();
    return { x: rect.left + this.px[i], y: rect.top + this.py[i] };
  }

  flush() { this.ctx.getImageData(0, 0, 1, 1); } // reading a pixel waits for the raster
}
