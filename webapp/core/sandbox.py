"""Run an untrusted step (unpickling an upload) in a child process that holds as little as possible.

The child gets a scrubbed environment (no WINNOW_* settings, no secrets), its own empty working
directory, resource limits, and, when Winnow runs as root, the uid of `nobody`, which cannot read
the data dir. The child drops to that uid itself with `drop_privileges()`, after importing its
libraries and before it reads anything untrusted: the interpreter may live where `nobody` cannot
reach (inside root's home), so it must start as root. It is no jail: it still sees the network
and whatever the machine leaves world-readable.

The parent reads the child's output while it runs (its stderr line by line, so a long step can
report progress), keeps the last MAX_OUTPUT bytes of each stream, and can stop it at any moment.
"""
import collections
import contextlib
import ctypes
import os
import pwd
import queue
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from webapp.core.processes import ROOT

UNPRIVILEGED_USER = "nobody"
PR_SET_NO_NEW_PRIVS = 38  # from <linux/prctl.h>: setuid programs (su, sudo) no longer elevate
PASSED_ON = ("PATH", "LANG", "LANGUAGE", "TZ")  # and LC_*: what Python and torch read, no more
MAX_OUTPUT = 1 << 20  # bytes kept of the end of the child's stdout, and of its stderr
MAX_LINES = 2000  # stderr lines handed to `on_line`, at most
MAX_LINE = 4096  # bytes: a longer stderr line is cut
POLL_SECONDS = 0.5  # how often the parent looks at the child (timeout, `poll`, new lines)
READ_GRACE = 5.0  # seconds to finish reading once the child has exited


@dataclass(frozen=True)
class Limits:
    """Resource limits for a sandboxed child."""

    address_space: int = 8 << 30  # bytes; torch (CUDA build) + fastai + a resnet18 peak at ~4 GB
    cpu_seconds: int = 600  # summed over threads: ONNX Runtime and torch use several
    # Per uid, threads included; only set once the child is not root. ONNX Runtime starts a
    # thread per core for one-off work, torch an inter-op pool of as many.
    processes: int = 64 + 2 * (os.cpu_count() or 1)
    file_size: int = 512 << 20  # bytes, the largest file the child may write (a resnet50's ONNX
    # is ~100 MB)
    threads: int = 1  # OMP_NUM_THREADS: the threads torch computes with


def unprivileged_ids():
    """Return the (uid, gid) a sandboxed child runs as when this process is root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise PermissionError(f"there is no '{UNPRIVILEGED_USER}' user to run the check as; "
                              "not running it as root") from None
    return user.pw_uid, user.pw_gid


@contextlib.contextmanager
def workdir(*inputs):
    """Yield a new empty directory, owned by the sandbox's user, holding copies of `inputs`.

    More may be put into it before the child starts: `hand_over` then gives it to that user.
    """
    path = Path(tempfile.mkdtemp(prefix="winnow-sandbox-"))
    try:
        for source in inputs:
            shutil.copyfile(source, path / Path(source).name)
        hand_over(path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hand_over(path):
    """Make a folder and everything in it the sandbox user's (when there is one), for it to read."""
    ids = unprivileged_ids()
    if not ids:
        return
    os.chown(path, *ids)
    for root, dirs, names in os.walk(path):
        for name in dirs + names:
            os.lchown(os.path.join(root, name), *ids)


def sandbox_env(work, threads=1):
    """Return the child's whole environment: locale and PATH, and homes inside `work`."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON or k.startswith("LC_")}
    home = str(work)
    env.update(HOME=home, TMPDIR=home, TORCH_HOME=str(work / "torch"),
               XDG_CACHE_HOME=str(work / "cache"), XDG_CONFIG_HOME=str(work / "config"),
               MPLCONFIGDIR=str(work / "matplotlib"), OMP_NUM_THREADS=str(int(threads)),
               PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))  # so `python -m webapp...` imports
    return env


class _Reader(threading.Thread):
    """Read one of the child's pipes to its end: keep its last MAX_OUTPUT bytes (where its answer
    and its last words are), and queue its lines if asked."""

    def __init__(self, stream, lines=False):
        super().__init__(daemon=True)
        self.stream, self.chunks, self.kept = stream, collections.deque(), 0
        self.lines = queue.SimpleQueue() if lines else None
        self.queued = 0
        self.start()

    def run(self):
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.stream.readline(MAX_LINE):
                self.chunks.append(chunk)
                self.kept += len(chunk)
                while self.kept > MAX_OUTPUT:
                    self.kept -= len(self.chunks.popleft())
                if self.lines is not None and self.queued < MAX_LINES:
                    self.queued += 1
                    self.lines.put(chunk.decode("utf-8", "replace").rstrip("\r\n"))

    def drain(self, on_line):
        """Hand the lines read so far to on_line (in the caller's thread)."""
        while self.lines is not None and on_line is not None:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            on_line(line)

    def text(self):
        return b"".join(self.chunks).decode("utf-8", "replace")


def run_sandboxed(argv, work, timeout, limits=Limits(), on_line=None, poll=None):
    """Run argv in `work` with a scrubbed environment and `limits`; return the CompletedProcess.

    The program must call drop_privileges() before it touches anything untrusted. While it runs,
    `on_line(text)` gets each line it writes to stderr and `poll()` is called about every
    POLL_SECONDS, both in this thread: whatever they raise stops the child (SIGKILL) and
    propagates. Raises subprocess.TimeoutExpired after `timeout` seconds, with what the child
    had written as its `output` and `stderr`.
    """
    drop = unprivileged_ids() is not None
    proc = subprocess.Popen(argv, cwd=work, env=sandbox_env(Path(work), limits.threads),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            preexec_fn=lambda: _apply_limits(limits, drop))
    out, err = _Reader(proc.stdout), _Reader(proc.stderr, lines=on_line is not None)
    deadline, timed_out = time.monotonic() + timeout, False
    try:
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
            err.drain(on_line)
            if proc.returncode is not None:
                break
            if time.monotonic() >= deadline:
                timed_out = True
                break
            if poll:
                poll()
    finally:
        if proc.returncode is None:  # stopped by the timeout, or by what on_line/poll raised
            proc.kill()
            proc.wait()
        # A process the child left behind may hold the pipes open: stop waiting for it after
        # READ_GRACE (its reader thread ends with it).
        for reader in (out, err):
            reader.join(READ_GRACE)
            if not reader.is_alive():
                reader.stream.close()
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout, output=out.text(), stderr=err.text())
    err.drain(on_line)
    return subprocess.CompletedProcess(argv, proc.returncode, out.text(), err.text())


def _apply_limits(limits, per_uid):
    for which, value in ((resource.RLIMIT_AS, limits.address_space),
                         (resource.RLIMIT_FSIZE, limits.file_size),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))
    # SIGXCPU at the soft limit says why it stopped; at equal limits the kernel sends SIGKILL
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    if per_uid:  # counted per uid: as the invoking (non-root) user it would count their processes
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def drop_privileges():
    """Become the sandbox's unprivileged user for good (when root), or raise PermissionError."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    ids = unprivileged_ids()
    if ids is None:
        return
    uid, gid = ids
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # as root this sets the real, effective and saved uid: there is no way back
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise PermissionError("could not drop root privileges; not running the check as root")
