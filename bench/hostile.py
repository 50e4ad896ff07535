"""Hostile traffic on 127.0.0.1: slow-upstream /classify-url floods, sync vs gthread workers.

Two gunicorn configurations, each fresh (its own copy of the data dir, its own gunicorn), get
the same bounded load one after the other in one run:

    (sync)    2 sync workers (gunicorn's default worker class; threads = 1)
    (gthread) 2 gthread workers x --threads threads

Both are the project's gunicorn.conf.py (preload, hooks, torch threads per worker, timeouts)
with bind, workers, worker_class and threads overridden by a generated config in a temporary
directory, as bench/serve.py does. The app runs with WINNOW_FETCH_ALLOW_NETS=127.0.0.0/8 (so
the local slow upstream is fetchable), WINNOW_FETCH_DEADLINE=--deadline (short, to keep the run
short) and the default WINNOW_FETCH_CONCURRENCY (4 per process).

The slow upstream is a raw socket server in a thread of this process: for every connection it
reads the request, then trickles an HTTP response one byte a second, never finishing before the
fetch deadline. The load, all at once for --seconds:

  - 8 hostile clients: GET /classify-url?url=<slow upstream> in loops, no pause;
  - 2 clients POSTing a 224 px JPEG to /api/classify in loops;
  - a prober: GET /healthz every 100 ms, 5 s timeout;
  - 2 admins, each logged in over HTTP (GET /login for the CSRF token, POST /login), relabelling
    its own half of the images through the cleaner's POST /clean/decide (action=relabel) to the
    other class, one every --admin-pause seconds. An admin counts every relabel acknowledged
    (200 with "Relabelled"); an image whose relabel was not acknowledged (an error or timeout:
    it may or may not have been applied) is not used again. Afterwards the relabel events in
    winnow.sqlite3 are counted per image: lost label events = acknowledged - recorded, per image,
    summed (must be 0).

Percentiles are nearest-rank over every attempt, a failed one counted at the time it took (a
/healthz timeout counts as >= 5000 ms). Usage:

    .venv/bin/python bench/hostile.py                 # 30 s per configuration, 8 threads
    .venv/bin/python bench/hostile.py --seconds 10    # shorter

Prints a table per configuration, then ONE JSON line: the chosen configuration's figures
(gthread) and the other's under the prefix "sync_". Exit status 0 when it ran, 2 when it could not.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # noqa: E402  (bench/serve.py: build_model, Server, request_pictures, percentile)
import switch  # noqa: E402  (bench/switch.py: Admin, a browser session over HTTP)

CONFIG_TEMPLATE = '''\
# Written by bench/hostile.py for one configuration; deleted with its temp dir.
_BENCH_PROJECT_CONF = {conf!r}
with open(_BENCH_PROJECT_CONF) as _bench_f:
    exec(compile(_bench_f.read(), _BENCH_PROJECT_CONF, "exec"))

workers = {workers}
bind = {bind!r}
worker_class = {worker_class!r}
threads = {threads}  # 1 with sync: gunicorn turns sync with threads > 1 into gthread
'''
HOSTILE_CLIENTS = 8
CLASSIFY_CLIENTS = 2
ADMINS = 2
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 5.0


class SlowUpstream:
    """A local HTTP server that answers every request one byte a second, forever."""

    RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n"
                b"\r\n" + b"\xff\xd8\xff\xe0" + b"\0" * 1000)

    def __init__(self):
        self.stop = threading.Event()
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, name="slow-upstream", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        with conn:
            conn.settimeout(5)
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
                for i in range(len(self.RESPONSE)):
                    if self.stop.wait(1.0 if i else 0):
                        return
                    conn.sendall(self.RESPONSE[i:i + 1])
            except OSError:
                return  # the fetch gave up (its deadline shut the connection down)


class Gunicorn(serve.Server):
    """serve.Server with a worker class and threads instead of torch threads per worker."""

    def __init__(self, key, worker_class, workers, threads, data_dir, work, env):
        super().__init__(key, f"{workers} {worker_class} workers x {threads} thread"
                         + ("s" if threads > 1 else ""), workers,
                         threads, data_dir, work)
        self.worker_class, self.extra_env = worker_class, env

    def start(self, password):
        self.work.mkdir(parents=True)
        (self.work / "metrics").mkdir()
        self.port = serve.free_port()
        conf = self.work / "gunicorn.bench.conf.py"
        conf.write_text(CONFIG_TEMPLATE.format(
            conf=str(serve.PROJECT_CONF), workers=self.workers, bind=f"127.0.0.1:{self.port}",
            worker_class=self.worker_class, threads=self.threads))
        env = {k: v for k, v in os.environ.items()
               if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and not k.startswith("WINNOW_")}
        env.update(self.extra_env)
        env.update({"WINNOW_DATA_DIR": str(self.data_dir), "WINNOW_ADMIN_PASSWORD": password,
                    "WINNOW_OFFLINE": "1", "PROMETHEUS_MULTIPROC_DIR": str(self.work / "metrics"),
                    # Every client is 127.0.0.1 here: the per-client limit would answer 429.
                    "WINNOW_CLASSIFY_RATE_LIMIT": "1000000 per minute"})
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(conf), "wsgi:app"],
            cwd=serve.ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline_s):
        """Wait for /readyz to answer 200 (serve.Server also waits for its own log lines)."""
        deadline = time.monotonic() + deadline_s
        while request(self.port, "GET", "/readyz", timeout=2)[1] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise serve.BenchError(f"gunicorn ({self.label}) did not become ready:\n"
                                       + self.log_tail())
            time.sleep(0.3)


# ---- the clients --------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None, timeout=30.0):
    """Send one request on a new connection; return (seconds, status or None, body or error)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return time.perf_counter() - started, resp.status, resp.read()
    except Exception as e:  # timeouts, resets, refused: the caller counts them as failures
        return time.perf_counter() - started, None, f"{type(e).__name__}"
    finally:
        conn.close()


def hostile(port, url, timeout, stop, out):
    path = "/classify-url?url=" + urllib.parse.quote(url, safe="")
    while not stop.is_set():
        _, status, _ = request(port, "GET", path, timeout=timeout)
        out.append(status or "error")


def classify(port, pictures, k, stop, out):
    while not stop.is_set():
        seconds, status, body = request(port, "POST", "/api/classify",
                                        body=pictures[k % len(pictures)],
                                        headers={"Content-Type": "image/jpeg"})
        ok = status == 200 and b"predictions" in body
        out.append((seconds, ok, status or body))
        k += CLASSIFY_CLIENTS


def probe(port, stop, out):
    while not stop.is_set():
        seconds, status, body = request(port, "GET", "/healthz", timeout=PROBE_TIMEOUT)
        out.append((seconds, status == 200, status or body))
        stop.wait(PROBE_EVERY)


def label(port, password, labels, classes, pause, stop, out):
    """Log in, then relabel own images to the other class until stopped; count acks per image."""
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        admin = switch.Admin(base, password)
        token = admin.token("/admin/")
    except (OSError, AttributeError) as e:  # AttributeError: no token on the page
        out.append({"acks": Counter(), "retired": set(), "attempts": 0,
                    "login_failed": f"{type(e).__name__}: {e}"})
        return
    login_s = time.monotonic() - started
    admin.opener.addheaders = [("Accept", "application/json")]
    acks, retired, attempts = Counter(), set(), 0
    ids = sorted(labels)
    i = 0
    while not stop.is_set() and len(retired) < len(ids):
        image_id = ids[i % len(ids)]
        i += 1
        if image_id in retired:
            continue
        target = next(c for c in classes if c != labels[image_id])
        data = urllib.parse.urlencode({"action": "relabel", "image_id": image_id,
                                       "label": target, "csrf_token": token}).encode()
        attempts += 1
        try:
            with admin.opener.open(base + "/clean/decide", data=data, timeout=30) as r:
                answer = json.loads(r.read())
            acked = r.status == 200 and answer.get("message", "").startswith("Relabelled")
        except (OSError, ValueError):  # HTTPError is an OSError: a 4xx/5xx is no ack either
            acked = False
        if acked:
            acks[image_id] += 1
            labels[image_id] = target
        else:
            retired.add(image_id)  # applied or not: unknown, so never counted either way
        stop.wait(pause)
    out.append({"acks": acks, "retired": retired, "attempts": attempts, "login_s": login_s})


# ---- one configuration --------------------------------------------------------------------

def relabel_events(data_dir, after_id):
    """Return {image_id: relabel events} recorded after event `after_id`."""
    conn = sqlite3.connect(f"file:{data_dir / 'winnow.sqlite3'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT image_id, COUNT(*) FROM events WHERE kind = 'relabel' "
                            "AND id > ? GROUP BY image_id", (after_id,)).fetchall()
    finally:
        conn.close()
    return dict(rows)


def store_state(data_dir):
    conn = sqlite3.connect(f"file:{data_dir / 'winnow.sqlite3'}?mode=ro", uri=True)
    try:
        labels = dict(conn.execute("SELECT id, label FROM images WHERE deleted IS NULL "
                                   "AND label IS NOT NULL"))
        last = conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    finally:
        conn.close()
    return labels, last


def run_config(server, args, pictures, upstream_url):
    """Put the whole load on one gunicorn for args.seconds; return its figures."""
    labels, last_event = store_state(server.data_dir)
    classes = sorted(set(labels.values()))
    ids = sorted(labels)
    shares = [{i: labels[i] for i in ids[k::ADMINS]} for k in range(ADMINS)]
    stop = threading.Event()
    hostile_out, classify_out, probe_out, admin_out = [], [], [], []
    n = HOSTILE_CLIENTS + CLASSIFY_CLIENTS + 1 + ADMINS
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(label, server.port, args.password, shares[k], classes,
                               args.admin_pause, stop, admin_out) for k in range(ADMINS)]
        futures += [pool.submit(hostile, server.port, upstream_url, args.deadline + 15, stop,
                                 hostile_out)
                    for _ in range(HOSTILE_CLIENTS)]
        futures += [pool.submit(classify, server.port, pictures, k, stop, classify_out)
                    for k in range(CLASSIFY_CLIENTS)]
        futures.append(pool.submit(probe, server.port, stop, probe_out))
        stop.wait(args.seconds)
        stop.set()
        errors = [f.exception() for f in futures if f.exception()]
    if errors:
        raise serve.BenchError(f"a client failed: {errors[0]!r}")
    recorded = relabel_events(server.data_dir, last_event)
    acks = Counter()
    for a in admin_out:
        acks.update(a["acks"])
    lost = sum(max(0, acks[i] - recorded.get(i, 0)) for i in acks)
    return {"hostile": Counter(hostile_out), "healthz": summary(probe_out),
            "classify": summary(classify_out), "acks": sum(acks.values()),
            "recorded": sum(recorded.values()), "lost": lost,
            "unacked": sum(len(a["retired"]) for a in admin_out),
            "attempts": sum(a["attempts"] for a in admin_out),
            "login_failed": [a["login_failed"] for a in admin_out if "login_failed" in a],
            "login_s": [round(a["login_s"], 1) for a in admin_out if "login_s" in a]}


def summary(outcomes):
    times = sorted(s for s, _, _ in outcomes)
    failures = [what for _, ok, what in outcomes if not ok]
    ms = {q: serve.percentile(times, q) for q in (50, 99, 100)}
    return {"n": len(outcomes), "failed": len(failures), "why": Counter(failures),
            **{f"p{q}": round(v * 1000) if v is not None else None for q, v in ms.items()}}


# ---- the report ---------------------------------------------------------------------------

def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def print_config(key, label, r):
    h, c = r["healthz"], r["classify"]
    print(f"({key}) {label}")
    print(f"    /healthz       n={h['n']:<5} p50={h['p50']} ms  p99={h['p99']} ms  "
          f"max={h['p100']} ms  failed={h['failed']} {dict(h['why']) or ''}")
    print(f"    /api/classify  n={c['n']:<5} p50={c['p50']} ms  p99={c['p99']} ms  "
          f"max={c['p100']} ms  failed={c['failed']} {dict(c['why']) or ''}")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(r["hostile"].items(), key=str))
    print(f"    /classify-url  {sum(r['hostile'].values())} answers by status: {statuses}")
    print(f"    labels         attempts={r['attempts']} acknowledged={r['acks']} "
          f"recorded={r['recorded']} lost={r['lost']} unacknowledged={r['unacked']}; "
          f"admins logged in after {r['login_s']} s"
          + (f" logins failed: {r['login_failed']}" if r["login_failed"] else ""))


def figures(r, prefix=""):
    return {f"{prefix}healthz_p99_ms": r["healthz"]["p99"],
            f"{prefix}classify_p99_ms": r["classify"]["p99"],
            f"{prefix}failed_requests": r["healthz"]["failed"] + r["classify"]["failed"],
            f"{prefix}lost_label_events": r["lost"]}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="load per configuration")
    p.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--deadline", type=float, default=5.0, help="WINNOW_FETCH_DEADLINE, s")
    p.add_argument("--admin-pause", type=float, default=0.2, help="s between an admin's relabels")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    if not 1 <= args.seconds <= 300:
        p.error("--seconds must be between 1 and 300")
    return args


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)  # so that the finally below stops gunicorn


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = Path(tempfile.mkdtemp(prefix="winnow-hostile-"))
    args.password = "bench-" + secrets.token_hex(8)
    configs = (("sync", "sync", 1), ("gthread", "gthread", args.threads))
    server, results = None, {}
    try:
        serve.log(f"building an untrained {args.arch} at {args.size} px ...")
        template = work / "template"
        version = serve.build_model(template, args.arch, args.size)
        pictures = serve.request_pictures()
        with SlowUpstream() as upstream:
            url = f"http://127.0.0.1:{upstream.port}/slow.jpg"
            env = {"WINNOW_FETCH_ALLOW_NETS": "127.0.0.0/8",
                   "WINNOW_FETCH_DEADLINE": str(args.deadline)}
            for key, worker_class, threads in configs:
                data_dir = work / f"data-{key}"
                shutil.copytree(template, data_dir)  # each configuration starts fresh
                server = Gunicorn(key, worker_class, args.workers, threads, data_dir, work, env)
                serve.log(f"starting gunicorn ({server.label}) ...")
                server.start(args.password)
                server.wait_ready(120)
                serve.log(f"({key}) load for {args.seconds:g} s ...")
                results[key] = run_config(server, args, pictures, url)
                results[key]["label"] = server.label
                server.stop()
                server = None
            upstream_connections = upstream.connections
        load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        cpu = cpu_name()
        print(f"hostile traffic: {args.seconds:g} s per configuration, {HOSTILE_CLIENTS} clients "
              f"on /classify-url (slow upstream, fetch deadline {args.deadline:g} s, "
              f"concurrency cap 4 per process), {CLASSIFY_CLIENTS} on /api/classify "
              f"({args.arch} at {args.size} px, untrained, model {version}), /healthz every "
              f"{PROBE_EVERY * 1000:.0f} ms ({PROBE_TIMEOUT:g} s timeout), {ADMINS} admins "
              f"relabelling; CPU {cpu}, {os.cpu_count()} cores")
        print(f"load average before {load_before}, after {load_after}; slow upstream saw "
              f"{upstream_connections} connections")
        for key, _, _ in configs:
            print_config(key, results[key]["label"], results[key])
        out = {**figures(results["gthread"]), **figures(results["sync"], "sync_"),
               "threads": args.threads, "workers": args.workers, "seconds": args.seconds,
               "cpu": cpu, "load_before": load_before}
        print(json.dumps(out))
        return 0
    except serve.BenchError as e:
        serve.log(f"benchmark failed: {e}")
        if server is not None:
            serve.log(server.log_tail(15))
        return 2
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
