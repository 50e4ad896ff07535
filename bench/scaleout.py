"""Scale out: nginx in front of two serving nodes that follow an admin node, under load.

    .venv/bin/python bench/scaleout.py                        # everything: 2-4 minutes
    .venv/bin/python bench/scaleout.py --serve-venv ~/winnow-serve-venv   # kept for next time

Everything runs on 127.0.0.1 and is started by this script, in a temporary directory that is
deleted at the end (also after a failure or Ctrl-C, with every process it started):

  1. A venv from requirements-serve.txt alone (`<this python> -m venv`, then pip, as
     bench/serve_venv.py does), or the one --serve-venv names (built there if it has no gunicorn).
  2. The admin node's data dir: generated photo-like pictures in three classes (bench/predict.py's
     scenes) stored through webapp.dataset.store, and two versions trained on them with the
     project's recipe (training.train: resnet34 at 224 px from scratch, 1 + 1 epochs at fixed
     learning rates), each with its serving bundle. The weights do not change the speed; a
     resnet34 makes inference heavy enough that the client and nginx cost little next to it.
     v1 is made active again, then a node token comes from `flask --app wsgi node-token create`.
  3. The admin node: the development venv's gunicorn (gunicorn.conf.py, wsgi:app, 1 worker).
  4. Two serving nodes: the serving venv's gunicorn, WINNOW_ROLE=node, following the admin over
     HTTP with the token, 1 worker each, each PINNED TO ITS OWN CORE (`taskset -c`): each node is
     like a one-core machine, and gunicorn.conf.py gives its worker one inference thread.
  5. nginx (Debian's; installed with apt-get if missing) with the real site file,
     deploy/nginx/winnow.conf, included twice with its listen port and upstream servers
     rewritten: one port in front of node 1 alone, one in front of both nodes.

Then, with K client threads (--clients) sending POST /api/classify (pre-encoded 224 px JPEGs,
http.client keep-alive connections, no pause) through nginx:

  a. Throughput: blocks of --rps-seconds through the 1-node port and the 2-node port in the order
     1, 2, 2, 1 (a drift in the machine's load hits both alike); rps_1_node and rps_2_nodes are
     the successful requests over the summed time of each one's blocks.
  b. The main run, through the 2-node port with the load running all along: the admin's
     Activate v2 / Roll back (to v1) alternately, every --every seconds, over HTTP as a browser
     does (login, CSRF token from the page). After each switch every node's /readyz is polled
     DIRECTLY (not through nginx) every 0.1 s until its "model" is the new version: the lag is
     from the admin's POST returning to the node showing it. After 4 switches node 2's gunicorn
     (master and worker: its process group) is SIGKILLed and started again 3 s later; after one
     more switch (v2 is active: not the version either node's gunicorn master loaded at its
     start, which a worker restarted by max_requests meanwhile could fall back to) the admin is
     stopped (SIGTERM) for --outage seconds while the load goes on, then started again, and
     three more switches follow.

Every request counts: failed is anything but HTTP 200 with a list of predictions.
served_during_admin_outage counts the successful requests sent after the admin had exited and
answered before it was started again. A check beside the targets: no answer names a version
other than the active one once every node has shown the active one (stale_answers).

The machine's cores are shared by the nodes, nginx, the admin and this client: with both nodes
busy, the client and nginx take their CPU time from the nodes, which is why the model is heavy;
the report shows how many cores each used, and what other processes took meanwhile.

Targets: 0 failed requests; every lag <= 5 s; requests served during the admin's outage, none
failed; rps_2_nodes >= 1.7 x rps_1_node. The LAST line of output is one JSON object:
{"requests", "failed", "nodes", "max_switch_lag_s", "median_switch_lag_s",
 "served_during_admin_outage", "rps_1_node", "rps_2_nodes", "rps_ratio", ...}.

Bounded: --max-seconds (default 600) for the whole run; each wait has its own deadline.
Exit status 0 when it ran (targets met or not), 2 when it could not (no nginx, a venv or a
model that could not be made, a node that never became ready, ...).
"""
import argparse
import contextlib
import grp
import http.client
import io
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
for _path in (str(ROOT), str(BENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import serve  # noqa: E402  (bench/serve.py: request_pictures, free_port, CPU accounting)
from machine import cpu_model, loadavg  # noqa: E402  (bench/machine.py)
from switch import Admin  # noqa: E402  (bench/switch.py: an admin's session over HTTP)

SITE = ROOT / "deploy" / "nginx" / "winnow.conf"
REQUIREMENTS = ROOT / "requirements-serve.txt"
NODES = 2
TARGET_LAG = 5.0
TARGET_RATIO = 1.7
CLASSES = ("dusk", "sea", "meadow")
NOISY = 0.3  # cores used by other processes during the throughput blocks: flagged above this


BenchError = serve.BenchError  # the benchmark cannot go on; the message says why (switch.py too)


def say(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deadline:
    """The whole run's time cap: each wait takes the smaller of its own bound and what is left."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()

    def cap(self, seconds):
        return max(0.0, min(seconds, self.left()))

    def check(self, what):
        if self.left() <= 0:
            raise BenchError(f"--max-seconds ran out during {what}")


# ---- processes ----------------------------------------------------------------------------

class Process:
    """One child in its own process group (its workers with it), logging to a file."""

    def __init__(self, name, argv, env, log_path, cwd=ROOT):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = Path(log_path)
        self.proc = None

    def start(self):
        # gunicorn's control socket goes to $XDG_RUNTIME_DIR/gunicorn.ctl: one per process here,
        # not one shared path in $HOME for every gunicorn on the machine.
        run_dir = self.log_path.parent / f"run-{self.name.replace(' ', '-')}"
        run_dir.mkdir(mode=0o700, exist_ok=True)
        self.env = {**self.env, "XDG_RUNTIME_DIR": str(run_dir)}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        """The process and its children (gunicorn's workers), for CPU accounting."""
        if not self.alive():
            return []
        out = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid:
                out.append(int(stat.parent.name))
        return out

    def cpu_seconds(self):
        """CPU seconds of the group so far: the master's own, its reaped children's (workers
        restarted after max_requests) and the live workers'."""
        if not self.alive():
            return 0.0
        own = cpu_fields(self.proc.pid)
        return own[0] + own[1] + sum(sum(cpu_fields(p)[:2]) for p in self.pids()[1:])

    def kill_group(self):
        """SIGKILL the whole group at once: master and workers die together, as in a crash."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout=40):
        """SIGTERM the group, SIGKILL it after `timeout` s. Safe to call more than once."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} ignored SIGTERM for {timeout} s: killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log_tail(self, lines=25):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def cpu_fields(pid):
    """Return (own, reaped children's) CPU seconds of a process, (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        return (utime + stime) / serve.CLK_TCK, (cutime + cstime) / serve.CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def get_json(url, timeout=2.0, headers=None):
    """GET a URL; return (status, parsed JSON or None). Raises OSError when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


def wait_for(what, check, process, seconds, deadline, every=0.2):
    """Call check() until it returns a true value; fail if `process` dies or time runs out."""
    end = time.monotonic() + deadline.cap(seconds)
    last = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (OSError, ValueError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        if process is not None and not process.alive():
            raise BenchError(f"{process.name} exited ({process.proc.returncode}) while waiting "
                             f"for {what}:\n{process.log_tail()}")
        if time.monotonic() > end:
            tail = f"\n{process.log_tail()}" if process is not None else ""
            raise BenchError(f"timed out after {seconds:.0f} s waiting for {what}"
                             + (f" (last error: {last})" if last else "") + tail)
        time.sleep(every)


# ---- step 1: the serving venv -------------------------------------------------------------

def serving_venv(target, deadline):
    """Return a venv built from requirements-serve.txt alone (reused when it has gunicorn)."""
    gunicorn = target / "bin" / "gunicorn"
    if gunicorn.exists():
        say(f"reusing the serving venv {target}")
        return target
    say(f"building a serving venv from {REQUIREMENTS.name} alone ({sys.executable} -m venv) ...")
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True,
                   timeout=deadline.cap(300))
    pip = subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install",
                          "--disable-pip-version-check", "-q", "-r", str(REQUIREMENTS)],
                         capture_output=True, text=True, timeout=deadline.cap(900))
    if pip.returncode != 0 or not gunicorn.exists():
        raise BenchError(f"pip install -r {REQUIREMENTS.name} failed:\n{pip.stdout[-2000:]}"
                         f"\n{pip.stderr[-2000:]}")
    say(f"serving venv ready in {time.monotonic() - t:.0f} s")
    return target


# ---- step 2: two versions with bundles, and a node token ---------------------------------

def train_versions(data_dir, per_class, deadline):
    """Store generated pictures and train two versions with bundles; return (v1, v2)."""
    import numpy as np
    import predict  # bench/predict.py: scene(), jpeg(), SIZES

    from webapp.dataset.store import Dataset
    from webapp.model import registry, training

    rng = np.random.default_rng(0)
    ds = Dataset(data_dir)
    try:
        for _ in range(per_class):
            for label in CLASSES:
                w, h = predict.SIZES[int(rng.integers(len(predict.SIZES)))]
                ds.add_image(predict.jpeg(predict.scene(label, rng, w, h)), label=label,
                             source="bench", write_csv=False)
        ds.write_cleaned_csv()
    finally:
        ds.close()
    opts = training.TrainOptions(arch="resnet34", size=224, epochs=1, fine_tune_epochs=1, bs=4,
                                 lr=3e-3, lr_unfrozen=(1e-5, 1e-4), pretrained=False)
    versions = []
    for n in (1, 2):
        deadline.check("training")
        t = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # fastai prints each epoch's losses
            version, metrics = training.train(data_dir, opts, log=lambda *a: None)
        record = metrics.get("bundle") or {}
        if record.get("status") != "ready":
            raise BenchError(f"version {version} got no serving bundle: {record.get('reason')}")
        say(f"trained v{n} = {version}: resnet34 at 224 px on {metrics['images']} pictures, "
            f"with its serving bundle, in {time.monotonic() - t:.0f} s")
        versions.append(version)
    registry.activate(data_dir, versions[0], actor="bench")  # start from v1: v2 is a switch away
    return tuple(versions)


def tool(name):
    """A console script of the venv running this bench (gunicorn, flask)."""
    path = Path(sys.executable).parent / name
    return [str(path)] if path.exists() else [sys.executable, "-m", name]


def base_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
           and not k.startswith("WINNOW_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def node_token(admin_env, deadline):
    """Make a node token with the CLI, as an operator would; return it."""
    run = subprocess.run([*tool("flask"), "--app", "wsgi", "node-token", "create", "bench"],
                         cwd=ROOT, env=admin_env, capture_output=True, text=True,
                         timeout=deadline.cap(120))
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        raise BenchError(f"flask node-token create failed ({run.returncode}):\n"
                         f"{run.stdout[-1500:]}\n{run.stderr[-1500:]}")
    return lines[-1].strip()


# ---- step 5: nginx ------------------------------------------------------------------------

def nginx_binary():
    """Debian's nginx; installed with apt-get (as .ci/run does) when it is missing."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                      else None)
    if found:
        return found
    say("nginx is missing: apt-get install -y nginx ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx"]):
        try:
            run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BenchError(f"could not install nginx ({' '.join(argv)}: {e}); install Debian's "
                             "nginx package and run again") from None
        if run.returncode != 0:
            raise BenchError(f"could not install nginx ({' '.join(argv)} exited "
                             f"{run.returncode}): {run.stderr[-800:]}")
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    raise BenchError("apt-get installed nginx, but /usr/sbin/nginx is not there")


UPSTREAM = re.compile(r"(upstream\s+)winnow_nodes(\s*\{)(.*?)(\n\})", re.S)
SERVER_LINE = re.compile(r"^(\s*)server\s+\S+((?:\s+[a-z_]+=\S+)*)\s*;[ \t]*\n", re.M)
LISTEN_LINE = re.compile(r"^(\s*)listen\s+[^;]*;[ \t]*\n", re.M)


def site_copy(text, name, listen_port, node_ports):
    """The site file with its upstream renamed, its servers and its listen address replaced."""
    match = UPSTREAM.search(text)
    if not match:
        raise BenchError(f"{SITE} has no `upstream winnow_nodes {{...}}` block")
    servers = list(SERVER_LINE.finditer(match.group(3)))
    if not servers:
        raise BenchError(f"{SITE}: no `server host:port ...;` line in the upstream")
    indent, params = servers[0].group(1), servers[0].group(2)  # keep max_fails, fail_timeout
    lines = "".join(f"{indent}server 127.0.0.1:{port}{params};\n" for port in node_ports)
    body = match.group(3)
    body = body[:servers[0].start()] + lines + SERVER_LINE.sub("", body[servers[0].start():])
    text = text[:match.start()] + match.group(1) + name + match.group(2) + body + \
        match.group(4) + text[match.end():]
    text = text.replace("http://winnow_nodes;", f"http://{name};")
    if re.search(r"\bwinnow_nodes\b", re.sub(r"#.*", "", text)):
        raise BenchError(f"{SITE} names winnow_nodes where this bench does not expect it")
    listens = list(LISTEN_LINE.finditer(text))
    if not listens:
        raise BenchError(f"{SITE} has no listen line")
    first = listens[0]
    text = (text[:first.start()] + f"{first.group(1)}listen 127.0.0.1:{listen_port};\n"
            + LISTEN_LINE.sub("", text[first.end():]))
    return text


def nginx_main_config(work, sites):
    """A main config that runs as this user, in `work`, in the foreground."""
    user = ""
    if os.geteuid() == 0:  # workers drop to nobody; they only need the temp dirs
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"
        for d in (work, work.parent):
            d.chmod(0o711)  # let them reach work/<temp dirs>, without listing anything
    temp = "".join(f"    {kind}_temp_path {work / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    includes = "".join(f"    include {site};\n" for site in sites)
    return (f"{user}daemon off;\nmaster_process on;\nworker_processes 1;\n"
            f"pid {work / 'nginx.pid'};\nerror_log {work / 'error.log'} warn;\n"
            "events {\n    worker_connections 512;\n}\n"
            "http {\n    access_log off;\n" + temp + includes + "}\n")


def start_nginx(work, node_ports, deadline):
    """nginx with two copies of the site: node 1 alone, and both nodes; return (proc, ports)."""
    binary = nginx_binary()
    work.mkdir()
    text = SITE.read_text()
    ports = (serve.free_port(), serve.free_port())
    sites = []
    for n, (port, nodes) in enumerate(zip(ports, (node_ports[:1], node_ports), strict=True), 1):
        site = work / f"winnow-{n}-node.conf"
        site.write_text(site_copy(text, f"winnow_nodes_{n}", port, nodes))
        sites.append(site)
    main = work / "nginx.conf"
    main.write_text(nginx_main_config(work, sites))
    argv = [binary, "-e", str(work / "error.log"), "-p", f"{work}/", "-c", str(main)]
    test = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise BenchError(f"nginx -t refused the generated config:\n{test.stderr}")
    proc = Process("nginx", argv, base_env(), work / "nginx.out").start()

    def listening():
        for port in ports:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=1)) \
                    as c:
                c.connect()
        return True

    wait_for("nginx to listen", listening, proc, 20, deadline)
    return proc, ports


# ---- the nodes ----------------------------------------------------------------------------

class Node:
    """One serving node: gunicorn from the serving venv, pinned to one core."""

    def __init__(self, n, core, venv, work, admin_url, token):
        self.n, self.core, self.venv = n, core, venv
        self.work = work / f"node-{n}"
        self.work.mkdir()
        self.port = serve.free_port()
        self.admin_url, self.token = admin_url, token
        self.process, self.starts = None, 0

    @property
    def name(self):
        return f"node {self.n}"

    def start(self):
        self.starts += 1
        metrics = self.work / f"metrics-{self.starts}"  # a fresh one: the old pids are dead
        metrics.mkdir()
        env = base_env(
            PYTHONPATH=ROOT, WINNOW_ROLE="node", WINNOW_MODEL_SOURCE=self.admin_url,
            WINNOW_NODE_TOKEN=self.token, WINNOW_MODEL_CACHE=self.work / "model-cache",
            WINNOW_BIND=f"127.0.0.1:{self.port}", WINNOW_WORKERS=1, WINNOW_TRUSTED_PROXIES=1,
            WINNOW_CLASSIFY_RATE_LIMIT="1000000 per minute", WINNOW_OFFLINE=1,
            PROMETHEUS_MULTIPROC_DIR=metrics)
        argv = ["taskset", "-c", str(self.core), str(self.venv / "bin" / "gunicorn"),
                "-c", "gunicorn.conf.py", "wsgi:app"]
        self.process = Process(self.name, argv, env, self.work / "gunicorn.log").start()

    def readyz(self, timeout=2.0):
        return get_json(f"http://127.0.0.1:{self.port}/readyz", timeout=timeout)

    def model(self):
        """The version this node's /readyz says it serves (None when it serves none)."""
        status, body = self.readyz()
        return body.get("model") if status == 200 and isinstance(body, dict) else None

    def wait_serving(self, version, seconds, deadline):
        return wait_for(f"{self.name} to serve {version}", lambda: self.model() == version,
                        self.process, seconds, deadline)


# ---- the load -----------------------------------------------------------------------------

class Load:
    """K client threads POSTing pictures through nginx on keep-alive connections, no pause.

    Every request is kept as (sent, answered, model or None, error or None), monotonic times.
    """

    def __init__(self, port, pictures, clients, timeout):
        self.port, self.pictures, self.clients, self.timeout = port, pictures, clients, timeout
        self.results, self.lock = [], threading.Lock()
        self.stop_event, self.threads = threading.Event(), []

    def start(self):
        for k in range(self.clients):
            t = threading.Thread(target=self._client, args=(k,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=self.timeout + 5)
        return self.results

    def _client(self, k):
        conn, i = None, k
        while not self.stop_event.is_set():
            body = self.pictures[i % len(self.pictures)]
            i += self.clients
            sent, model, err = time.monotonic(), None, None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                      timeout=self.timeout)
                conn.request("POST", "/api/classify", body=body,
                             headers={"Content-Type": "image/jpeg"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    conn = None
                if resp.status != 200:
                    err = f"HTTP {resp.status}: {data[:120]!r}"
                else:
                    answer = json.loads(data)
                    predictions = answer.get("predictions")
                    if not isinstance(predictions, list) or not predictions:
                        err = "HTTP 200 without predictions"
                    else:
                        model = answer.get("model")
            except Exception as e:  # refused, reset, timed out, bad JSON: all failures
                err = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                    conn = None
            with self.lock:
                self.results.append((sent, time.monotonic(), model, err))
        if conn is not None:
            conn.close()


class CpuMeter:
    """CPU seconds used by groups of processes and by this process, over a stretch of time."""

    def __init__(self, groups):
        self.groups = groups  # {name: callable returning CPU seconds}

    def snapshot(self):
        snap = {name: f() for name, f in self.groups.items()}
        t = os.times()
        snap["client"] = t.user + t.system
        snap["machine"] = serve.machine_busy_seconds()
        snap["wall"] = time.monotonic()
        return snap

    @staticmethod
    def cores(before, after):
        wall = after["wall"] - before["wall"]
        return {k: (after[k] - before[k]) / wall for k in before
                if k != "wall" and before[k] is not None and after[k] is not None}


def throughput(ports, pictures, args, meter, deadline):
    """Blocks through the 1-node and 2-node ports, in the order 1 2 2 1; return the figures."""
    order = (1, 2, 2, 1)
    blocks = {1: [], 2: []}
    say(f"warming up both nodes through nginx for {args.warmup:g} s ...")
    warm = Load(ports[1], pictures, args.clients, args.timeout).start()
    time.sleep(deadline.cap(args.warmup))
    everything = list(warm.stop())
    for n in order:
        deadline.check("the throughput blocks")
        load = Load(ports[n - 1], pictures, args.clients, args.timeout)
        before = meter.snapshot()
        started = time.monotonic()
        load.start()
        time.sleep(deadline.cap(args.rps_seconds))
        stopped = time.monotonic()
        results = load.stop()
        after = meter.snapshot()
        everything += results
        ok = sum(1 for _, done, _, err in results if err is None and done <= stopped)
        block = {"ok": ok, "wall": stopped - started, "sent": len(results),
                 "failed": sum(1 for r in results if r[3]), "cores": meter.cores(before, after)}
        blocks[n].append(block)
        say(f"  through the {n}-node port: {ok / block['wall']:.1f} req/s "
            f"({ok} in {block['wall']:.1f} s, {block['failed']} failed)")
    rps = {n: sum(b["ok"] for b in bs) / sum(b["wall"] for b in bs) for n, bs in blocks.items()}
    return rps, blocks, everything


def poll_lag(nodes, version, done_at, seconds, deadline):
    """Poll every node's /readyz every 0.1 s until it serves `version`; return its lags."""
    lags, end = {}, time.monotonic() + deadline.cap(seconds)
    pending = list(nodes)  # a node that is not running never shows it: its lag stays None
    while pending and time.monotonic() < end:
        for node in list(pending):
            try:
                if node.model() == version:
                    lags[node.n] = time.monotonic() - done_at
                    pending.remove(node)
            except (OSError, ValueError, http.client.HTTPException):
                pass
        time.sleep(0.1)
    for node in pending:
        lags[node.n] = None  # never showed it within the bound
    return lags


def registry_active(admin_url, token):
    """What the admin's registry tells nodes is active (GET /registry/active with the token)."""
    status, body = get_json(f"{admin_url}/registry/active", timeout=5,
                            headers={"Authorization": f"Bearer {token}"})
    return body.get("version") if status == 200 and isinstance(body, dict) else None


def main_run(ctx, args, deadline):
    """Switches, a node killed and restarted, the admin stopped and restarted; under load."""
    nodes, v1, v2 = ctx["nodes"], ctx["v1"], ctx["v2"]
    switches, events = [], {}
    state = {"active": v1, "n": 0}

    def switch():
        deadline.check("the switches")
        new, path = ((v2, f"/admin/models/{v2}/activate") if state["active"] == v1
                     else (v1, "/admin/rollback"))
        began = time.monotonic()
        ctx["admin_session"].switch(path)
        done = time.monotonic()
        state["active"], state["n"] = new, state["n"] + 1
        confirmed = registry_active(ctx["admin_url"], ctx["token"])
        lags = poll_lag(nodes, new, done, args.lag_bound, deadline)
        switches.append({"n": state["n"], "path": path, "new": new, "began": began, "done": done,
                         "post_s": done - began, "lags": lags, "registry_says": confirmed})
        shown = ", ".join(f"node {k} {v:.2f} s" if v is not None else f"node {k} NEVER"
                          for k, v in sorted(lags.items()))
        say(f"switch {state['n']}: {path} -> {new} (POST took {done - began:.2f} s; registry "
            f"says {confirmed}); lag: {shown}")
        time.sleep(deadline.cap(max(0.0, args.every - (time.monotonic() - done))))

    load = Load(ctx["ports"][1], ctx["pictures"], args.clients, args.timeout).start()
    run_started = time.monotonic()
    try:
        time.sleep(deadline.cap(2.0))
        for _ in range(4):
            switch()

        node2 = nodes[1]
        say("SIGKILL node 2's process group (gunicorn master and worker) ...")
        events["node2_killed"] = time.monotonic()
        node2.process.kill_group()
        time.sleep(deadline.cap(3.0))
        say("starting node 2 again ...")
        events["node2_started"] = time.monotonic()
        node2.start()
        try:
            node2.wait_serving(state["active"], args.ready_timeout, deadline)
            events["node2_ready"] = time.monotonic()
            took = events["node2_ready"] - events["node2_started"]
            say(f"node 2 serves {state['active']} again, {took:.1f} s after its start")
        except BenchError as e:  # a finding, not the end of the run: node 1 goes on serving
            events["node2_error"] = str(e)
            say(f"node 2 did not come back: {e}")
        # One switch, so that the admin goes down while v2 is active: not the version either
        # node's gunicorn master loaded when it started (v1), which a worker restarted during the
        # outage (max_requests) might fall back to.
        switch()

        say(f"stopping the admin node (SIGTERM) for {args.outage:g} s, load going on ...")
        events["admin_stopping"] = time.monotonic()
        ctx["admin"].stop()
        events["admin_down"] = time.monotonic()
        time.sleep(deadline.cap(args.outage / 2))
        during = {}
        for node in nodes:
            try:
                status, body = node.readyz()
                during[node.n] = {"status": status, "model": body.get("model"),
                                  "source": body.get("source")}
            except (OSError, ValueError, AttributeError) as e:
                during[node.n] = {"error": f"{type(e).__name__}: {e}"}
        events["readyz_during_outage"] = during
        for n, seen in during.items():
            source = seen.get("source") or {}
            say(f"  node {n} during the outage: /readyz {seen.get('status')}, model "
                f"{seen.get('model')}, source state {source.get('state')!r}"
                + (f" ({source.get('last_error')})" if source.get("last_error") else ""))
        time.sleep(deadline.cap(args.outage - (time.monotonic() - events["admin_down"])))
        say("starting the admin node again ...")
        events["admin_starting"] = time.monotonic()
        ctx["admin"].start()
        wait_for("the admin's /readyz", lambda: get_json(f"{ctx['admin_url']}/readyz")[0] == 200,
                 ctx["admin"], args.ready_timeout, deadline)
        events["admin_ready"] = time.monotonic()
        say(f"admin ready again in {events['admin_ready'] - events['admin_starting']:.1f} s")
        ctx["admin_session"] = Admin(ctx["admin_url"], ctx["password"])
        for _ in range(3):
            switch()
        time.sleep(deadline.cap(1.0))
    finally:
        results = load.stop()
    return results, switches, events, time.monotonic() - run_started


# ---- the run ------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve-venv", type=Path,
                   help="the serving venv: reused when it has bin/gunicorn, else built there "
                        "(and kept); default: built in the temp dir")
    p.add_argument("--clients", type=int, default=4, help="client threads (K)")
    p.add_argument("--rps-seconds", type=float, default=8.0,
                   help="seconds per throughput block (4 blocks: 1, 2, 2, 1 nodes)")
    p.add_argument("--warmup", type=float, default=4.0, help="warm-up through both nodes, s")
    p.add_argument("--every", type=float, default=4.0, help="seconds between switches")
    p.add_argument("--outage", type=float, default=8.0, help="seconds the admin stays down")
    p.add_argument("--lag-bound", type=float, default=30.0,
                   help="stop polling a node for a switch after this long, s")
    p.add_argument("--per-class", type=int, default=8, help="generated training pictures")
    p.add_argument("--timeout", type=float, default=30.0, help="socket timeout per request, s")
    p.add_argument("--ready-timeout", type=float, default=120.0,
                   help="deadline for a gunicorn to become ready, s")
    p.add_argument("--max-seconds", type=float, default=600.0, help="cap on the whole run, s")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.rps_seconds <= 0 or args.every <= 0 or args.outage <= 0:
        p.error("--clients, --rps-seconds, --every and --outage must be positive")
    return args


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)  # so that the finally below stops every process


def run(args, work, procs):
    """Prepare, start, measure; return the report's lines and its JSON object."""
    deadline = Deadline(args.max_seconds)
    cpu, load_before = cpu_model(), loadavg()
    cores = sorted(os.sched_getaffinity(0))
    say(f"CPU: {cpu}, usable cores {len(cores)}; load average before: {load_before}")
    if len(cores) < NODES:
        raise BenchError(f"needs {NODES} usable cores to pin one node on each; this process "
                         f"may use {len(cores)}")
    if shutil.which("taskset") is None:
        raise BenchError("taskset (util-linux) is missing")
    nginx = nginx_binary()
    venv = serving_venv(args.serve_venv or work / "serve-venv", deadline)

    data_dir = work / "admin-data"
    say(f"training two resnet34 versions at 224 px on {args.per_class * len(CLASSES)} generated "
        "pictures (1 + 1 epochs each) ...")
    v1, v2 = train_versions(data_dir, args.per_class, deadline)

    password = "bench-" + secrets.token_hex(8)
    admin_port = serve.free_port()
    admin_url = f"http://127.0.0.1:{admin_port}"
    (work / "admin-metrics").mkdir()
    admin_env = base_env(WINNOW_ROLE="admin", WINNOW_DATA_DIR=data_dir,
                         WINNOW_ADMIN_PASSWORD=password, WINNOW_BIND=f"127.0.0.1:{admin_port}",
                         WINNOW_WORKERS=1, WINNOW_OFFLINE=1,
                         PROMETHEUS_MULTIPROC_DIR=work / "admin-metrics")
    token = node_token(admin_env, deadline)
    say("made a node token with `flask --app wsgi node-token create bench`")
    admin = Process("admin", [*tool("gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"], admin_env,
                    work / "admin.log")
    procs.append(admin)
    admin.start()
    wait_for("the admin's /readyz", lambda: get_json(f"{admin_url}/readyz")[0] == 200, admin,
             args.ready_timeout, deadline)
    if registry_active(admin_url, token) != v1:
        raise BenchError(f"GET /registry/active with the token does not say {v1}")
    say(f"admin node up on {admin_url} (1 worker), registry says {v1} is active")

    nodes = [Node(n + 1, cores[n], venv, work, admin_url, token) for n in range(NODES)]
    for node in nodes:
        node.start()
        procs.append(node)
    for node in nodes:
        node.wait_serving(v1, args.ready_timeout, deadline)
        status, body = node.readyz()
        say(f"{node.name} on 127.0.0.1:{node.port}, taskset -c {node.core} (one core): "
            f"serving {body.get('model')} with {body.get('runtime')} {body.get('precision')}"
            + (f" ({body['note']})" if body.get("note") else ""))
    nginx_proc, ports = start_nginx(work / "nginx", [n.port for n in nodes], deadline)
    procs.append(nginx_proc)
    say(f"nginx ({nginx}) with deploy/nginx/winnow.conf: port {ports[0]} -> node 1, "
        f"port {ports[1]} -> nodes 1 and 2")

    pictures = serve.request_pictures()
    meter = CpuMeter({
        "nodes": lambda: sum(n.process.cpu_seconds() for n in nodes if n.process),
        "nginx": nginx_proc.cpu_seconds,
        "admin": admin.cpu_seconds,
    })
    say(f"throughput: {args.clients} clients, blocks of {args.rps_seconds:g} s in the order "
        "1 2 2 1 nodes ...")
    rps, blocks, phase_a = throughput(ports, pictures, args, meter, deadline)

    ctx = {"nodes": nodes, "v1": v1, "v2": v2, "admin": admin, "admin_url": admin_url,
           "token": token, "password": password, "ports": ports, "pictures": pictures,
           "admin_session": Admin(admin_url, password)}
    say(f"main run through the 2-node port: switches every {args.every:g} s, node 2 killed and "
        f"restarted, the admin down for {args.outage:g} s ...")
    phase_b, switches, events, wall_b = main_run(ctx, args, deadline)
    load_after = loadavg()
    return report(args, cpu, load_before, load_after, rps, blocks, phase_a, phase_b, switches,
                  events, wall_b, nodes, v1)


def kinds(results):
    counts = {}
    for *_, err in results:
        if err:
            key = re.sub(r"\d+\.\d+", "#", err)[:100]
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{n} x {e}" for e, n in sorted(counts.items(), key=lambda x: -x[1]))


def stale_answers(results, switches, first):
    """Answers from a version that was no longer active, among requests sent once every node
    had shown the active one (after a switch's lag, before the next switch began).

    Returns (requests checked, [(sent, model, expected)]). Before the first switch `first` is
    the active version; a switch that some node never showed opens no window.
    """
    windows = []  # (from, until, version)
    starts = [s["began"] for s in switches] + [float("inf")]
    windows.append((float("-inf"), starts[0], first))
    for s, until in zip(switches, starts[1:], strict=True):
        if all(lag is not None for lag in s["lags"].values()):
            windows.append((s["done"] + max(s["lags"].values()), until, s["new"]))
    checked, stale = 0, []
    for sent, done, model, err in results:
        if err is not None:
            continue
        for start, until, version in windows:
            if start <= sent and done <= until:
                checked += 1
                if model != version:
                    stale.append((sent, model, version))
                break
    return checked, stale


def report(args, cpu, load_before, load_after, rps, blocks, phase_a, phase_b, switches, events,
           wall_b, nodes, v1):
    lines = []
    everything = phase_a + phase_b
    failed = [r for r in everything if r[3]]
    lags = [lag for s in switches for lag in s["lags"].values()]
    measured = [lag for lag in lags if lag is not None]
    down, up = events.get("admin_down"), events.get("admin_starting")
    outage = [r for r in phase_b if down is not None and up is not None
              and r[0] >= down and r[1] <= up]
    outage_ok = sum(1 for r in outage if r[3] is None)
    outage_failed = len(outage) - outage_ok
    ratio = rps[2] / rps[1] if rps[1] else None

    lines.append("")
    lines.append(f"scale-out benchmark: {cpu}, {len(os.sched_getaffinity(0))} usable cores; "
                 f"load average before {load_before}, after {load_after}")
    lines.append(f"nodes: {NODES}, each 1 gunicorn worker pinned to its own core (taskset -c), "
                 "serving venv from requirements-serve.txt; admin: 1 worker, not pinned; "
                 "nginx with deploy/nginx/winnow.conf; resnet34 at 224 px")
    lines.append(f"load: {args.clients} client threads, POST /api/classify (224 px JPEG) on "
                 "keep-alive connections through nginx, no pause")
    lines.append("")
    others = {}
    for n in (1, 2):
        per = " ".join(f"{b['ok'] / b['wall']:.1f}" for b in blocks[n])
        c = [b["cores"] for b in blocks[n]]

        def avg(key, c=c):
            values = [x[key] for x in c if key in x]
            return sum(values) / len(values) if values else float("nan")

        other = avg("machine") - sum(avg(k) for k in ("nodes", "nginx", "client", "admin"))
        others[n] = other
        lines.append(f"throughput through nginx, {n} node{'s' if n > 1 else ''}: {rps[n]:.1f} "
                     f"req/s (blocks: {per}); cores used: nodes {avg('nodes'):.2f}, nginx "
                     f"{avg('nginx'):.2f}, client {avg('client'):.2f}, admin {avg('admin'):.2f}, "
                     f"other processes {max(0.0, other):.2f}")
    lines.append(f"ratio 2 nodes / 1 node: {ratio:.2f}x" if ratio else "ratio: -")
    if max(others.values()) > NOISY:
        lines.append(f"noise: other processes on this machine used up to {max(others.values()):.2f}"
                     " cores meanwhile, taken from the nodes: these figures are low and noisy")
    lines.append("")
    lines.append(f"main run: {len(phase_b)} requests in {wall_b:.1f} s "
                 f"({sum(1 for r in phase_b if not r[3]) / wall_b:.1f} req/s), "
                 f"{sum(1 for r in phase_b if r[3])} failed")
    for s in switches:
        shown = ", ".join(f"node {k} {v:.2f} s" if v is not None else f"node {k} never"
                          for k, v in sorted(s["lags"].items()))
        lines.append(f"  switch {s['n']}: {s['path']} -> {s['new']}: {shown}")
    if measured:
        lines.append(f"switch lag over {len(lags)} node-switches: median "
                     f"{statistics.median(measured):.2f} s, max {max(measured):.2f} s")
    if "node2_error" in events:
        lines.append(f"node 2 did NOT come back after its kill: {events['node2_error']}")
    if "node2_ready" in events:
        lines.append(f"node 2 killed (SIGKILL to master and worker), started 3 s later, serving "
                     f"again {events['node2_ready'] - events['node2_started']:.1f} s after its "
                     "start")
    if down is not None and up is not None:
        lines.append(f"admin down {up - down:.1f} s: {outage_ok} requests served meanwhile, "
                     f"{outage_failed} failed")
    if failed:
        lines.append(f"failures: {kinds(failed)}")
    checked, stale = stale_answers(phase_b, switches, v1)
    lines.append(f"answers from a version no longer active, once every node had shown the new "
                 f"one: {len(stale)} of {checked} checked")
    if stale:
        start = phase_b[0][0] if phase_b else 0.0
        lines.append("  e.g. " + "; ".join(f"at +{sent - start:.1f} s: {got} instead of {want}"
                                          for sent, got, want in stale[:3]))
    lines.append("")
    met = {
        "0 failed requests": not failed,
        f"every switch lag <= {TARGET_LAG:g} s": bool(lags) and len(measured) == len(lags)
        and max(measured) <= TARGET_LAG,
        "requests served during the admin's outage, none failed": outage_ok > 0
        and outage_failed == 0,
        f"rps_2_nodes >= {TARGET_RATIO:g} x rps_1_node": ratio is not None
        and ratio >= TARGET_RATIO,
    }
    for name, ok in met.items():
        lines.append(f"target: {name}: {'met' if ok else 'NOT met'}")
    lines.append(f"check: no answer from an old version once every node showed the new one: "
                 f"{'yes' if not stale else 'NO'}")
    out = {
        "requests": len(everything), "failed": len(failed), "nodes": NODES,
        "max_switch_lag_s": round(max(measured), 2) if measured else None,
        "median_switch_lag_s": round(statistics.median(measured), 2) if measured else None,
        "served_during_admin_outage": outage_ok,
        "rps_1_node": round(rps[1], 1), "rps_2_nodes": round(rps[2], 1),
        "rps_ratio": round(ratio, 2) if ratio else None,
        "switches": len(switches), "failed_during_admin_outage": outage_failed,
        "stale_answers": len(stale),
        "other_cores_1_node": round(max(0.0, others[1]), 2),
        "other_cores_2_nodes": round(max(0.0, others[2]), 2),
        "cpu": cpu, "load_before": load_before, "load_after": load_after,
        "targets_met": all(met.values()),
    }
    return lines, out


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    work = Path(tempfile.mkdtemp(prefix="winnow-scaleout-"))
    procs, status, result = [], 2, None
    try:
        lines, out = run(args, work, procs)
        result = (lines, out)
        status = 0
    except BenchError as e:
        say(f"benchmark could not run: {e}")
    except (OSError, subprocess.SubprocessError, http.client.HTTPException) as e:
        say(f"benchmark could not run: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        say("interrupted")
        status = 130
    finally:
        for proc in reversed(procs):
            target = proc.process if isinstance(proc, Node) else proc
            try:
                if target is not None:
                    target.stop(timeout=20)
            except Exception as e:  # keep stopping the others
                say(f"stopping {proc.name}: {type(e).__name__}: {e}")
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if result is not None:
        lines, out = result
        for line in lines:
            print(line)
        print(json.dumps(out), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
