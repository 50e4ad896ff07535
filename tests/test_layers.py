"""The import rules of DESIGN.md section 9, checked by an `ast` walk over webapp/.

Each rule is a pure function from {file path: source} to findings, `file:line: import … (why)`;
the synthetic tests at the bottom prove each rule can fail.
"""
import ast
from collections import namedtuple
from pathlib import Path

import pytest

PACKAGE = "webapp"
# R1. Top to bottom: a module may import its own layer and the layers below it. Layers on
# one line are siblings and import neither each other nor upward.
LAYERS = [
    {"top"},  # webapp/__init__.py (a docstring only), app.py and config.py
    {"web"},  # blueprints, auth, errors, metrics, resources, forms, the CLI; web/views too
    {"jobs"},
    {"cleaning"},
    {"model"},
    {"ingest", "lesson"},
    {"dataset"},
    {"runtime"},  # the torch-free serving runtime uses core only
    {"core"},
]
RANK = {layer: rank for rank, group in enumerate(LAYERS) for layer in group}
TOP_MODULES = {"app", "config"}
# R1's exceptions, {(importing file, imported module): why}. Each one is a debt.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}

# R2. HTTP frameworks (and every flask_* package) at the edge; click in the CLI only.
FRAMEWORKS = {"flask", "werkzeug", "wtforms"}
FRAMEWORK_HOMES = ("webapp/web/", "webapp/app.py")
CLI_MODULES = {"webapp/web/cli.py", "webapp/web/cli_score.py", "webapp/web/cli_backup.py",
               "webapp/web/terminal.py"}

# R3. The runner's names that only webapp/jobs may touch.
RUNNER, JOB_NAMES = "webapp.jobs.runner", {"Job", "Cancelled"}
JOBS_ONLY = "only webapp/jobs uses Job and Cancelled"

# R4. Heavy libraries and the only layers that may import them, inside a function...
HEAVY = {
    "torch": {"model", "cleaning", "lesson"},
    "torchvision": {"model", "cleaning", "lesson"},
    "fastai": {"model", "cleaning", "lesson"},
    "pandas": {"model", "cleaning"},
    "cleanlab": {"cleaning"},
    "imagehash": {"cleaning"},
    "sklearn": {"cleaning"},
    "onnxruntime": {"model", "runtime"},
    "onnx": {"model", "runtime"},
    "matplotlib": {"model", "lesson"},
}
# ...except these (library, layer) pairs, which may import it at module level.
MODULE_LEVEL_OK = {("onnxruntime", "runtime")}

Import = namedtuple("Import", "path line lazy target text")


def module_name(path):
    """Return the dotted module name of a path such as webapp/model/registry.py."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module):
    """Return the layer of a webapp module: "top" for the root, app and config."""
    parts = module.split(".")
    return "top" if len(parts) == 1 or parts[1] in TOP_MODULES else parts[1]


def statements(node, lazy=False):
    """Yield (import statement, inside a function?) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy
        inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from statements(child, lazy or inner)


def base_of(path, node):
    """Return the module an ImportFrom reads from, relative levels resolved."""
    if not node.level:
        return node.module
    package = module_name(path).split(".")[: None if path.endswith("__init__.py") else -1]
    package = package[: len(package) - node.level + 1]
    return ".".join(package + ([node.module] if node.module else []))


def imports(files):
    """Return every import in `files`, one per imported module."""
    modules, found = {module_name(p) for p in files}, []
    for path, source in sorted(files.items()):
        for node, lazy in statements(ast.parse(source, path)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = base_of(path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            text = ast.unparse(node)
            found += [Import(path, node.lineno, lazy, t, text) for t in dict.fromkeys(targets)]
    return found


def own(target):
    return target == PACKAGE or target.startswith(PACKAGE + ".")


def finding(path, line, text, why):
    return f"{path}:{line}: {text}  ({why})"


def where(imp, why):
    return finding(imp.path, imp.line, imp.text, why)


def check_layers(files):
    """R1: layers import downward only; the package root holds only its docstring."""
    found = []
    for imp in imports(files):
        if not own(imp.target) or (imp.path, imp.target) in LAYER_EXCEPTIONS:
            continue
        src, dst = layer_of(module_name(imp.path)), layer_of(imp.target)
        if src not in RANK or dst not in RANK:
            found.append(where(imp, f"{dst if src in RANK else src} is in no layer"))
        elif src != dst and RANK[dst] <= RANK[src]:
            found.append(where(imp, f"{src} -> {dst}"))
    root = f"{PACKAGE}/__init__.py"
    tree = ast.parse(files.get(root, ""))
    found += [finding(root, stmt.lineno, ast.unparse(stmt), "the root holds only a docstring")
              for stmt in tree.body[1 if ast.get_docstring(tree) is not None else 0:]]
    return found


def check_frameworks(files):
    """R2: flask, werkzeug, flask_*, wtforms only in web/ and app.py; click only in the CLI."""
    found = []
    for imp in imports(files):
        top = imp.target.split(".")[0]
        if (top in FRAMEWORKS or top.startswith("flask_")) and not imp.path.startswith(
                FRAMEWORK_HOMES):
            found.append(where(imp, f"{top} belongs in webapp/web"))
        if top == "click" and imp.path not in CLI_MODULES:
            found.append(where(imp, "click belongs in the CLI modules"))
    return found


def takes_job(node):
    """Tell whether a function or lambda has a parameter named `job`."""
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) and any(
        isinstance(a, ast.arg) and a.arg == "job" for a in ast.walk(node.args))


def check_job_handles(files):
    """R3: only jobs/ names Job or Cancelled; outside jobs/ and web/, no `job` parameter."""
    found = []
    for path, source in sorted(files.items()):
        if path.startswith("webapp/jobs/"):
            continue
        tree, runner_names = ast.parse(source, path), {RUNNER}
        for node, _ in statements(tree):
            if isinstance(node, ast.Import):  # `import webapp.jobs.runner as r` names it r
                runner_names |= {a.asname for a in node.names if a.name == RUNNER and a.asname}
                continue
            base = base_of(path, node)
            for a in node.names:
                if f"{base}.{a.name}" == RUNNER:
                    runner_names.add(a.asname or a.name)
                elif base == RUNNER and a.name in JOB_NAMES:
                    found.append(finding(path, node.lineno, ast.unparse(node), JOBS_ONLY))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in JOB_NAMES and ast.unparse(
                    node.value) in runner_names:
                found.append(finding(path, node.lineno, ast.unparse(node), JOBS_ONLY))
            if takes_job(node) and not path.startswith("webapp/web/"):
                name = getattr(node, "name", "<lambda>")
                found.append(finding(path, node.lineno, f"def {name}(… job …)",
                                     "a Job handle: take on_progress / should_stop callbacks"))
    return found


def check_heavy(files):
    """R4: heavy libraries only in their layers, imported inside the function that needs them."""
    found = []
    for imp in imports(files):
        lib, layer = imp.target.split(".")[0], layer_of(module_name(imp.path))
        if lib in HEAVY and layer not in HEAVY[lib]:
            found.append(where(imp, f"{lib} is allowed only in {', '.join(sorted(HEAVY[lib]))}"))
        elif lib in HEAVY and not imp.lazy and (lib, layer) not in MODULE_LEVEL_OK:
            found.append(where(imp, f"import {lib} inside the function that needs it"))
    return found


def check_cycles(files):
    """R5: no cycles among module-level imports of webapp; no lazy imports of webapp modules."""
    every = imports(files)
    found = [where(imp, "import the project's own modules at the top")
             for imp in every if imp.lazy and own(imp.target)]
    edges = {}  # module -> {imported module: the import statement that makes the edge}
    for imp in every:
        if not imp.lazy and own(imp.target):
            edges.setdefault(module_name(imp.path), {}).setdefault(imp.target, imp)
    state, stack = {}, []  # state: "open" while on the DFS stack, then "done"

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in edges.get(module, {}):
            if state.get(target) == "open":  # a back edge closes a cycle
                cycle = stack[stack.index(target):] + [target]
                found.append("cycle " + " -> ".join(cycle) + "".join(
                    f"\n    {edges[a][b].path}:{edges[a][b].line}: {edges[a][b].text}"
                    for a, b in zip(cycle, cycle[1:], strict=False)))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return found


@pytest.fixture(scope="module")
def project():
    root = Path(__file__).resolve().parent.parent
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted((root / PACKAGE).rglob("*.py"))}


def report(rule, findings):
    findings = list(dict.fromkeys(findings))  # `from x import a, b` can break a rule twice
    if findings:
        pytest.fail(f"{rule}: {len(findings)} finding(s)\n" + "\n".join(findings), pytrace=False)


def test_layers_import_downward_only(project):
    """R1. Layers import downward only: top > web > jobs > cleaning > model > ingest, lesson >
    dataset > runtime > core; ingest and lesson are siblings; webapp/__init__.py is a docstring."""
    report("R1 layers", check_layers(project))


def test_flask_and_click_stay_at_the_edge(project):
    """R2. flask, werkzeug, flask_*, wtforms only in webapp/web and webapp/app.py;
    click only in the CLI modules."""
    report("R2 frameworks", check_frameworks(project))


def test_only_jobs_handle_job_objects(project):
    """R3. Only webapp/jobs touches Job and Cancelled; domain code takes on_progress /
    should_stop callbacks, so no function outside jobs and web has a `job` parameter."""
    report("R3 job handles", check_job_handles(project))


def test_heavy_libraries_are_lazy_and_in_their_layers(project):
    """R4. torch, torchvision, fastai, pandas, cleanlab, onnxruntime, onnx, matplotlib only in the
    layers HEAVY names, imported inside functions; runtime, core, dataset never import torch."""
    assert not {"runtime", "core", "dataset"} & (HEAVY["torch"] | HEAVY["fastai"])
    report("R4 heavy libraries", check_heavy(project))


def test_no_import_cycles_and_no_lazy_own_imports(project):
    """R5. No import cycles among webapp modules; the project's own modules are imported at the
    top of a module, never inside a function."""
    report("R5 cycles and lazy imports", check_cycles(project))


# The rules can fail: a tiny project that passes them all, then one violation at a time.
CLEAN = {
    "webapp/__init__.py": '"""Winnow."""\n',
    "webapp/app.py": "from flask import Flask\nfrom webapp import config\nfrom .web import cli\n",
    "webapp/config.py": "import os\n",
    "webapp/web/cli.py": "import click\nfrom webapp.jobs import runner\n",
    "webapp/web/views/jobs.py": "from ...jobs import runner as jobs\nfrom .. import cli\n\n"
                                "def status(job):\n    return job\n",
    "webapp/jobs/runner.py": "class Job: ...\n\nclass Cancelled(Exception): ...\n",
    "webapp/jobs/train.py": "from . import runner\nfrom webapp.model import training\n\n"
                            "def run_job(job):\n    training.train(job.progress)\n",
    "webapp/model/training.py": "from webapp.dataset import store\n\n"
                                "def train(on_progress):\n    import torch\n",
    "webapp/ingest/uploads.py": "from ..dataset.store import Dataset\n",
    "webapp/dataset/store.py": "from webapp.core import db\n",
    "webapp/runtime/session.py": "import onnxruntime\nfrom webapp.core import images\n",
    "webapp/core/db.py": "import sqlite3\n",
}
VIOLATIONS = [  # (rule, files that replace CLEAN's, a finding the rule must report)
    (check_layers, {"webapp/core/db.py": "from webapp.web import auth\n"},
     "webapp/core/db.py:1: from webapp.web import auth  (core -> web)"),
    (check_layers, {"webapp/ingest/uploads.py": "from ..lesson import sgd\n"},
     "webapp/ingest/uploads.py:1: from ..lesson import sgd  (ingest -> lesson)"),
    (check_layers, {"webapp/runtime/session.py": "from webapp.dataset import store\n"},
     "(runtime -> dataset)"),
    (check_layers, {"webapp/__init__.py": '"""Winnow."""\nfrom .app import create_app\n'},
     "webapp/__init__.py:2: from .app import create_app  (the root holds only a docstring)"),
    (check_frameworks, {"webapp/model/serving.py": "from werkzeug.exceptions import NotFound\n"},
     "webapp/model/serving.py:1: from werkzeug.exceptions import NotFound  (werkzeug belongs"),
    (check_frameworks, {"webapp/jobs/train.py": "import click\n"},
     "webapp/jobs/train.py:1: import click  (click belongs in the CLI modules)"),
    (check_job_handles, {"webapp/cleaning/scoring.py": "def run_job(job):\n    job.progress(1)\n"},
     "webapp/cleaning/scoring.py:1: def run_job(… job …)"),
    (check_job_handles, {"webapp/web/cli.py": "from webapp.jobs.runner import Job\n"},
     "webapp/web/cli.py:1: from webapp.jobs.runner import Job  (only webapp/jobs"),
    (check_job_handles, {"webapp/web/cli.py": "from webapp.jobs import runner as r\nr.Cancelled\n"},
     "webapp/web/cli.py:2: r.Cancelled  (only webapp/jobs uses"),
    (check_heavy, {"webapp/model/training.py": "import torch\n"},
     "webapp/model/training.py:1: import torch  (import torch inside the function that needs it)"),
    (check_heavy, {"webapp/dataset/store.py": "def f():\n    import fastai.learner\n"},
     "webapp/dataset/store.py:2: import fastai.learner  (fastai is allowed only in cleaning,"),
    (check_cycles, {"webapp/core/db.py": "from webapp.core import images\n",
                    "webapp/core/images.py": "from . import db\n"},
     "cycle webapp.core.db -> webapp.core.images -> webapp.core.db\n"
     "    webapp/core/db.py:1: from webapp.core import images\n"
     "    webapp/core/images.py:1: from . import db"),
    (check_cycles, {"webapp/model/training.py": "def f():\n    from webapp.dataset import store\n"},
     "webapp/model/training.py:2: from webapp.dataset import store  (import the project's own"),
]


@pytest.mark.parametrize("check", [check_layers, check_frameworks, check_job_handles,
                                   check_heavy, check_cycles])
def test_a_clean_synthetic_project_passes_every_rule(check):
    assert check(CLEAN) == []


@pytest.mark.parametrize("check, changes, expected", VIOLATIONS,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(VIOLATIONS)])
def test_each_rule_catches_its_violation(check, changes, expected):
    findings = check({**CLEAN, **changes})
    assert any(expected in f for f in findings), findings
