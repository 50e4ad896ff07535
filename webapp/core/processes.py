"""Child Python processes that run Winnow's own modules: job processes, the model-import checker."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: `python -m webapp...` runs from here


def module_command(module, *args):
    """Return the argv that runs `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def child_env(**overrides):
    """Return the environment for a child process: this one's, unbuffered, not a web worker."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **overrides}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # only web workers write /metrics' files
    return env


def pid_alive(pid):
    """Tell whether a process is running (an exited child not yet reaped, a zombie, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
