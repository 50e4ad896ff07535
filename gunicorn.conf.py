"""gunicorn settings for Winnow: one preloaded learner, shared copy-on-write by the workers."""
import os
import sys

# Torch must run single-threaded in the master: a multi-threaded op there before the fork
# deadlocks the forked workers (the PyTorch/OpenMP fork hang). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The cores this process may run on: all of the machine's, or fewer under taskset or a
# container's cpuset (multiprocessing.cpu_count() would count the machine's anyway).
CORES = len(os.sched_getaffinity(0))
bind = os.environ.get("WINNOW_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WINNOW_WORKERS", CORES))
# Threads, not sync workers: a sync worker is held for the whole of a /classify-url fetch (up to
# WINNOW_FETCH_DEADLINE), so a few anonymous requests at a slow upstream took every worker and
# /healthz timed out (bench/hostile.py). With threads a fetch holds one thread, and at most
# WINNOW_FETCH_CONCURRENCY (4) of them per process (past it, 503), so keep WINNOW_THREADS above
# that cap: the other threads keep answering /healthz, /api/classify and the admin pages.
# Inference is thread-safe (torch under inference_mode, one ONNX Runtime session per process),
# each request opens its own SQLite connection, and torch keeps the worker's share of the cores
# as intra-op threads (post_fork): concurrent inferences in one worker share those cores.
worker_class = "gthread"
threads = int(os.environ.get("WINNOW_THREADS", 8))
preload_app = True  # load the learner once, before forking: workers share its weights
timeout = 120  # restarts a hung worker only: the gthread loop heartbeats whatever threads wait on
graceful_timeout = 30
# A worker restarts after this many requests, a guard against slow leaks. A serving node's worker
# is small and holds only the runtime, and a restart costs it a model check, so it goes longer.
max_requests = int(os.environ.get(
    "WINNOW_MAX_REQUESTS", 20000 if os.environ.get("WINNOW_ROLE") == "node" else 1000))
max_requests_jitter = max_requests // 10
# No control socket: its default path is one per user, so two instances on one machine (an admin
# and a node, or the nodes of bench/scaleout.py) would fight over it, and Winnow does not use it.
control_socket_disable = True
accesslog = "-"
# logfmt: one key=value line per request, easy to grep and to ship to a log store.
access_log_format = ('remote=%(h)s method=%(m)s path="%(U)s" status=%(s)s bytes=%(B)s ms=%(M)s '
                     'pid=%(p)s')


# /metrics adds up every worker's numbers from files here (prometheus-client multiprocess mode).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="winnow-metrics-")


def on_starting(server):
    # Only if something imported torch (the fastai path serves a version): a version served by the
    # torch-free runtime never loads it, and the workers stay smaller for it.
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def post_worker_init(worker):
    """A serving node's worker starts following its model source before its first request."""
    model = getattr(worker.wsgi, "extensions", {}).get("winnow.model")
    if hasattr(model, "start"):
        model.start()


def worker_exit(server, worker):
    """End a worker without running native libraries' exit handlers.

    ONNX Runtime's, in a process forked from a master that loaded a model, abort the exit
    ("terminate called after throwing std::system_error"), which turns every graceful stop or
    max_requests restart into a SIGABRT in the log. Nothing is left to flush by now but stdio.
    """
    if "onnxruntime" in sys.modules:
        exiting = sys.exc_info()[1]
        code = exiting.code if isinstance(exiting, SystemExit) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def child_exit(server, worker):
    """Drop a dead worker's live gauges from /metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):
    """Give each worker its share of the cores before any inference runs.

    ONNX Runtime reads the share from OMP_NUM_THREADS when the worker makes its session; torch,
    if loaded, is told here (and reads the same variable if it is imported later).
    """
    threads = max(1, CORES // server.cfg.workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
