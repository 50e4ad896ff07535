"""Measure model switches under load: the admin's Activate and Roll back, with gunicorn serving.

One gunicorn as deployed here (the project's gunicorn.conf.py, 2 workers x 1 torch thread on
127.0.0.1) serves two model versions built like bench/serve.py builds its model (untrained
learners on generated pictures: the weights do not change the speed of loading or serving).
Client threads POST a 224 px JPEG to /api/classify, `--concurrency` at a time, for the whole run.
Meanwhile an admin session (logged in over HTTP, CSRF token from the page, exactly as a browser
does it) switches the model every `--every` seconds, alternating

    POST /admin/models/<v2>/activate      then      POST /admin/rollback   (back to v1)

`--switches` times. The script prints

  - every request's outcome: total, failed (anything but 200 with predictions), req/s;
  - for each switch, the lag: from the moment the admin's POST returned to the start of the
    last request (sent before the next switch began) that was still answered by the old
    version (0 when none was). Requests
    already in flight may finish on the old model; the lag bounds how long any worker kept
    serving it. The issue's target is every worker on the new version within 2 s;
  - the target line: zero failed requests and every lag <= 2 s.

Usage: .venv/bin/python bench/switch.py [--switches 10] [--every 3] [--concurrency 4] [--dump F]
Bounded: at most --max-seconds (default 240) of load, 127.0.0.1 only.
Exit status 0 when it ran (target met or not), 2 when it could not run.
"""
import argparse
import concurrent.futures
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve  # noqa: E402  (bench/serve.py: build_model, Server, request_pictures)

TARGET_LAG = 2.0


def add_version(data_dir, arch, size):
    """Register a second untrained learner (its own random weights) as a new version."""
    from webapp.model import registry
    from webapp.model.training import TrainOptions, build_learner

    learn = build_learner(data_dir, TrainOptions(arch=arch, size=size, bs=8, pretrained=False),
                          pretrained=False)
    version_dir = registry.new_version_dir(data_dir)
    learn.path = version_dir
    learn.export(version_dir / registry.EXPORT)
    return registry.record_version(data_dir, version_dir, {"error_rate": None}, "bench",
                                   arch=arch, size=size)


class Admin:
    """An admin's browser session over HTTP: cookies, login, CSRF token from the page."""

    TOKEN = re.compile(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"')

    def __init__(self, base, password):
        self.base = base
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                                  NoRedirect())
        token = self.token("/login")
        self.post("/login", password=password, csrf_token=token)

    def token(self, path):
        with self.opener.open(self.base + path, timeout=30) as r:
            return self.TOKEN.search(r.read().decode()).group(1)

    def post(self, path, **fields):
        data = urllib.parse.urlencode(fields).encode()
        try:
            with self.opener.open(self.base + path, data=data, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:  # 303 after a form: the redirect is the answer
            if e.code in (302, 303):
                return e.code
            raise

    def switch(self, path):
        status = self.post(path, csrf_token=self.token("/admin/"))
        if status != 303:
            raise serve.BenchError(f"POST {path} answered {status}, not 303")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def classify(port, body, timeout):
    """POST one picture; return (sent, answered, model or None, error or None)."""
    sent = time.monotonic()
    model, err = serve.classify_once(port, body, timeout)
    return sent, time.monotonic(), model, err


def load(port, pictures, concurrency, timeout, stop):
    """Keep `concurrency` requests in flight until `stop` is set; return every outcome."""
    results, lock = [], threading.Lock()

    def client(k):
        i = k
        while not stop.is_set():
            outcome = classify(port, pictures[i % len(pictures)], timeout)
            with lock:
                results.append(outcome)
            i += concurrency

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for k in range(concurrency):
            pool.submit(client, k)
        stop.wait()
    return results


def lags(results, switches):
    """For each switch: seconds from its POST's answer to the last request sent that got `old`.

    A switch is (begun, done, old, new): the admin began asking at `begun`, the POST answered
    at `done`. Only requests sent before the next switch began count: from then on the old
    version may be the right answer again.
    """
    out = []
    for n, (_, done, old, _new) in enumerate(switches):
        until = switches[n + 1][0] if n + 1 < len(switches) else float("inf")
        late = [sent for sent, _, model, _ in results if done < sent < until and model == old]
        out.append(max(late) - done if late else 0.0)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--switches", type=int, default=10)
    p.add_argument("--every", type=float, default=3.0, help="seconds between switches")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--max-seconds", type=float, default=240.0)
    p.add_argument("--dump", help="write every request and switch (monotonic times) as JSON here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="winnow-switch-"))
    data_dir, server, stop = work / "data", None, threading.Event()
    try:
        serve.log(f"building two untrained {args.arch} versions at {args.size} px ...")
        v1 = serve.build_model(data_dir, args.arch, args.size)
        v2 = add_version(data_dir, args.arch, args.size)
        password = "bench-" + secrets.token_hex(8)
        server = serve.Server("s", "2 workers x 1 thread", 2, 1, data_dir, work)
        server.start(password)
        server.wait_ready(120)
        base = f"http://127.0.0.1:{server.port}"
        admin = Admin(base, password)
        pictures = serve.request_pictures()
        with concurrent.futures.ThreadPoolExecutor(1) as runner:
            pending = runner.submit(load, server.port, pictures, args.concurrency, args.timeout,
                                    stop)
            started = time.monotonic()
            time.sleep(args.every)  # warm: both workers answering with v1
            switches = []
            for n in range(args.switches):
                if time.monotonic() - started > args.max_seconds:
                    break
                old, new, path = ((v1, v2, f"/admin/models/{v2}/activate") if n % 2 == 0
                                  else (v2, v1, "/admin/rollback"))
                begun = time.monotonic()
                admin.switch(path)
                switches.append((begun, time.monotonic(), old, new))
                serve.log(f"switch {n + 1}: {old} -> {new} ({path})")
                time.sleep(args.every)
            stop.set()
            results = pending.result()
            wall = time.monotonic() - started
        report(args, results, switches, lags(results, switches), wall)
        if args.dump:
            Path(args.dump).write_text(json.dumps({"switches": switches, "results": results}))
        return 0
    except serve.BenchError as e:
        serve.log(f"benchmark failed: {e}")
        if server is not None:
            serve.log(server.log_tail(15))
        return 2
    finally:
        stop.set()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(args, results, switches, lag, wall):
    failed = [err for _, _, _, err in results if err]
    ok = len(results) - len(failed)
    print(f"load: {len(results)} requests at concurrency {args.concurrency} over {wall:.1f} s "
          f"({ok / wall:.1f} req/s), failed: {len(failed)}"
          + (f" (e.g. {failed[0]})" if failed else ""))
    print(f"switches: {len(switches)} (activate / roll back alternately, every {args.every:g} s)")
    print("lag per switch (s): " + " ".join(f"{x:.2f}" for x in lag))
    if lag:
        print(f"lag: median {statistics.median(lag):.2f} s, max {max(lag):.2f} s "
              f"(target <= {TARGET_LAG:g} s)")
    met = not failed and lag and max(lag) <= TARGET_LAG
    print(f"target: zero failed requests and every worker on the new version within "
          f"{TARGET_LAG:g} s: {'MET' if met else 'NOT MET'}")
    print(f"machine load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    sys.exit(main())
