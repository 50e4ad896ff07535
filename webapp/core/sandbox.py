"""Run an untrusted step (unpickling an upload) in a child process that holds as little as possible.

The child gets a scrubbed environment (no WINNOW_* settings, no secrets), its own empty working
directory, resource limits, and, when Winnow runs as root, the uid of `nobody`, which cannot read
the data dir. The child drops to that uid itself with `drop_privileges()`, after importing its
libraries and before it reads anything untrusted: the interpreter may live where `nobody` cannot
reach (inside root's home), so it must start as root. It is no jail: it still sees the network
and whatever the machine leaves world-readable.
"""
import contextlib
import ctypes
import os
import pwd
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from webapp.core.processes import ROOT

UNPRIVILEGED_USER = "nobody"
PR_SET_NO_NEW_PRIVS = 38  # from <linux/prctl.h>: setuid programs (su, sudo) no longer elevate
PASSED_ON = ("PATH", "LANG", "LANGUAGE", "TZ")  # and LC_*: what Python and torch read, no more


@dataclass(frozen=True)
class Limits:
    """Resource limits for a sandboxed child."""

    address_space: int = 8 << 30  # bytes; torch (CUDA build) + fastai + a resnet18 peak at ~4 GB
    cpu_seconds: int = 90
    processes: int = 64  # per uid, threads included; only set once the child is not root
    file_size: int = 64 << 20  # bytes, the largest file the child may write


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
    """Yield a new empty directory, owned by the sandbox's user, holding copies of `inputs`."""
    ids = unprivileged_ids()
    path = Path(tempfile.mkdtemp(prefix="winnow-sandbox-"))
    try:
        for source in inputs:
            shutil.copyfile(source, path / Path(source).name)
        if ids:
            for p in (path, *path.iterdir()):
                os.chown(p, *ids)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sandbox_env(work):
    """Return the child's whole environment: locale and PATH, and homes inside `work`."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ON or k.startswith("LC_")}
    home = str(work)
    env.update(HOME=home, TMPDIR=home, TORCH_HOME=str(work / "torch"),
               XDG_CACHE_HOME=str(work / "cache"), XDG_CONFIG_HOME=str(work / "config"),
               MPLCONFIGDIR=str(work / "matplotlib"), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))  # so `python -m webapp...` imports
    return env


def run_sandboxed(argv, work, timeout, limits=Limits()):
    """Run argv in `work` with a scrubbed environment and `limits`; return the CompletedProcess.

    The program must call drop_privileges() before it touches anything untrusted. Raises
    subprocess.TimeoutExpired after `timeout` seconds.
    """
    drop = unprivileged_ids() is not None
    return subprocess.run(argv, cwd=work, env=sandbox_env(Path(work)), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=lambda: _apply_limits(limits, drop))


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
