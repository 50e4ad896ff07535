"""Build a serving machine's venv from requirements-serve.txt alone and prove the runtime works.

    .venv/bin/python bench/serve_venv.py             # build, measure, check, clean up
    .venv/bin/python bench/serve_venv.py --keep      # keep the temp dir (its path is printed)

Steps, in a temporary directory:

  1. In this (the development) venv, train a tiny model with its serving bundle, as the tests'
     trained_dir fixture does: resnet18 at 32 px, from scratch (pretrained=False), on
     tests.pictures.tinted_set(per_class=16) stored through webapp.dataset.store.Dataset.
  2. `python3 -m venv` (the checkout's Python, run as `<this python> -m venv`, so the versions
     match) a fresh venv, then `<venv>/bin/python -m pip install -r requirements-serve.txt`
     with pip's default configuration (no index options here).
  3. Measure the venv on disk (du of the venv directory, MB) and list its largest packages.
  4. In that venv, with PYTHONPATH pointing at the checkout, a fresh process times
     `import webapp.runtime.bundle` + bundle.load (sha256 checks and load-time checks included),
     classifies one JPEG, checks that torch, torchvision and fastai are neither imported nor even
     installed there, and compares its probabilities with the development venv's. Then, as a
     second step, it starts the app itself (webapp.app.create_app on a copy of the data dir) and
     asks for the public pages and POST /api/classify: the "public pages" half of the file
     (the lesson's /learn/sgd trains a tiny model with torch: reported, not required).

Prints what it did and, as its LAST line, ONE JSON object:
{"serve_venv_mb", "runtime_works", "import_load_s", ...}. Target: serve_venv_mb <= 400.
Exit status 0 when it ran (whether or not everything worked), 2 when it could not (no bundle,
venv creation or pip failed). Needs the package registry pip is configured for; a minute or two.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REQUIREMENTS = ROOT / "requirements-serve.txt"
TARGET_MB = 400

CHECK = r"""
import importlib.util, json, shutil, sys, time
bundle_dir, version, sha256, picture, data_copy = sys.argv[1:6]
t0 = time.perf_counter()
from webapp.runtime import bundle
predictor = bundle.load(bundle_dir, version, expected_sha256=sha256)
t1 = time.perf_counter()
from webapp.core import images
data = open(picture, "rb").read()
probs = predictor.probabilities([images.decode(data, draft=predictor.draft_size)])[0]
t2 = time.perf_counter()
heavy = ("torch", "torchvision", "fastai")
out = {"import_load_s": t1 - t0, "first_answer_s": t2 - t1, "precision": predictor.precision,
       "probs": probs.tolist(), "vocab": predictor.vocab,
       "heavy_imported": sorted(m for m in heavy if m in sys.modules),
       "heavy_installed": sorted(m for m in heavy if importlib.util.find_spec(m) is not None)}
try:
    from webapp.app import create_app

    app = create_app({"TESTING": True, "DATA_DIR": data_copy, "ADMIN_PASSWORD": "serve-venv"})
    client = app.test_client()
    pages = {path: client.get(path).status_code for path in ("/", "/login", "/healthz",
                                                              "/readyz", "/metrics",
                                                              "/api/openapi.json")}
    answer = client.post("/api/classify", data=data, content_type="image/jpeg")
    pages["POST /api/classify"] = answer.status_code
    out["pages"] = pages
    out["api_answer"] = answer.get_json(silent=True)
    try:  # the lesson's page trains a tiny model with torch: not a serving page
        out["lesson"] = client.get("/learn/sgd").status_code
    except Exception as e:
        out["lesson"] = f"{type(e).__name__}: {e}"
except Exception as e:
    out["pages_error"] = f"{type(e).__name__}: {e}"
out["heavy_imported_after_app"] = sorted(m for m in heavy if m in sys.modules)
print(json.dumps(out))
"""


def log(*a):
    print(*a, flush=True)


def build_bundle(data_dir):
    """Train the tiny model (as tests/conftest.py's trained_dir); return (version, metrics)."""
    os.environ.setdefault("WINNOW_OFFLINE", "1")
    from tests.pictures import tinted_set
    from webapp.dataset.store import Dataset
    from webapp.model import training

    ds = Dataset(data_dir)
    for label, data in tinted_set(per_class=16):
        ds.add_image(data, label=label, source="bench", write_csv=False)
    ds.write_cleaned_csv()
    ds.close()
    opts = training.TrainOptions(arch="resnet18", size=32, epochs=2, fine_tune_epochs=2, bs=4,
                                 lr=1e-2, pretrained=False, lr_find_iters=30)
    return training.train(data_dir, opts, log=lambda *a: None)


def du_mb(path):
    """Return the disk usage of a directory in MB (du -sk)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) / 1024


def largest(site_packages, n=8):
    """Return [(name, MB)] of the n largest entries of site-packages."""
    sizes = [(p.name, du_mb(p)) for p in Path(site_packages).iterdir() if p.is_dir()]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--pip-timeout", type=int, default=900, help="seconds pip may take")
    args = p.parse_args()

    from tests.pictures import jpeg, tinted
    from webapp.core import images
    from webapp.model import bundle as model_bundle, registry
    from webapp.runtime import bundle as rt

    work = Path(tempfile.mkdtemp(prefix="winnow-serve-venv-"))
    try:
        data_dir = work / "data"
        log("training a tiny resnet18 at 32 px with its serving bundle ...")
        version, metrics = build_bundle(data_dir)
        record = metrics["bundle"]
        if record["status"] != "ready":
            log(f"no serving bundle: {record['reason']}")
            sys.exit(2)
        bundle_dir = model_bundle.bundle_dir(registry.models_dir(data_dir) / version)
        picture = work / "picture.jpg"
        picture.write_bytes(jpeg(tinted("red", random.Random(7), 64)))
        mine = rt.load(bundle_dir, version, expected_sha256=record["sha256"])
        my_probs = mine.probabilities([images.decode(picture.read_bytes(),
                                                     draft=mine.draft_size)])[0]
        data_copy = work / "data-copy"
        shutil.copytree(data_dir, data_copy)

        venv = work / "venv"
        log(f"creating a venv with {sys.executable} -m venv ...")
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = venv / "bin" / "python"
        log(f"pip install -r {REQUIREMENTS.name} ...")
        pip = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check",
                              "-r", str(REQUIREMENTS)], capture_output=True, text=True,
                             timeout=args.pip_timeout)
        install_s = time.monotonic() - t
        if pip.returncode != 0:
            log(pip.stdout[-3000:], pip.stderr[-3000:])
            log("pip install failed")
            sys.exit(2)
        installed = subprocess.run([str(py), "-m", "pip", "freeze", "--all",
                                    "--disable-pip-version-check"],
                                   capture_output=True, text=True, check=True).stdout.split()
        size_mb = du_mb(venv)
        site = next((venv / "lib").glob("python*/site-packages"))

        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WINNOW_OFFLINE": "1"})
        run = subprocess.run([str(py), "-c", CHECK, str(bundle_dir), version, record["sha256"],
                              str(picture), str(data_copy)], cwd=work, env=env,
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            log(run.stderr[-3000:])
            out = {"heavy_imported": [], "heavy_installed": [], "probs": None}
        else:
            out = json.loads(run.stdout.strip().splitlines()[-1])
        diff = (float(np.abs(np.array(out["probs"]) - my_probs).max())
                if out.get("probs") is not None else None)
        runtime_works = (run.returncode == 0 and diff is not None and diff <= rt.PARITY
                         and not out["heavy_imported"] and not out["heavy_installed"])
        pages = out.get("pages") or {}
        pages_work = bool(pages) and all(code == 200 for code in pages.values())

        log()
        log(f"serving venv: {size_mb:.0f} MB on disk (target <= {TARGET_MB} MB: "
            f"{'met' if size_mb <= TARGET_MB else 'NOT met'}); created and installed in "
            f"{install_s:.0f} s")
        log("  largest in site-packages: " + ", ".join(f"{n} {mb:.0f} MB"
                                                     for n, mb in largest(site)))
        log("  installed: " + " ".join(installed))
        if run.returncode == 0:
            log(f"runtime in the serving venv: import + load {out['import_load_s']:.2f} s, first "
                f"answer {out['first_answer_s']:.2f} s, serving {out['precision']}; "
                f"probabilities vs the development venv: largest difference {diff:.1e}")
            log(f"  torch/torchvision/fastai imported: {out['heavy_imported'] or 'none'}; "
                f"installed: {out['heavy_installed'] or 'none'}")
            if pages:
                log(f"  the app in the serving venv: {pages}; answer {out.get('api_answer')}")
                log(f"  (the lesson's /learn/sgd, which needs torch: {out.get('lesson')})")
            else:
                log(f"  the app did not start: {out.get('pages_error')}")
        log(f"runtime works from requirements-serve.txt alone: {'yes' if runtime_works else 'NO'}")
        print(json.dumps({
            "serve_venv_mb": round(size_mb, 1), "runtime_works": runtime_works,
            "import_load_s": round(out["import_load_s"], 3) if "import_load_s" in out else None,
            "first_answer_s": round(out.get("first_answer_s", 0), 3),
            "max_abs_diff": diff, "heavy_installed": out["heavy_installed"],
            "pages_work": pages_work, "install_s": round(install_s, 1),
            "target_met": size_mb <= TARGET_MB,
        }))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
