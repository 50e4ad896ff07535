"""The cleaner's map at scale: the projection's cost in the scoring job, and drawing in a browser.

    .venv/bin/python bench/clean_map.py [--n 20000] [--hovers 300] [--no-browser]

N synthetic scored images (rows without files, as `bench/clean.py pages`) get clustered 512-d
embeddings: 4 classes of 3 sub-clusters each, 5% of the images sitting in another class's
cluster, 1% near-copies. Then, as the scoring job does, the embedding checks (for the outlier
marks) and the projection run; the projection's wall time and CPU time (all threads) are
measured. Then the app is served and Debian's chromium opens the Map tab: the time to load and
draw the map, a full redraw of its N dots, hovering (the handler: grid look-up, tooltip and
frame) over random dots (and the time between animation frames meanwhile), and a box
selection of about a quarter of the map.
Printed: one JSON line.
"""
import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.clean import fill_synthetic  # noqa: E402
from bench.machine import cpu_model, loadavg  # noqa: E402


def clustered(labels, dim=512, seed=0):
    """Return float16 embeddings: per class 3 sub-clusters, 5% in another class's, 1% copies."""
    rng = np.random.default_rng(seed)
    n, k = len(labels), int(labels.max()) + 1
    centres = rng.normal(size=(k, 3, dim)) * 1.5
    shown = labels.copy()
    moved = rng.random(n) < 0.05
    shown[moved] = (labels[moved] + rng.integers(1, k, moved.sum())) % k
    x = centres[shown, rng.integers(0, 3, n)] + rng.normal(size=(n, dim))
    copies = rng.choice(n, size=(n // 100, 2), replace=False)
    x[copies[:, 1]] = x[copies[:, 0]] + rng.normal(scale=0.05, size=(len(copies), dim))
    return x.astype(np.float16)


def timed(fn):
    """Return (result, wall seconds, CPU seconds of every thread of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def project(data_dir, version):
    """Run the scoring job's embedding checks and projection; return the projection's figures."""
    from webapp.cleaning import scoring
    from webapp.dataset.store import Dataset
    from webapp.model import registry

    scores = scoring.load_scores(data_dir, version)
    ds = Dataset(data_dir)
    labels = {r["id"]: r["label"] for r in ds.labeled()}
    ds.close()
    vdir = registry.models_dir(data_dir) / version
    _, checks_s, _ = timed(lambda: scoring.save_embedding_checks(
        vdir, scores.image_ids, [labels[int(i)] for i in scores.image_ids], scores.vocab,
        scores.embeddings))
    load = loadavg()
    meta, wall, cpu = timed(lambda: scoring.save_projection(vdir, scores.image_ids,
                                                            scores.embeddings))
    return {"projection_s": round(wall, 1), "projection_cpu_s": round(cpu, 1),
            "load_before": load, "fitted_by_tsne": meta["fitted"],
            "embedding_checks_s": round(checks_s, 1)}


# Time between animation frames while the mouse moves: a smooth page keeps them near 16.7 ms.
FRAMES = """() => {
  const gaps = [];
  let last = performance.now(), running = true;
  const tick = (now) => {
    gaps.push(now - last);
    last = now;
    if (running) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  window.frameGaps = { stop: () => { running = false; return gaps.slice(1); } };
}"""


def in_browser(data_dir, n, hovers):
    """Open the Map tab in chromium and return its drawing figures in milliseconds."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD, make_app, serving

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per thumbnail asked for
    with serving(make_app(data_dir, TESTING=False)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url + "/login?next=/clean/map")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/clean/map")
        page.wait_for_selector("#map[data-points]", timeout=120_000)
        page.locator("#map-canvas").evaluate("c => c.scrollIntoView({block: 'center'})")
        load = page.evaluate("window.winnowMap.timings.load_ms")
        fetched = page.evaluate("performance.getEntriesByType('resource')"
                                ".filter(e => e.name.includes('map.json'))"
                                ".map(e => [e.duration, e.encodedBodySize])[0]")
        draws = [page.evaluate("window.winnowMap.redraw()") for _ in range(10)]
        page.evaluate("window.winnowMap.timings.hover_ms.length = 0")
        page.evaluate(FRAMES)
        rng = np.random.default_rng(1)
        spots = page.evaluate("ids => ids.map(id => window.winnowMap.where(id))",
                              rng.integers(1, n + 1, hovers).tolist())
        started = time.perf_counter()
        for spot in spots:
            page.mouse.move(spot["x"], spot["y"])
        hover_wall = (time.perf_counter() - started) / hovers
        frames = sorted(page.evaluate("window.frameGaps.stop()"))
        hover = page.evaluate("window.winnowMap.timings.hover_ms")
        box = page.locator("#map-canvas").bounding_box()
        page.mouse.move(box["x"] + 10, box["y"] + 10)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        selected = len(page.evaluate("window.winnowMap.selectedIds()"))
        select = page.evaluate("window.winnowMap.timings.select_ms")
        browser.close()
    hover.sort()
    return {"json_ms": round(fetched[0]), "json_kb": round(fetched[1] / 1024),
            "load_ms": round(load), "draw_ms": round(statistics.median(draws), 1),
            "hover_ms": round(statistics.median(hover), 2),
            "hover_p95_ms": round(hover[int(0.95 * (len(hover) - 1))], 2),
            "hover_round_trip_ms": round(1000 * hover_wall, 1),
            "frame_gap_median_ms": round(statistics.median(frames), 1),
            "frame_gap_p99_ms": round(frames[int(0.99 * (len(frames) - 1))], 1),
            "box_selected": selected, "select_ms": round(select, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--hovers", type=int, default=300)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        version = fill_synthetic(tmp, args.n, embeddings_of=clustered)
        out = {"n": args.n, "cpu": cpu_model(), "cores": os.cpu_count(),
               **project(tmp, version)}
        if not args.no_browser:
            out.update(in_browser(tmp, args.n, args.hovers))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
