"""Time a URL-list import: a plain sequential loop against the download job, side by side.

    .venv/bin/python bench/download.py [--urls 200] [--delay 0.1] [--workers 8] [--rounds 2]

A local server (127.0.0.1 only, opened to the fetcher the way WINNOW_FETCH_ALLOW_NETS does)
answers every request after `--delay` seconds with a distinct 256 px JPEG, several requests at a
time. Each round imports the same list twice into fresh data directories: once with a plain
loop (webapp.ingest.downloads.fetch_one then store_one, one URL after the other: the same fetch and
intake code) and once as the download job in its own process (jobs.start, timed until the job
has finished, process start included). The rounds alternate which goes first, so a noisy,
shared machine favours neither. Prints each time, the medians and the ratio (target: >= 6x).
"""
import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webapp.core import fetch
from webapp.dataset.store import Dataset  # noqa: E402
from webapp.ingest import downloads
from webapp.jobs import runner as jobs

SETTINGS = {"VALID_PCT": 0.2, "SPLIT_SEED": 42, "MAX_PIXELS": 25_000_000,
            "FETCH_ALLOW_NETS": "127.0.0.1/32", "FETCH_MAX_BYTES": 10 * 1024 * 1024,
            "FETCH_DEADLINE": 20.0}


def pictures(n, size=256):
    """Return n distinct JPEGs."""
    from tests.pictures import jpeg, tinted

    rng = random.Random(0)
    return [jpeg(tinted(rng.choice(["red", "blue"]), rng, size)) for _ in range(n)]


def start_server(bodies, delay):
    """Serve /<i>.jpg after `delay` seconds, many requests at once; return (server, base URL)."""
    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            body = bodies[int(self.path.strip("/").split(".")[0])]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    server.request_queue_size = 64
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def sequential(data_dir, urls):
    """Import the list one URL after the other; return (seconds, outcome counts)."""
    started = time.perf_counter()
    ds = Dataset(data_dir)
    limits = fetch.Limits.from_settings(SETTINGS)
    outcomes = [downloads.store_one(ds, url, downloads.fetch_one(url, limits)) for url in urls]
    ds.write_cleaned_csv()
    ds.close()
    elapsed = time.perf_counter() - started
    statuses = ("stored", "duplicate", "failed")
    return elapsed, {s: sum(o.status == s for o in outcomes) for s in statuses}


def as_job(data_dir, urls, workers):
    """Import the list as the download job in its own process; return (seconds, counts)."""
    Path(data_dir).mkdir(parents=True)
    started = time.perf_counter()
    job_id = jobs.start(data_dir, "download", downloads.job_params(SETTINGS, urls, None, workers))
    while (job := jobs.get(data_dir, job_id))["status"] not in jobs.FINISHED:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if job["status"] != "succeeded":
        log = jobs.read_log(data_dir, job_id)
        raise SystemExit(f"the job {job['status']}: {job['message']}\n{log}")
    return elapsed, jobs.item_counts(data_dir, job_id)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds before each answer")
    parser.add_argument("--workers", type=int, default=downloads.DEFAULT_WORKERS)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    server, base = start_server(pictures(args.urls), args.delay)
    urls = [f"{base}/{i}.jpg" for i in range(args.urls)]
    times = {"sequential loop": [], f"download job ({args.workers} at a time)": []}
    paths = dict(zip(times, (lambda d: sequential(d, urls),
                             lambda d: as_job(d, urls, args.workers)), strict=True))
    print(f"{args.urls} URLs, each answered after {args.delay * 1000:.0f} ms, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(reversed(paths))
            for name in order:
                data_dir = Path(tmp) / f"round{r}-{len(times[name])}-{name.split()[0]}"
                elapsed, counts = paths[name](data_dir)
                times[name].append(elapsed)
                print(f"  round {r + 1}: {name:<28} {elapsed:6.2f} s  {counts}")
    server.shutdown()
    medians = {name: statistics.median(t) for name, t in times.items()}
    seq, job = medians.values()
    print()
    print("| path | median s | URLs/s |")
    print("|---|---|---|")
    for name, m in medians.items():
        print(f"| {name} | {m:.2f} | {args.urls / m:.1f} |")
    print(f"\nthe job is {seq / job:.1f}x faster than the sequential loop (target >= 6x)")


if __name__ == "__main__":
    main()
