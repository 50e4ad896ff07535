"""A serving machine installs requirements-serve.txt only: classifying must need nothing else.

Fast: no venv is built here (bench/serve_venv.py does that). A fresh process of this venv loads
the trained bundle and classifies a JPEG, then lists the third-party modules that imported;
each must come from a distribution requirements-serve.txt lists, or one those need in turn.
"""
import functools
import importlib.metadata as md
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.pictures import jpeg, tinted
from webapp.model import bundle, registry

ROOT = Path(__file__).resolve().parent.parent
SERVE_REQUIREMENTS = ROOT / "requirements-serve.txt"
DEV_REQUIREMENTS = ROOT / "requirements.txt"
HEAVY = ("torch", "torchvision", "fastai")
FIRST_PARTY = {"webapp", "tests"}

CLASSIFY = r"""
import json, sys
before = set(sys.modules)
from webapp.core import images
from webapp.runtime import bundle
bundle_dir, version, sha256, picture = sys.argv[1:5]
predictor = bundle.load(bundle_dir, version, expected_sha256=sha256)
data = open(picture, "rb").read()
ranked = predictor.predict(images.decode(data, draft=predictor.draft_size))
print(json.dumps({"label": ranked[0][0], "modules": sorted(set(sys.modules) - before)}))
"""
# A whole serving node (WINNOW_ROLE=node) on the version's models/ folder: its page and its API.
NODE = r"""
import json, sys, tempfile
before = set(sys.modules)
from webapp.app import create_app
bundle_dir, version, sha256, picture = sys.argv[1:5]
models = bundle_dir.rsplit("/", 2)[0]
app = create_app({"ROLE": "node", "MODEL_SOURCE": models, "MODEL_CACHE": tempfile.mkdtemp()})
client = app.test_client()
data = open(picture, "rb").read()
answer = client.post("/api/classify", data=data, content_type="image/jpeg").get_json()
assert answer["model"] == version, answer
assert client.get("/").status_code == 200
print(json.dumps({"label": answer["predictions"][0][0],
                  "modules": sorted(set(sys.modules) - before)}))
"""
SCRIPTS = {"runtime": CLASSIFY, "node": NODE}


def normal(name):
    """Return a distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path):
    """Return {normalised name: version} for a requirements file's `name==version` lines."""
    found = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            found[normal(req.name)] = str(req.specifier)
    return found


def closure(names):
    """Return the names plus every distribution they require in turn (no extras), normalised."""
    seen, todo = set(), [normal(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normal(req.name))
    return seen


@functools.cache
def classified(data_dir, version, sha256, tmp, how):
    """Classify a JPEG in a fresh process with the runtime, or a whole node; return its report."""
    picture = Path(tmp) / "serve-requirements.jpg"
    picture.write_bytes(jpeg(tinted("red", random.Random(3), 64)))
    bundle_dir = bundle.bundle_dir(registry.models_dir(data_dir) / version)
    run = subprocess.run([sys.executable, "-c", SCRIPTS[how], str(bundle_dir), version, sha256,
                          str(picture)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["runtime", "node"])
def report(trained_dir, tmp_path_factory, request):
    data_dir, version, metrics = trained_dir
    tmp = tmp_path_factory.getbasetemp()
    return classified(data_dir, version, metrics["bundle"]["sha256"], tmp, request.param)


def test_a_serving_machine_classifies_with_only_what_requirements_serve_lists(report):
    assert report["label"] in ("red", "blue")
    tops = {m.split(".")[0] for m in report["modules"]}
    third_party = tops - set(sys.stdlib_module_names) - FIRST_PARTY
    owners = md.packages_distributions()
    unowned = sorted(t for t in third_party if t not in owners)
    assert unowned == [], f"modules from no installed distribution: {unowned}"
    needed = {normal(d) for t in third_party for d in owners.get(t, [])}
    allowed = closure(pins(SERVE_REQUIREMENTS))
    assert needed - allowed == set(), (
        f"classifying imports {sorted(needed - allowed)}, which requirements-serve.txt neither "
        "lists nor pulls in")


def test_classifying_on_a_serving_machine_never_imports_torch_or_fastai(report):
    tops = {m.split(".")[0] for m in report["modules"]}
    assert sorted(tops & set(HEAVY)) == []


def test_the_serving_requirements_leave_out_training_and_cleaning():
    listed = pins(SERVE_REQUIREMENTS)
    for heavy in ("torch", "torchvision", "fastai", "onnx", "pandas", "matplotlib", "cleanlab"):
        assert heavy not in listed


def test_the_serving_pins_are_the_development_pins():
    serve, dev = pins(SERVE_REQUIREMENTS), pins(DEV_REQUIREMENTS)
    assert all(spec.startswith("==") for spec in serve.values()), "pin every version"
    differ = {name: (spec, dev[name]) for name, spec in serve.items()
              if name in dev and dev[name] != spec}
    assert differ == {}
