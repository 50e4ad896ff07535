"""Benchmark gunicorn serving the classifier: workers x torch threads, side by side.

Three configurations get the same bounded local load in one run:

    (a) 1 worker  x 1 torch thread
    (b) 1 worker  x 2 torch threads
    (c) 2 workers x 1 torch thread

and the script prints, for each, requests/s, p50 and p99 latency and errors, then the throughput
ratios (c)/(a) and (c)/(b) and whether the target is met:

    target: 2 workers x 1 thread >= 1.6x the throughput of 1 worker x 1 thread, zero errors

("zero errors" is checked over all three configurations).

Usage (from anywhere; the venv's Python):

    .venv/bin/python bench/serve.py                  # resnet18 at 224 px, 200 requests each
    .venv/bin/python bench/serve.py --arch resnet34  # another architecture / --size
    .venv/bin/python bench/serve.py --quick          # smoke run: resnet18 at 64 px, 40 requests

How the configurations are forced without touching the project's gunicorn.conf.py
----------------------------------------------------------------------------------
The project's config gives each worker ``max(1, cores // workers)`` torch threads in post_fork,
so on a 2-core machine (a) cannot be had from it, and there is no environment variable for the
thread count. For each configuration the script therefore writes a small gunicorn config into
its temporary directory (never into the repository) that

  1. execs the source of the project's gunicorn.conf.py (everything it sets stays in force:
     preload_app, timeout, max_requests, hooks, OMP_NUM_THREADS=1 in the master, ...),
  2. overrides ``workers`` and ``bind`` (127.0.0.1 on a free port), and
  3. wraps ``post_fork``: the project's post_fork runs first, then
     ``torch.set_num_threads(THREADS)`` (and OMP_NUM_THREADS) for the configuration, and the
     worker logs ``bench-worker pid=... torch_threads=...`` so the script can check what each
     worker really got (the "thr" column) and measure the workers' CPU time.

gunicorn is started as ``python -m gunicorn -c <that file> wsgi:app`` in the project root, with
WINNOW_DATA_DIR set to the temporary data dir, WINNOW_ADMIN_PASSWORD set, WINNOW_OFFLINE=1 and a
fresh PROMETHEUS_MULTIPROC_DIR inside the temporary dir. It is waited for on /readyz (with a
deadline) and stopped with SIGTERM, then killed after a timeout, in a ``finally`` (also when the
benchmark itself is interrupted or fails).

The model
---------
Speed does not depend on the weights and no pretrained weights are available offline, so the
model is built, not trained: 16 small generated pictures in two classes go into a temporary
data dir through webapp.dataset.store.Dataset, webapp.model.training.build_learner makes an
untrained learner (``TrainOptions(arch, size, bs=8, pretrained=False)``), which is exported to
models/<version>/export.pkl, recorded with webapp.model.registry.record_version and activated.
Serving then goes through the real path: sha256 check, load_learner, the Classifier.

The load
--------
Client threads in this process POST a 224x224 JPEG (one of 8 generated ones, cycled) as the raw
body to /api/classify on 127.0.0.1, ``--concurrency`` at a time (a new connection per request:
gunicorn's sync workers close it anyway), each with a socket timeout (``--timeout``). A request
counts as an error unless it answers 200 with predictions. Every configuration first gets
``--warmup`` requests (not measured); then the ``--requests`` measured requests are split into
``--rounds`` blocks and the blocks are interleaved, rotating the order (a b c, b c a, c a b, ...),
so that a burst of load from other processes on the machine hits all configurations alike rather
than one of them. All three gunicorns stay up for the whole run (an idle one uses no CPU).
req/s is the successful requests over the summed wall time of that configuration's blocks;
p50/p99 are nearest-rank percentiles of the successful requests' latencies.

Noise columns: "srv cores" is the CPU time the gunicorn workers used divided by wall time
(2.0 = both cores busy serving), "client" the same for this process (the load generator),
and "other" what the rest of the machine used meanwhile (from /proc/stat); a large "other"
means another process competed for the cores and the numbers are noisy. The per-round req/s
are printed too.

Bounds: the whole run stops sending requests after ``--max-seconds`` (default 540); requests
not sent are counted as errors ("skipped"). A configuration whose gunicorn has died gets its
remaining requests counted as errors too. With ``--requests`` near or above gunicorn's
max_requests (1000 per worker, with jitter) a worker restart would land in the measurement.

Exit status: 0 when the benchmark ran (whether or not the target was met), 2 when it could not
(model, gunicorn start-up, ...).
"""
import argparse
import concurrent.futures
import http.client
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # webapp and tests.pictures

PROJECT_CONF = ROOT / "gunicorn.conf.py"
# key, label, workers, torch threads per worker
CONFIGS = (
    ("a", "1 worker x 1 thread", 1, 1),
    ("b", "1 worker x 2 threads", 1, 2),
    ("c", "2 workers x 1 thread", 2, 1),
)
TARGET_RATIO = 1.6
TARGET_LINE = ("target: 2 workers x 1 thread >= 1.6x the throughput of 1 worker x 1 thread, "
               "zero errors")
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG_TEMPLATE = '''\
# Written by bench/serve.py for one benchmark configuration; deleted with its temp dir.
# The project's gunicorn.conf.py, unchanged, then this configuration's overrides.
import os as _bench_os

_BENCH_PROJECT_CONF = {conf!r}
with open(_BENCH_PROJECT_CONF) as _bench_f:
    exec(compile(_bench_f.read(), _BENCH_PROJECT_CONF, "exec"))

workers = {workers}
bind = {bind!r}
_BENCH_THREADS = {threads}
_bench_project_post_fork = post_fork


def post_fork(server, worker):
    """The project's post_fork, then this configuration's torch thread count."""
    _bench_project_post_fork(server, worker)
    import torch

    torch.set_num_threads(_BENCH_THREADS)
    _bench_os.environ["OMP_NUM_THREADS"] = str(_BENCH_THREADS)
    server.log.info("bench-worker pid=%d torch_threads=%d", _bench_os.getpid(),
                    torch.get_num_threads())
'''
WORKER_LINE = re.compile(r"bench-worker pid=(\d+) torch_threads=(\d+)")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- the model ----------------------------------------------------------------------------

def build_model(data_dir, arch, size):
    """Fill a data dir with 16 generated pictures and register an untrained learner as active."""
    from tests.pictures import tinted_set
    from webapp.dataset.store import Dataset
    from webapp.model import registry
    from webapp.model.training import TrainOptions, build_learner

    ds = Dataset(data_dir)
    try:
        for label, data in tinted_set(per_class=8, size=48, seed=0):
            added = ds.add_image(data, label=label, source="bench", write_csv=False)
            if added.status != "stored":
                raise BenchError(f"a generated picture was not stored: {added}")
        ds.write_cleaned_csv()
        counts = ds.class_counts()
    finally:
        ds.close()
    if not sum(c["valid"] for c in counts.values()) or not all(c["train"] for c in counts.values()):
        raise BenchError(f"the generated dataset has an empty split: {counts}")

    opts = TrainOptions(arch=arch, size=size, bs=8, pretrained=False)
    opts.check()
    learn = build_learner(data_dir, opts, pretrained=False)
    version_dir = registry.new_version_dir(data_dir)
    learn.path = version_dir
    learn.export(version_dir / registry.EXPORT)
    version = registry.record_version(data_dir, version_dir, {"error_rate": None}, "bench",
                                      arch=arch, size=size)
    registry.activate(data_dir, version)
    return version


def request_pictures(n=8, size=224, seed=1):
    """Return n distinct size x size JPEGs (gradients, shapes and noise), deterministically."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c0 = [rng.randint(0, 255) for _ in range(3)]
        c1 = [rng.randint(0, 255) for _ in range(3)]
        im = Image.new("RGB", (size, size))
        px = im.load()
        for y in range(size):
            t = y / (size - 1)
            row = tuple(int(a + (b - a) * t) for a, b in zip(c0, c1, strict=True))
            for x in range(size):
                px[x, y] = tuple(max(0, min(255, v + rng.randint(-12, 12))) for v in row)
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.randint(0, size - 20), rng.randint(0, size - 20)
            box = [x, y, x + rng.randint(8, 80), y + rng.randint(8, 80)]
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=colour)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=88)
        out.append(buf.getvalue())
    return out


# ---- gunicorn -----------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One gunicorn for one configuration, in its own corner of the temp dir."""

    def __init__(self, key, label, workers, threads, data_dir, work):
        self.key, self.label, self.workers, self.threads = key, label, workers, threads
        self.data_dir, self.work = data_dir, Path(work) / f"gunicorn-{key}"
        self.port, self.proc, self.log_file = None, None, None

    @property
    def log_path(self):
        return self.work / "gunicorn.log"

    def start(self, password):
        self.work.mkdir(parents=True)
        (self.work / "metrics").mkdir()
        self.port = free_port()
        conf = self.work / "gunicorn.bench.conf.py"
        conf.write_text(CONFIG_TEMPLATE.format(conf=str(PROJECT_CONF), workers=self.workers,
                                               bind=f"127.0.0.1:{self.port}",
                                               threads=self.threads))
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}  # the project's config decides
        env.update({
            "WINNOW_DATA_DIR": str(self.data_dir),
            "WINNOW_ADMIN_PASSWORD": password,
            "WINNOW_OFFLINE": "1",
            # One client address sends it all: the per-client limit would answer 429.
            "WINNOW_CLASSIFY_RATE_LIMIT": "1000000 per minute",
            "WINNOW_BIND": f"127.0.0.1:{self.port}",
            "WINNOW_WORKERS": str(self.workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.work / "metrics"),
        })
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(conf), "wsgi:app"],
            cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline_s):
        """Wait for /readyz to answer 200 and for every worker to have reported its threads."""
        deadline = time.monotonic() + deadline_s
        url = f"http://127.0.0.1:{self.port}/readyz"
        ready = False
        while True:
            if not ready:
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        ready = r.status == 200
                except OSError:
                    pass
            if ready and len(self.worker_threads()) >= self.workers:
                return
            if self.proc.poll() is not None:
                raise BenchError(f"gunicorn ({self.label}) exited with {self.proc.returncode}:\n"
                                 + self.log_tail())
            if time.monotonic() > deadline:
                raise BenchError(f"gunicorn ({self.label}) was not ready within {deadline_s:.0f}"
                                 " s:\n" + self.log_tail())
            time.sleep(0.3)

    def worker_threads(self):
        """Return {pid: torch threads} for every worker that has reported, live or not."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return {}
        return {int(pid): int(n) for pid, n in WORKER_LINE.findall(text)}

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout=40):
        """SIGTERM, then kill after `timeout` seconds. Safe to call more than once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"gunicorn ({self.label}) ignored SIGTERM for {timeout} s: killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


# ---- CPU accounting -----------------------------------------------------------------------

def proc_cpu_seconds(pid):
    """Return a process's user+system CPU seconds, or 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_seconds():
    """Return the CPU seconds all cores have spent busy (not idle or iowait) since boot."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return (total - values[3] - values[4]) / CLK_TCK


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


def cpu_snapshot(server):
    return {"server": sum(proc_cpu_seconds(p) for p in [server.proc.pid, *server.worker_threads()]),
            "client": own_cpu_seconds(), "machine": machine_busy_seconds()}


# ---- the load -----------------------------------------------------------------------------

def classify_once(port, body, timeout):
    """POST one picture to /api/classify; return (model version, None) or (None, error)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/classify", body=body, headers={"Content-Type": "image/jpeg"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return None, f"HTTP {resp.status}"
        answer = json.loads(data)
        if not answer.get("predictions"):
            return None, "no predictions in the answer"
        return answer["model"], None
    except Exception as e:  # timeouts, refused or reset connections, bad JSON: all errors
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def post_picture(port, body, timeout):
    """POST one picture; return (seconds, None) on success or (seconds, error)."""
    started = time.perf_counter()
    _, err = classify_once(port, body, timeout)
    return time.perf_counter() - started, err


def run_block(server, pictures, n, concurrency, timeout, stop_at, first=0):
    """Send n requests, `concurrency` at a time; return latencies, errors, wall and CPU use."""
    def one(i):
        if time.monotonic() > stop_at:
            return None, "skipped: past --max-seconds"
        if not server.alive():
            return None, "skipped: gunicorn is not running"
        return post_picture(server.port, pictures[(first + i) % len(pictures)], timeout)

    before = cpu_snapshot(server)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(n)))
    wall = time.perf_counter() - started
    after = cpu_snapshot(server)
    cpu = {k: (after[k] - before[k]) if before[k] is not None and after[k] is not None else None
           for k in before}
    return {"latencies": [s for s, err in answers if err is None],
            "errors": [err for _, err in answers if err is not None],
            "wall": wall, "cpu": cpu}


def percentile(sorted_values, q):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q / 100 * len(sorted_values)) - 1)]


def split_evenly(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ---- the report ---------------------------------------------------------------------------

def summarise(server, blocks):
    lat = sorted(s for b in blocks for s in b["latencies"])
    errors = [e for b in blocks for e in b["errors"]]
    wall = sum(b["wall"] for b in blocks)
    sums = {k: (sum(b["cpu"][k] for b in blocks) if all(b["cpu"][k] is not None for b in blocks)
                else None) for k in ("server", "client", "machine")}
    other = (sums["machine"] - sums["server"] - sums["client"]
             if sums["machine"] is not None else None)
    threads = sorted(set(server.worker_threads().values()))
    return {
        "key": server.key, "label": server.label, "workers": server.workers,
        "threads_asked": server.threads, "threads_seen": threads,
        "worker_pids": len(server.worker_threads()),
        "sent": len(lat) + len(errors), "ok": len(lat), "errors": errors, "wall": wall,
        "rps": len(lat) / wall if wall > 0 else 0.0,
        "p50": percentile(lat, 50), "p99": percentile(lat, 99),
        "srv_cores": sums["server"] / wall if wall > 0 else None,
        "client_cores": sums["client"] / wall if wall > 0 else None,
        "other_cores": max(0.0, other) / wall if other is not None and wall > 0 else None,
        "round_rps": [len(b["latencies"]) / b["wall"] if b["wall"] > 0 else 0.0 for b in blocks],
    }


def fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def print_report(args, version, results, started, load_before, load_after):
    import fastai
    import torch

    print(f"gunicorn serving benchmark: {args.arch} at {args.size} px (untrained weights, "
          f"model {version}), {os.cpu_count()} cores, torch {torch.__version__}, "
          f"fastai {fastai.__version__}")
    print(f"load: POST /api/classify, 224x224 JPEG, concurrency {args.concurrency}, "
          f"{args.requests} measured requests per configuration in {args.rounds} interleaved "
          f"rounds after {args.warmup} warm-up, timeout {args.timeout:g} s")
    print(f"load average before {load_before}, after {load_after}")
    print()
    head = (f"{'configuration':<26}{'thr':>4}{'ok':>6}{'errors':>8}{'wall s':>8}{'req/s':>8}"
            f"{'p50 ms':>9}{'p99 ms':>9}{'srv cores':>11}{'client':>8}{'other':>7}")
    print(head)
    print("-" * len(head))
    for r in results:
        thr = ",".join(map(str, r["threads_seen"])) or "?"
        print(f"({r['key']}) {r['label']:<22}{thr:>4}{r['ok']:>6}{len(r['errors']):>8}"
              f"{r['wall']:>8.1f}{r['rps']:>8.2f}"
              f"{fmt(r['p50'] and r['p50'] * 1000, '.0f'):>9}"
              f"{fmt(r['p99'] and r['p99'] * 1000, '.0f'):>9}"
              f"{fmt(r['srv_cores'], '.2f'):>11}{fmt(r['client_cores'], '.2f'):>8}"
              f"{fmt(r['other_cores'], '.2f'):>7}")
    print()
    for r in results:
        rounds = " ".join(f"{x:.2f}" for x in r["round_rps"])
        print(f"({r['key']}) req/s per round: {rounds}")
    for r in results:
        if r["threads_seen"] != [r["threads_asked"]] or r["worker_pids"] != r["workers"]:
            print(f"({r['key']}) note: asked for {r['workers']} worker(s) x {r['threads_asked']} "
                  f"thread(s); saw {r['worker_pids']} worker(s) with threads {r['threads_seen']}")
        if r["errors"]:
            kinds = {}
            for e in r["errors"]:
                kinds[e] = kinds.get(e, 0) + 1
            listed = "; ".join(f"{n} x {e}" for e, n in sorted(kinds.items(), key=lambda x: -x[1]))
            print(f"({r['key']}) errors: {listed}")
    print()
    by = {r["key"]: r for r in results}
    c_a = by["c"]["rps"] / by["a"]["rps"] if by["a"]["rps"] else None
    c_b = by["c"]["rps"] / by["b"]["rps"] if by["b"]["rps"] else None
    print(f"throughput (c)/(a) 2 workers x 1 thread vs 1 worker x 1 thread:  {fmt(c_a, '.2f')}x")
    print(f"throughput (c)/(b) 2 workers x 1 thread vs 1 worker x 2 threads: {fmt(c_b, '.2f')}x")
    total_errors = sum(len(r["errors"]) for r in results)
    met = c_a is not None and c_a >= TARGET_RATIO and total_errors == 0
    print(TARGET_LINE)
    print(f"target met: {'yes' if met else 'no'} ((c)/(a) = {fmt(c_a, '.2f')}x, "
          f"errors in all configurations: {total_errors})")
    noisy = [r["key"] for r in results if r["other_cores"] is not None and r["other_cores"] > 0.3]
    if noisy:
        print(f"noise: other processes used more than 0.3 cores during ({'), ('.join(noisy)}); "
              "these numbers are noisy")
    print(f"total time {time.monotonic() - started:.0f} s")


# ---- main ---------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, help="resnet18 (default), resnet34 or resnet50")
    p.add_argument("--size", type=int, default=None, help="model input size in px (default 224)")
    p.add_argument("--requests", type=int, default=None,
                   help="measured requests per configuration (default 200)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up requests per configuration")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved blocks per configuration (default 4; 2 with --quick)")
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout per request, s")
    p.add_argument("--ready-timeout", type=float, default=120.0,
                   help="deadline for each gunicorn to answer /readyz, s")
    p.add_argument("--max-seconds", type=float, default=540.0,
                   help="stop sending requests after this long (counted as errors), s")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: resnet18 at 64 px, 40 requests (unless given explicitly)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, model)")
    args = p.parse_args(argv)
    args.arch = args.arch or "resnet18"
    args.size = args.size or (64 if args.quick else 224)
    args.requests = args.requests or (40 if args.quick else 200)
    args.rounds = args.rounds or (2 if args.quick else 4)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--requests, --concurrency and --rounds must be positive, --warmup not negative")
    args.rounds = min(args.rounds, args.requests)
    return args


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)  # so that the finally below stops the gunicorns


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    stop_at = started + args.max_seconds
    signal.signal(signal.SIGTERM, _raise_exit)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="winnow-bench-"))
    data_dir = work / "data"
    servers = []
    failed = True
    try:
        log(f"building an untrained {args.arch} at {args.size} px in {data_dir} ...")
        version = build_model(data_dir, args.arch, args.size)
        pictures = request_pictures()
        password = "bench-" + secrets.token_hex(8)
        for key, label, workers, threads in CONFIGS:
            server = Server(key, label, workers, threads, data_dir, work)
            servers.append(server)
            log(f"starting gunicorn ({key}) {label} ...")
            server.start(password)
            server.wait_ready(args.ready_timeout)  # one at a time: start-up is CPU-heavy
        blocks = {s.key: [] for s in servers}
        warm_errors = {}
        for s in servers:
            log(f"warming up ({s.key}) with {args.warmup} requests ...")
            warm = run_block(s, pictures, args.warmup, args.concurrency, args.timeout, stop_at)
            if warm["errors"]:
                warm_errors[s.key] = warm["errors"]
        sizes = split_evenly(args.requests, args.rounds)
        for rnd, n in enumerate(sizes):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for s in order:
                log(f"round {rnd + 1}/{len(sizes)}: ({s.key}) {n} requests ...")
                blocks[s.key].append(run_block(s, pictures, n, args.concurrency, args.timeout,
                                               stop_at, first=rnd))
        results = [summarise(s, blocks[s.key]) for s in servers]
        load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print_report(args, version, results, started, load_before, load_after)
        for key, errs in warm_errors.items():
            print(f"({key}) warm-up errors (not counted): {len(errs)}, e.g. {errs[0]}")
        failed = False
        return 0
    except BenchError as e:
        log(f"benchmark failed: {e}")
        return 2
    finally:
        for s in servers:
            s.stop()
        if failed:
            for s in servers:
                if s.log_path.exists():
                    log(f"--- last lines of gunicorn ({s.key}) log ---\n{s.log_tail(15)}")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
