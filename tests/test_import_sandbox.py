"""A malicious export.pkl runs in the import checker's sandbox and finds nothing to steal."""
import io
import json
import os
import pwd
import resource
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import AdminSession, make_app
from webapp.core import sandbox
from webapp.model import registry

ADMIN_SECRET = "hunter2 in the environment"
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")

PROBE = """
import os, sys
data = {data!r}
seen = ["uid=%d" % os.getuid()]
leaked = [k for k, v in os.environ.items() if k.startswith("WINNOW_") or {secret!r} in v]
seen.append("environment=" + (",".join(leaked) or "clean"))
for name, attempt in [("secret_key", lambda: open(data + "/secret_key").read()),
                      ("database", lambda: open(data + "/winnow.sqlite3", "rb").read(16)),
                      ("listing", lambda: os.listdir(data)),
                      ("write", lambda: open(data + "/planted", "w").write("owned"))]:
    try:
        seen.append(name + "=GOT " + repr(attempt()))
    except Exception as e:
        seen.append(name + "=" + type(e).__name__)
raise RuntimeError("probe saw " + " ".join(seen))
"""


class Exploit:
    """An object whose unpickling runs `code`: what a hostile export.pkl would carry."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code, {})  # one namespace, as a module has


@pytest.fixture
def reachable_data_dir(monkeypatch):
    """A data dir whose parent anyone may enter, so only its own permissions protect it."""
    parent = Path(tempfile.mkdtemp(prefix="winnow-test-"))
    parent.chmod(0o755)
    monkeypatch.setenv("WINNOW_ADMIN_PASSWORD", ADMIN_SECRET)
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


@AS_ROOT
def test_a_hostile_export_pkl_cannot_read_secrets_or_touch_the_data_dir(reachable_data_dir):
    import torch

    data_dir = reachable_data_dir
    admin = AdminSession(make_app(data_dir).test_client())
    assert admin.login().status_code == 302
    hostile = io.BytesIO()
    torch.save(Exploit(PROBE.format(data=str(data_dir), secret=ADMIN_SECRET)), hostile)

    r = admin.client.post("/admin/models/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(hostile.getvalue()), "export.pkl"),
                                "csrf_token": admin.csrf_token()})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert "Not imported: this file is not a fastai image classifier Winnow can serve" in page
    assert "RuntimeError: probe saw" in page  # its code did run: in the sandbox
    seen = dict(item.split("=", 1) for item in
                page.split("probe saw ", 1)[1].split(".</", 1)[0].split())
    assert seen == {"uid": str(pwd.getpwnam("nobody").pw_uid), "environment": "clean",
                    "secret_key": "PermissionError", "database": "PermissionError",
                    "listing": "PermissionError", "write": "PermissionError"}
    secret_key = (data_dir / "secret_key").read_text().strip()
    assert secret_key not in page and ADMIN_SECRET not in page
    assert not (data_dir / "planted").exists()
    assert not any(p.is_dir() for p in registry.models_dir(data_dir).iterdir())


def run_child(code, limits, timeout=30):
    """Run a small Python program in the sandbox as the checker runs; return (proc, work)."""
    with sandbox.workdir() as work:
        proc = sandbox.run_sandboxed([sys.executable, "-c", code], work, timeout, limits)
    assert not work.exists()  # the working directory goes with the child
    return proc, work


REPORT = """
import json, os, resource
from webapp.core import sandbox
sandbox.drop_privileges()
limit = lambda name: resource.getrlimit(getattr(resource, name))[0]
print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "uid": os.getuid(),
                  "limits": {n: limit(n) for n in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE",
                                                    "RLIMIT_CORE", "RLIMIT_NPROC")}}))
"""


def test_the_sandboxed_child_gets_a_scrubbed_environment_its_own_directory_and_limits(
        monkeypatch):
    monkeypatch.setenv("WINNOW_ADMIN_PASSWORD", ADMIN_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for the child")
    limits = sandbox.Limits(address_space=6 << 30, cpu_seconds=20, processes=40,
                            file_size=1 << 20)
    proc, work = run_child(REPORT, limits)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    env = seen["env"]
    assert not [k for k in env if k.startswith("WINNOW_") or k.startswith("AWS_")]
    assert env["HOME"] == seen["cwd"] == str(work) and env["OMP_NUM_THREADS"] == "1"
    assert env["TORCH_HOME"].startswith(str(work)) and env["XDG_CACHE_HOME"].startswith(str(work))
    assert set(env) - {"PATH", "LANG", "LANGUAGE", "TZ"} - {k for k in env if k[:3] == "LC_"} \
        == {"HOME", "TMPDIR", "TORCH_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR",
            "OMP_NUM_THREADS", "PYTHONUNBUFFERED", "PYTHONPATH"}
    assert seen["limits"] == {"RLIMIT_AS": 6 << 30, "RLIMIT_CPU": 20, "RLIMIT_FSIZE": 1 << 20,
                              "RLIMIT_CORE": 0,  # the soft limits
                              "RLIMIT_NPROC": 40 if os.geteuid() == 0
                              else resource.getrlimit(resource.RLIMIT_NPROC)[0]}
    if os.geteuid() == 0:
        assert seen["uid"] == pwd.getpwnam("nobody").pw_uid


def test_a_child_that_spins_is_stopped_by_its_cpu_limit():
    proc, _ = run_child("while True: pass", sandbox.Limits(cpu_seconds=1))
    assert proc.returncode == -signal.SIGXCPU
