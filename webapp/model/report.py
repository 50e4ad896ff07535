"""A model version's run report: the epoch table, diagnosis, confusion, provenance and plots.

Everything here reads what training recorded in `models/<version>/metrics.json` (and the
cleaned.csv copied beside it). Plots are drawn server-side with matplotlib's Agg canvas (a
`Figure`, never pyplot: no global state shared between request threads) as SVG, and cached in
`models/<version>/plots/`: a version's metrics never change, so neither do its plots.
"""
import io
import math
import threading

from webapp.core import files
from webapp.dataset.manifest import CLEANED_CSV
from webapp.model import bundle, diagnosis, registry, training
from webapp.runtime import bundle as rt

PLOTS = ("losses", "lr_find", "confusion")
# One drawing at a time per process. matplotlib is imported on the first draw, and two request
# threads importing it at once fail half-way ("partially initialized module matplotlib.ticker"):
# a worker serving with the torch-free runtime has not loaded it at start, as fastai did.
_DRAWING = threading.Lock()


class NoPlot(LookupError):
    """The version recorded nothing to draw this plot from."""


def fastai_time(seconds):
    """Return seconds as fastai's table prints them (mm:ss)."""
    seconds = int(round(seconds or 0))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def epoch_tables(history):
    """Return the per-epoch tables as fastai prints them, one per fit_one_cycle call."""
    tables = []
    for epoch in history:
        phase = epoch.get("phase", "")
        if not tables or tables[-1]["phase"] != phase:
            tables.append({"phase": phase, "rows": []})
        rows = tables[-1]["rows"]
        rows.append({"epoch": len(rows), "time": fastai_time(epoch.get("seconds")),
                     **{k: _six(epoch.get(k)) for k in ("train_loss", "valid_loss", "error_rate")}})
    return tables


def phase_rows(metrics):
    """Return where a run's time went: [{phase, seconds, share}] in the order the phases ran."""
    phases = metrics.get("phase_seconds") or {}
    total = sum(phases.values())
    return [{"phase": name, "seconds": round(seconds, 1),
             "share": round(seconds / total, 3) if total else None}
            for name, seconds in phases.items()]


def _six(x):
    return "" if x is None else f"{x:.6f}"


def label_changes(trained_on, now):
    """Compare two cleaned.csv row lists: {"added", "removed", "relabelled"} image counts."""
    before = {r["name"]: r["label"] for r in trained_on}
    after = {r["name"]: r["label"] for r in now}
    return {"added": len(after.keys() - before.keys()),
            "removed": len(before.keys() - after.keys()),
            "relabelled": sum(1 for n in before.keys() & after.keys() if before[n] != after[n])}


def trained_manifest(data_dir, version):
    """Return the path of the cleaned.csv a version was trained on, or None if not kept."""
    path = registry.models_dir(data_dir) / version / CLEANED_CSV
    return path if path.is_file() else None


def changes_since(data_dir, version):
    """Return label_changes between what `version` was trained on and cleaned.csv now, or None."""
    path = trained_manifest(data_dir, version)
    if path is None:
        return None
    try:
        now = training.read_manifest(data_dir)
    except training.TrainingRefused:
        now = []
    return label_changes(training.read_manifest_file(path), now)


def version_file(data_dir, version, name):
    """Return the path of a version's downloadable file, or None: the ONNX models live in its
    serving bundle (in the version folder itself for versions made before bundles)."""
    vdir = registry.models_dir(data_dir) / version
    for path in (vdir / name, bundle.bundle_dir(vdir) / name):
        if path.is_file():
            return path
    return None


def available_files(data_dir, version):
    """Tell which downloads a version has besides export.pkl."""
    return {"onnx": version_file(data_dir, version, rt.FP32) is not None,
            "int8": version_file(data_dir, version, rt.INT8) is not None,
            "manifest": version_file(data_dir, version, CLEANED_CSV) is not None}


def confusion_cells(metrics):
    """Return the confusion matrix as rows of cells {actual, predicted, n, shade}, or None."""
    conf = metrics.get("confusion")
    if not conf:
        return None
    classes, matrix = conf["classes"], conf["matrix"]
    top = max((n for row in matrix for n in row), default=0) or 1
    return [[{"actual": a, "predicted": p, "n": matrix[i][j], "shade": round(matrix[i][j] / top, 3),
              "diagonal": i == j} for j, p in enumerate(classes)]
            for i, a in enumerate(classes)]


def version_report(data_dir, version):
    """Return everything the report page shows for one version (raise ModelError if unknown)."""
    record = registry.version_record(data_dir, version)
    metrics = record["metrics"]
    history = metrics.get("history") or []
    classes = (metrics.get("provenance") or {}).get("classes") or metrics.get("classes") or []
    return {
        "record": record, "metrics": metrics, "tables": epoch_tables(history),
        "phases": phase_rows(metrics),
        "findings": diagnosis.diagnose_metrics(metrics),
        "confusion": confusion_cells(metrics), "most_confused": metrics.get("most_confused") or [],
        "classes": classes, "provenance": metrics.get("provenance") or {},
        "changes": changes_since(data_dir, version),
        "files": available_files(data_dir, version),
        "plots": [name for name in PLOTS if _can_plot(metrics, name)],
        "active": registry.active_version(data_dir) == version,
    }


def problems(data_dir, version):
    """Return the diagnosis findings that say something needs fixing in a version."""
    try:
        metrics = registry.version_record(data_dir, version)["metrics"]
    except registry.ModelError:  # ACTIVE names a version with no record: the page must still open
        return []
    return [f for f in diagnosis.diagnose_metrics(metrics) if not f.ok]


def _can_plot(metrics, name):
    return bool({"losses": metrics.get("history"), "lr_find": metrics.get("lr_find"),
                 "confusion": metrics.get("confusion")}[name])


# ---- plots -------------------------------------------------------------------------------

def plot_svg(data_dir, version, name):
    """Return a version's plot as SVG text, drawing and caching it on first use."""
    if name not in PLOTS:
        raise NoPlot(f"there is no plot called {name!r}")
    metrics = registry.version_record(data_dir, version)["metrics"]
    if not _can_plot(metrics, name):
        raise NoPlot(f"model {version} recorded nothing to draw {name} from")
    path = registry.models_dir(data_dir) / version / "plots" / f"{name}.svg"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    draw = {"losses": draw_losses, "lr_find": draw_lr_find, "confusion": draw_confusion}[name]
    with _DRAWING:
        svg = draw(metrics)
    path.parent.mkdir(exist_ok=True)
    files.write_atomic(path, svg)
    return svg


def _figure(width, height, ncols=1):
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable, page font
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _svg(fig):
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def draw_losses(metrics):
    """Draw the loss curves (train per batch, valid per epoch) and the error rate per epoch."""
    from matplotlib.ticker import MaxNLocator

    history = metrics["history"]
    curve = metrics.get("train_curve") or {}
    fig, (ax, ax_err) = _figure(9, 3.4, ncols=2)
    if curve.get("iter") and all("iter" in e for e in history):
        ax.plot(curve["iter"], curve["loss"], label="train (smoothed, per batch)", color="#1f77b4")
        xs = [e["iter"] for e in history]
        ax.set_xlabel("batches processed")
        unfrozen = [e["iter"] for e in history if e.get("phase") == "unfrozen"]
        frozen_end = [e["iter"] for e in history if e.get("phase") == "frozen"]
        if unfrozen and frozen_end:
            ax.axvline(frozen_end[-1], color="grey", linestyle="--", linewidth=1)
            ax.annotate("unfreeze", (frozen_end[-1], 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", color="grey", fontsize=8)
    else:
        xs = list(range(1, len(history) + 1))
        ax.plot(xs, [e.get("train_loss") for e in history], "o-", label="train", color="#1f77b4")
        ax.set_xlabel("epoch")
    ax.plot(xs, [e.get("valid_loss") for e in history], "o-", label="valid (per epoch)",
            color="#ff7f0e")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    values = [x for x in curve.get("loss", []) + [e.get("valid_loss") for e in history]
              if x is not None and x > 0 and math.isfinite(x)]
    if values and max(values) / min(values) > 50:  # one spike must not flatten the rest
        ax.set_yscale("log")
        ax.set_title("Loss (log scale)")
    ax.legend(fontsize=8)
    epochs = list(range(len(history)))
    ax_err.plot(epochs, [e.get("error_rate") for e in history], "o-", color="#d62728")
    ax_err.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("error rate")
    ax_err.set_title("Error rate (validation)")
    ax_err.set_ylim(bottom=0)
    return _svg(fig)


MARKERS = {"minimum": ("v", "#2ca02c"), "steep": ("^", "#9467bd"), "valley": ("o", "#d62728")}


def draw_lr_find(metrics):
    """Draw each lr_find curve with its suggestions marked and the rate the run used."""
    curves = metrics["lr_find"]
    stages = [s for s in ("frozen", "unfrozen", "from scratch") if s in curves]
    fig, axes = _figure(4.6 * len(stages), 3.4, ncols=len(stages))
    for ax, stage in zip(axes, stages, strict=True):
        curve = curves[stage]
        lrs, losses = curve["lr"], curve["loss"]
        ax.plot(lrs, losses, color="#1f77b4")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        iters = f" ({curve['ran']} iterations)" if curve.get("ran") else ""
        ax.set_title(f"lr_find, {'body frozen' if stage == 'frozen' else stage}{iters}")
        for name, lr in (curve.get("suggestions") or {}).items():
            if lr is None or not lrs:
                continue
            i = min(range(len(lrs)), key=lambda k: abs(lrs[k] - lr))
            marker, colour = MARKERS.get(name, ("s", "black"))
            ax.plot([lrs[i]], [losses[i]], marker, color=colour, markersize=8,
                    label=f"{name}: {lr:.1e}")
        if stage in ("frozen", "from scratch") and metrics.get("lr"):
            ax.axvline(metrics["lr"], color="black", linestyle=":", linewidth=1,
                       label=f"used: {metrics['lr']:.1e}")
        if stage == "unfrozen" and metrics.get("lr_unfrozen"):
            lo, hi = metrics["lr_unfrozen"]
            ax.axvspan(lo, hi, color="grey", alpha=0.15, label=f"used: slice({lo:.0e}, {hi:.0e})")
        ax.legend(fontsize=8)
    return _svg(fig)


def draw_confusion(metrics):
    """Draw the confusion matrix the way fastai's plot_confusion_matrix does."""
    conf = metrics["confusion"]
    classes, matrix = conf["classes"], conf["matrix"]
    side = min(12, 2.5 + 0.5 * len(classes))
    fig, (ax,) = _figure(side, side)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    top = max((n for row in matrix for n in row), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center",
                    color="white" if top and n > top / 2 else "black")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("Actual")
    ax.set_title("Confusion matrix")
    return _svg(fig)

