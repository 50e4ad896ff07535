"""What a training run will cost on this machine, said before it starts.

Each phase (lr_find, the epochs of each stage, setup and export, scoring) is predicted from a run
this data dir has timed: its metrics.json holds each phase's seconds (`phase_seconds`) and each
epoch's (`history`). The rates per image are scaled to the run asked for: by the image counts, by
(size / size timed)² and, when no run of that architecture was timed, by the architectures'
FLOPs. Which run it scales from, and how, is said with the numbers: an estimate that hides its
basis cannot be judged.
"""
import math
import statistics
from dataclasses import dataclass, field

from webapp.model import lr_rules, registry, training
from webapp.model.recipe import FROZEN, SCRATCH, UNFROZEN, batch_size

# Each architecture's GFLOPs per 224 px image, and its ImageNet weights' download in MB, as
# torchvision's weights metadata gives them (`ResNet34_Weights.DEFAULT.meta["_ops"]`,
# `["_file_size"]`). FLOPs are a rough scale of CPU time: resnet50 often runs slower than its
# FLOPs say (more memory traffic per FLOP).
GFLOPS = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089}
WEIGHTS_MB = {"resnet18": 45, "resnet34": 83, "resnet50": 98}
LR_FIND_PACE = 1.5  # an lr_find iteration's cost at most, in the run's training batches
FAR = 4  # scaled by more than this (or less than its inverse), the basis says it is far off
# Which stage's rate stands in for a stage the timed run did not have, nearest first: all three
# train the whole network's batch norm and head, the unfrozen two the body's weights too.
STAND_INS = {FROZEN: (FROZEN, UNFROZEN, SCRATCH), UNFROZEN: (UNFROZEN, SCRATCH, FROZEN),
             SCRATCH: (SCRATCH, UNFROZEN, FROZEN)}


@dataclass
class Timing:
    """One timed run's rates: seconds per image, per phase."""

    version: str
    arch: str
    size: int
    pretrained: bool
    images: int  # labeled images it trained and scored on (train + valid)
    epoch: dict  # {stage: seconds per image per epoch (its train and valid images)}
    lr_find: float  # seconds per image of an lr_find iteration
    lr_find_said: str  # how lr_find's rate was had, for the basis
    setup: float | None = None  # seconds, as measured
    export: float | None = None  # seconds, as measured
    scoring: float | None = None  # seconds per labeled image


@dataclass
class Phase:
    """One phase of the run asked for."""

    name: str
    seconds: float
    detail: str

    def as_json(self):
        return {"name": self.name, "seconds": round(self.seconds, 1),
                "time": duration(self.seconds), "detail": self.detail}


@dataclass
class Estimate:
    """A run's predicted cost, what it rests on, and whether it will start from ImageNet weights."""

    weights: str  # what the form says about ImageNet weights for this run
    weights_warning: bool  # the run will not be the lesson's (or will fail)
    from_scratch: bool
    basis: str
    phases: list = field(default_factory=list)

    @property
    def total(self):
        return sum(p.seconds for p in self.phases) if self.phases else None

    def as_json(self):
        """Return the estimate as the page and its script read it."""
        return {"from_scratch": self.from_scratch,
                "weights": {"note": self.weights, "warning": self.weights_warning},
                "phases": [p.as_json() for p in self.phases],
                "total_seconds": None if self.total is None else round(self.total, 1),
                "total": None if self.total is None else duration(self.total),
                "basis": self.basis}


def duration(seconds):
    """Return seconds as a person reads a wait: "about 40 s", "about 12 min", "about 2 h 5 min"."""
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"


def timing(metrics):
    """Return a trained version's rates from its metrics.json, or None if it timed nothing."""
    counts = (metrics.get("provenance") or {}).get("counts") or {}
    n_train = sum(c["train"] for c in counts.values())
    images = n_train + sum(c["valid"] for c in counts.values())
    history = [h for h in metrics.get("history") or [] if h.get("seconds") and h.get("phase")]
    if metrics.get("source") != "trained" or not metrics.get("size") or not n_train:
        return None
    # An epoch's steady pace is its stage's median epoch: a first epoch's warm-up, or a moment
    # when the machine was busy, would be multiplied by the scaling.
    epoch = {}
    for stage in (FROZEN, UNFROZEN, SCRATCH):
        seconds = [h["seconds"] for h in history if h["phase"] == stage]
        if seconds:
            epoch[stage] = statistics.median(seconds) / images
    if not epoch:
        return None
    phases = metrics.get("phase_seconds") or {}
    pretrained = bool(metrics.get("pretrained"))
    # An lr_find iteration is a training batch and a little more (lr_rules.py: about 1.3). Its
    # own clock counts unless it ran slower than LR_FIND_PACE batches: then it paid for the run's
    # warm-up (lr_find runs first) or a busy moment, which the scaling would multiply.
    batch_pace = next(epoch[s] for s in STAND_INS[UNFROZEN] if s in epoch) * images / n_train
    cap = LR_FIND_PACE * batch_pace
    bs = batch_size(int((metrics.get("options") or {}).get("bs") or 64), n_train, pretrained)
    iterations = sum(c.get("ran") or c.get("num_it") or 0
                     for c in (metrics.get("lr_find") or {}).values())
    measured = math.inf
    if phases.get("lr_find") and iterations:
        measured = phases["lr_find"] / (iterations * bs)
    return Timing(metrics.get("version", "?"), metrics.get("arch"), int(metrics["size"]),
                  pretrained, images, epoch, lr_find=min(measured, cap),
                  lr_find_said=_lr_find_said(measured, cap), setup=phases.get("setup"),
                  export=phases.get("export"),
                  scoring=phases["scoring"] / images if phases.get("scoring") else None)


def _lr_find_said(measured, cap):
    if measured <= cap:
        return f"lr_find {_figure(measured * 100)} s per 100 images"
    why = ("that run did not time it" if measured == math.inf
           else "its own clock ran slower: warm-up, or a busy moment")
    return f"lr_find paced as {LR_FIND_PACE} of its training batches ({why})"


def pick(timings, arch, size, pretrained):
    """Return the timed run to scale from: the same architecture if one was timed, then the
    nearest size, then the same start (weights or scratch); the newest of equals (listed first)."""
    same = [t for t in timings if t.arch == arch] or [t for t in timings if t.arch in GFLOPS]
    if not same:
        return None
    return min(same, key=lambda t: (round(abs(math.log(size / t.size)), 3),
                                    t.pretrained != pretrained))


def weights_plan(arch, asked, cached, offline):
    """Return (starts from ImageNet weights, what to say about them, whether it is a warning).

    `asked` is the form's choice: None "when available", True "yes", False "no".
    """
    if asked is False:
        return False, ("No ImageNet weights, as chosen: this run trains from scratch, with "
                       "plain fastai's recipe."), False
    if cached:
        return True, (f"ImageNet weights for {arch} are on this machine: the lesson's recipe "
                      "starts from them."), False
    if offline and asked:
        return True, (f"No ImageNet weights for {arch} on this machine, and downloads are off "
                      "(WINNOW_OFFLINE): with weights \"yes\" this run will fail. Choose "
                      "\"when available\" to train from scratch."), True
    if offline:
        return False, (f"No ImageNet weights for {arch} on this machine: this run trains from "
                       "scratch — expect more epochs and a higher learning rate than the "
                       "lesson's, and a higher error."), True
    fallback = "the run fails" if asked else "it trains from scratch"
    return True, (f"ImageNet weights for {arch} are not on this machine yet: the run downloads "
                  f"them first (about {WEIGHTS_MB[arch]} MB); if it cannot, {fallback}."), False


def estimate(opts, counts, timings, cached, offline):
    """Return what a run with `opts` on a dataset of `counts` ({class: {train, valid}}) will cost,
    scaled from the best of `timings`; `cached`: ImageNet weights for opts.arch are here."""
    pretrained, note, warning = weights_plan(opts.arch, opts.pretrained, cached, offline)
    said = {"weights": note, "weights_warning": warning, "from_scratch": not pretrained}
    n_train = sum(c["train"] for c in counts.values())
    images = n_train + sum(c["valid"] for c in counts.values())
    if not n_train:
        return Estimate(**said, basis="No estimate yet: label some images first.")
    basis = pick(timings, opts.arch, opts.size, pretrained)
    if basis is None:
        return Estimate(**said, basis="No run has been timed on this machine yet, so there is no "
                        "estimate: the first run is timed, and later ones are scaled from it.")
    scale = (opts.size / basis.size) ** 2 * GFLOPS[opts.arch] / GFLOPS[basis.arch]
    phases, stand_ins = _phases(opts, pretrained, basis, scale, n_train, images)
    return Estimate(**said, basis=_basis_text(basis, opts, scale, stand_ins), phases=phases)


def _phases(opts, pretrained, basis, scale, n_train, images):
    """Return the run's phases, scaled from `basis`, and the stages another stage paced."""
    bs = batch_size(opts.bs, n_train, pretrained)
    phases, stand_ins = [], []
    # As fit_recipe counts them: one before the first stage when the rate is "auto", and from
    # ImageNet weights one before the unfrozen stage.
    finds = (opts.lr is None) + bool(pretrained and opts.fine_tune_epochs
                                     and opts.lr_unfrozen is None)
    if finds:
        iters = lr_rules.lr_find_budget(max(1, n_train // bs), opts, finds)
        runs = "1 run" if finds == 1 else f"{finds} runs"
        phases.append(Phase("lr_find", finds * iters * bs * basis.lr_find * scale,
                            f"{runs} of at most {iters} batches of {bs}"))
    stages = ([(FROZEN, opts.epochs), (UNFROZEN, opts.fine_tune_epochs)] if pretrained
              else [(SCRATCH, opts.epochs + opts.fine_tune_epochs)])
    for stage, epochs in stages:
        if not epochs:
            continue
        paced_by = next(s for s in STAND_INS[stage] if s in basis.epoch)
        if paced_by != stage:
            stand_ins.append(f"{stage} epochs paced as that run's {paced_by} ones")
        phases.append(Phase(stage, epochs * images * basis.epoch[paced_by] * scale,
                            f"{epochs} epoch{'s' * (epochs != 1)} of {images} images"))
    if basis.setup is not None and basis.export is not None:
        phases.append(Phase("setup and export", basis.setup + basis.export * scale,
                            "the learner, then export.pkl, ONNX and their checks"))
    if basis.scoring is not None:
        phases.append(Phase("scoring", images * basis.scoring * scale,
                            f"{images} images, for the cleaner"))
    return phases, stand_ins


def _basis_text(basis, opts, scale, stand_ins):
    stage, rate = next(iter(basis.epoch.items()))
    start = "from ImageNet weights" if basis.pretrained else "from scratch"
    text = (f"From your run {basis.version} ({basis.arch} at {basis.size} px {start}, "
            f"{basis.images} images): {_figure(rate * 100)} s per 100 images per epoch ({stage})")
    text += f", {basis.lr_find_said}"
    scales = []
    if opts.size != basis.size:
        scales.append(f"({opts.size}/{basis.size})² for the size")
    if opts.arch != basis.arch:
        scales.append(f"{GFLOPS[opts.arch] / GFLOPS[basis.arch]:.1f}× for {opts.arch}'s FLOPs "
                      f"over {basis.arch}'s (torchvision's {GFLOPS[opts.arch]:.1f} and "
                      f"{GFLOPS[basis.arch]:.1f} GFLOPs; no {opts.arch} run was timed here)")
    if scales:
        text += f"; scaled by {' and by '.join(scales)}, {_figure(scale)}× in all"
    if stand_ins:
        text += f"; {', '.join(stand_ins)}"
    if not 1 / FAR <= scale <= FAR:
        return text + ". That is far from the run timed: take it as an order of magnitude."
    return text + ". A rough guide: on a busy machine a run takes longer."


def _figure(x):
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def for_data_dir(data_dir, opts, counts):
    """Return the estimate for `opts` from the runs this data dir's versions timed."""
    timings = [t for t in map(timing, (v["metrics"] for v in registry.versions(data_dir))) if t]
    cached = training.weights_cached(opts.arch)
    return estimate(opts, counts, timings, cached, offline=not opts.download_weights)
