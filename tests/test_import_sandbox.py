"""A malicious export.pkl runs in the import checker's sandbox and finds nothing to steal, and
what the checker leaves behind is taken only as far as it holds up."""
import io
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import AdminSession, make_app
from tests.test_jobs import wait_for
from webapp.core import sandbox
from webapp.ingest.uploads import STAGING
from webapp.jobs import runner as jobs
from webapp.model import notebook_import, registry

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
    """The import job fails, with what the pickle saw (nothing) as its reason on the job page."""
    import torch

    data_dir = reachable_data_dir
    admin = AdminSession(make_app(data_dir).test_client())
    assert admin.login().status_code == 302
    hostile = io.BytesIO()
    torch.save(Exploit(PROBE.format(data=str(data_dir), secret=ADMIN_SECRET)), hostile)

    r = admin.client.post("/admin/models/import", content_type="multipart/form-data",
                          data={"file": (io.BytesIO(hostile.getvalue()), "export.pkl"),
                                "csrf_token": admin.csrf_token()})
    assert r.status_code == 303 and r.location.startswith("/jobs/")
    job_id = int(r.location.rsplit("/", 1)[-1])
    job = wait_for(data_dir, job_id, timeout=120)
    assert job["status"] == "failed", jobs.read_log(data_dir, job_id)
    page = admin.client.get(r.location).get_data(as_text=True)
    assert "this file is not a fastai image classifier Winnow can serve" in page
    assert "RuntimeError: probe saw" in job["message"]  # its code did run: in the sandbox
    seen = dict(item.split("=", 1) for item in job["message"].split("probe saw ", 1)[1].split())
    assert seen == {"uid": str(pwd.getpwnam("nobody").pw_uid), "environment": "clean",
                    "secret_key": "PermissionError", "database": "PermissionError",
                    "listing": "PermissionError", "write": "PermissionError"}
    secret_key = (data_dir / "secret_key").read_text().strip()
    log = jobs.read_log(data_dir, job_id)
    for text in (page, log):
        assert secret_key not in text and ADMIN_SECRET not in text
    assert not (data_dir / "planted").exists()
    assert not registry.models_dir(data_dir).is_dir() or not any(
        p.is_dir() for p in registry.models_dir(data_dir).iterdir())
    assert not list((data_dir / STAGING).glob(notebook_import.PREFIX + "*"))


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


def test_a_child_is_stopped_as_soon_as_poll_raises():
    """How an import job's Cancel reaches the checker: its progress call raises, the child dies."""
    started = time.monotonic()

    def poll():
        if time.monotonic() - started > 1:
            raise KeyboardInterrupt("cancelled")

    with sandbox.workdir() as work, pytest.raises(KeyboardInterrupt):
        sandbox.run_sandboxed([sys.executable, "-c", "import time; time.sleep(60)"], work, 30,
                              poll=poll)
    assert time.monotonic() - started < 10


def test_the_parent_keeps_the_end_of_a_chatty_childs_output_and_hears_its_lines():
    code = ("import sys\nfor i in range(40000): print('x' * 99)\n"
            "print('{\"last\": 1}')\nprint('one', file=sys.stderr)\n"
            "print('two', file=sys.stderr)")
    heard = []
    with sandbox.workdir() as work:
        proc = sandbox.run_sandboxed([sys.executable, "-c", code], work, 30, on_line=heard.append)
    assert proc.returncode == 0 and heard == ["one", "two"]
    assert len(proc.stdout) <= sandbox.MAX_OUTPUT and proc.stdout.endswith('{"last": 1}\n')
    code = "import time; print('checked', flush=True); time.sleep(30)"
    with sandbox.workdir() as work, pytest.raises(subprocess.TimeoutExpired) as stopped:
        sandbox.run_sandboxed([sys.executable, "-c", code], work, 2)
    assert stopped.value.output == "checked\n"  # what it said before it was stopped


def ready_record(sha="0" * 64):
    return {"status": "ready", "reason": "", "sha256": sha, "input_size": [32, 32],
            "fp32": {"max_abs_diff": 1e-7, "checked_on": 4},
            "int8": {"passed": False, "reason": "no labelled validation pictures"}}


def take(work, record, dest):
    folder = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return notebook_import._take_bundle(folder, record, dest)
    finally:
        os.close(folder)


def test_the_parent_takes_only_plain_files_from_the_checkers_bundle_folder(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("not for the bundle")
    work, dest = tmp_path / "work", tmp_path / "staged" / "bundle"
    (work / "bundle").mkdir(parents=True)
    (work / "bundle" / "bundle.json").write_text("{}")
    (work / "bundle" / "model.onnx").symlink_to(secret)
    (work / "bundle" / "extra.py").write_text("not taken")
    record = take(work, ready_record(), dest)
    assert record["status"] == "refused" and "model.onnx cannot be read" in record["reason"]
    assert not dest.exists()

    (work / "bundle" / "model.onnx").unlink()
    os.link(secret, work / "bundle" / "model.onnx")  # a hard link: not the child's own file
    record = take(work, ready_record(), dest)
    assert record["status"] == "refused" and "model.onnx is not a plain file" in record["reason"]

    shutil.rmtree(work / "bundle")
    (work / "bundle").symlink_to(tmp_path)  # the folder itself, elsewhere
    record = take(work, ready_record(), dest)
    assert record["status"] == "refused" and "bundle/ is missing or not a folder" in \
        record["reason"]
    assert not dest.exists()

    (work / "bundle").unlink()
    (work / "bundle").mkdir()
    (work / "bundle" / "bundle.json").write_text("{}")
    (work / "bundle" / "extra.py").write_text("not taken")
    record = take(work, ready_record(), dest)
    assert record["status"] == "ready" and sorted(p.name for p in dest.iterdir()) == [
        "bundle.json"]  # the load check then finds what bundle.json lists missing


@pytest.mark.parametrize("stdout", [
    "", "not json", "[1, 2]", '{"check": "yes"}', '{"check": {"classes": "blue"}}',
    '{"check": {"classes": ["a", "b"], "max_abs_diff": 0.5}}',
    '{"check": {"classes": ["a", "b"], "max_abs_diff": 0, "input_size": [32, "x"]}}',
])
def test_an_answer_that_does_not_hold_together_refuses_the_import(stdout):
    proc = subprocess.CompletedProcess([], 0, stdout, "")
    with pytest.raises(notebook_import.ImportRefused, match="not"):
        notebook_import._answer(proc)


@pytest.mark.parametrize("bundle", [
    "ready", {"status": "ready"}, {**ready_record(), "sha256": "../bundle.json"},
    {**ready_record(), "fp32": {"max_abs_diff": "small", "checked_on": 4}},
    {**ready_record(), "input_size": [32]}, {"status": "built", "reason": 7},
])
def test_a_garbled_bundle_record_is_a_refused_bundle_and_the_import_stands(bundle):
    check = {"classes": ["a", "b"], "max_abs_diff": 0.0, "input_size": [32, 32],
             "arch": {"not": "a name"}}
    out = json.dumps({"check": check}) + "\n" + json.dumps({"bundle": bundle})
    answer = notebook_import._answer(subprocess.CompletedProcess([], 0, out, ""))
    assert answer["classes"] == ["a", "b"] and answer["arch"] is None
    record = notebook_import.bundle_record(answer["bundle"])
    assert record["status"] == "refused" and isinstance(record["reason"], str)
    assert record["reason"] and "sha256" not in record


@pytest.mark.parametrize("returncode, stopped, why", [
    (-signal.SIGXCPU, "", "the checker was stopped by SIGXCPU: it used more CPU time"),
    (None, "it took longer than 900 s", "it took longer than 900 s"),
])
def test_a_checker_that_dies_while_building_the_bundle_still_imports_without_one(
        returncode, stopped, why):
    out = json.dumps({"check": {"classes": ["a", "b"], "max_abs_diff": 0.0}})
    answer = notebook_import._answer(subprocess.CompletedProcess([], returncode, out, ""), stopped)
    assert answer["classes"] == ["a", "b"] and answer["bundle"]["status"] == "refused"
    assert answer["bundle"]["reason"].startswith(f"the checker stopped while building it ({why}")
    with pytest.raises(notebook_import.ImportRefused, match=why):  # no check: no import
        notebook_import._answer(subprocess.CompletedProcess([], returncode, "", ""), stopped)
