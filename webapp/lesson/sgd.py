"""SGD from scratch: lesson 2's linear regression and its homework's logistic regression."""
import functools
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

N = 100  # the lesson's n
MODELS = ("linear", "logistic")
DEFAULTS = {"linear": {"lr": 0.2, "bs": 10, "epochs": 10},  # ten times this (2.0) explodes
            "logistic": {"lr": 0.3, "bs": 10, "epochs": 10}}
SEED = 42
MAX_STEPS = 10_000  # bs=1 for 500 epochs would keep a request busy for seconds
TOO_HIGH = "if the loss explodes, the learning rate is too high"
WORDS = {
    "linear": {"architecture": "y = a₁·x + a₂, a straight line",
               "parameters": "a₁ (the slope) and a₂ (the intercept)",
               "loss": "mean squared error", "names": ["slope", "intercept"],
               "picture": "The 100 points and the red line y = a₁·x + a₂, "
                          "starting from a = (−1, 1)."},
    "logistic": {"architecture": "p = σ(w₁·x₁ + w₂·x₂ + b), logistic regression",
                 "parameters": "w₁, w₂ (the boundary's angle) and b (its offset)",
                 "loss": "binary cross entropy", "names": ["w1", "w2", "b"],
                 "picture": "Two classes of points; the red line is where the model says 50/50, "
                            "the shading how sure it is of each side."},
}


@dataclass(frozen=True)
class Options:
    """The knobs of one SGD run."""

    model: str = "linear"
    lr: float = DEFAULTS["linear"]["lr"]
    bs: int = DEFAULTS["linear"]["bs"]
    epochs: int = DEFAULTS["linear"]["epochs"]
    seed: int = SEED

    @property
    def steps_per_epoch(self):
        """Return how many minibatches make one epoch."""
        return math.ceil(N / self.bs)


@dataclass
class Step:
    """The parameters and the whole data's loss after one update (step 0: before any)."""

    step: int
    epoch: int
    params: list
    loss: float
    accuracy: float | None = None


@dataclass
class Run:
    """A fit's data and trajectory, in plain floats."""

    options: Options
    points: list  # [x, y] (linear) or [x1, x2] (logistic)
    labels: list | None  # the class, 0 or 1, of each point (logistic only)
    steps: list = field(default_factory=list)
    diverged: bool = False
    reason: str | None = None

    def summary(self):
        """Say in one sentence where the run ended."""
        if self.diverged:
            return self.reason
        last, names = self.steps[-1], WORDS[self.options.model]["names"]
        params = ", ".join(f"{n} {v:.3g}" for n, v in zip(names, last.params, strict=True))
        acc = f", accuracy {last.accuracy:.0%}" if last.accuracy is not None else ""
        return (f"After {last.step} steps ({last.epoch} epochs): {params}; "
                f"loss {last.loss:.3g}{acc}.")


def defaults(model="linear"):
    """Return the model's default options."""
    return Options(model=model, seed=SEED, **DEFAULTS[model])


def _number(mapping, key, kind, label, default):
    raw = mapping.get(key)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise ValueError(f"the {label} must be a{'n integer' if kind is int else ' number'}, "
                         f"not {str(raw)[:20]!r}") from None
    if kind is float and not math.isfinite(value):
        raise ValueError(f"the {label} must be a finite number")
    return value


def parse_options(mapping):
    """Read options from a mapping of strings (blank means the model's default) and check them."""
    model = (mapping.get("model") or "linear").strip()
    if model not in MODELS:
        raise ValueError(f"the model must be one of {', '.join(MODELS)}, not {model[:20]!r}")
    d = defaults(model)
    opts = Options(model=model,
                   lr=_number(mapping, "lr", float, "learning rate", d.lr),
                   bs=_number(mapping, "bs", int, "batch size", d.bs),
                   epochs=_number(mapping, "epochs", int, "number of epochs", d.epochs),
                   seed=_number(mapping, "seed", int, "seed", d.seed))
    check(opts)
    return opts


def check(opts):
    """Raise ValueError, saying what to change, for options that cannot run here."""
    if opts.model not in MODELS:
        raise ValueError(f"the model must be one of {', '.join(MODELS)}")
    if not 0 < opts.lr <= 100:
        raise ValueError(f"the learning rate must be above 0 and at most 100, not {opts.lr:g}")
    if not 1 <= opts.bs <= N:
        raise ValueError(f"the batch size must be between 1 and {N} (the number of points), "
                         f"not {opts.bs}")
    if not 1 <= opts.epochs <= 500:
        raise ValueError(f"the number of epochs must be between 1 and 500, not {opts.epochs}")
    if not 0 <= opts.seed < 2**32:
        raise ValueError("the seed must be between 0 and 4294967295")
    steps = opts.epochs * opts.steps_per_epoch
    if steps > MAX_STEPS:
        raise ValueError(f"{opts.epochs} epochs of batches of {opts.bs} make {steps} steps; "
                         f"at most {MAX_STEPS} are animated here: use fewer epochs or a larger "
                         "batch size")


def linear_data(g, n=N):
    """Make the lesson's data: x with a column of ones, y = x@(3, 2) + uniform noise."""
    import torch

    x = torch.ones(n, 2)
    x[:, 0].uniform_(-1.0, 1, generator=g)
    y = x @ torch.tensor([3.0, 2]) + torch.rand(n, generator=g)
    return x, y


def blob_data(g, n=N, spread=0.55):
    """Make two gaussian blobs of 2-D points, with a column of ones for the bias."""
    import torch

    y = (torch.arange(n) % 2).float()
    centres = torch.tensor([[-1.0, -0.6], [1.0, 0.8]])
    x = centres[y.long()] + spread * torch.randn(n, 2, generator=g)
    return torch.cat([x, torch.ones(n, 1)], dim=1), y


def mse(y_hat, y):
    """Return the mean squared error, the lesson's loss for the line."""
    return ((y_hat - y) ** 2).mean()


def _accuracy(y_hat, y):
    return ((y_hat > 0).float() == y).float().mean().item()


def _explosion(loss, first, step, lr):
    """Return why the run diverged, or None while the loss behaves."""
    if not math.isfinite(loss):
        return (f"At step {step} the loss stopped being a number: {TOO_HIGH}. "
                f"Decrease the learning rate (try {lr / 10:g}).")
    if loss > 1e6 or loss > 100 * first:
        return (f"The loss exploded from {first:.3g} to {loss:.3g} by step {step}: {TOO_HIGH}. "
                f"Decrease the learning rate (try {lr / 10:g}).")
    return None


def _record(step, epoch, x, y, w, loss_fn, metric):
    import torch

    with torch.no_grad():
        y_hat = x @ w
        acc = metric(y_hat, y) if metric else None
        return Step(step, epoch, [float(v) for v in w], float(loss_fn(y_hat, y)), acc)


def descend(x, y, w, loss_fn, opts, g, metric=None):
    """Fit w in place by minibatch SGD; return the steps and why it diverged (or None)."""
    import torch

    steps = [_record(0, 0, x, y, w, loss_fn, metric)]
    for epoch in range(1, opts.epochs + 1):
        for idx in torch.randperm(len(y), generator=g).split(opts.bs):
            loss = loss_fn(x[idx] @ w, y[idx])
            loss.backward()
            with torch.no_grad():
                w.sub_(opts.lr * w.grad)
                w.grad.zero_()
            step = _record(len(steps), epoch, x, y, w, loss_fn, metric)
            finite = all(math.isfinite(v) for v in step.params) and math.isfinite(step.loss)
            reason = _explosion(step.loss if finite else math.nan, steps[0].loss,
                                step.step, opts.lr)
            if finite:  # JSON has no room for inf or NaN
                steps.append(step)
            if reason:
                return steps, reason
    return steps, None


def fit(opts):
    """Fit the chosen model by SGD from a seeded start; return its Run."""
    import torch
    import torch.nn.functional as F

    check(opts)
    g = torch.Generator().manual_seed(opts.seed)
    if opts.model == "linear":
        x, y = linear_data(g)
        w = torch.tensor([-1.0, 1], requires_grad=True)  # the lesson's starting guess
        steps, reason = descend(x, y, w, mse, opts, g)
        points, labels = torch.stack([x[:, 0], y], dim=1).tolist(), None
    else:
        x, y = blob_data(g)
        w = torch.tensor([-1.0, 1, 1], requires_grad=True)  # a boundary facing the wrong way
        steps, reason = descend(x, y, w, F.binary_cross_entropy_with_logits, opts, g, _accuracy)
        points, labels = x[:, :2].tolist(), [int(v) for v in y]
    return Run(opts, points, labels, steps, reason is not None, reason)


def thin(steps, most):
    """Return at most `most` steps, evenly spread, keeping the first and the last."""
    if len(steps) <= most:
        return list(steps)
    picks = sorted({round(i * (len(steps) - 1) / (most - 1)) for i in range(most)})
    return [steps[i] for i in picks]


def to_json(run, most=500):
    """Return the run as a JSON-ready dict, its trajectory thinned to `most` steps."""
    def short(v):
        return float(f"{v:.6g}")
    steps = [{"step": s.step, "epoch": s.epoch, "params": [short(p) for p in s.params],
              "loss": short(s.loss), "accuracy": s.accuracy} for s in thin(run.steps, most)]
    return {"options": asdict(run.options), "model": run.options.model,
            "steps_per_epoch": run.options.steps_per_epoch, "steps_total": run.steps[-1].step,
            "points": [[short(v) for v in p] for p in run.points], "labels": run.labels,
            "steps": steps, "diverged": run.diverged, "reason": run.reason,
            "words": WORDS[run.options.model], "summary": run.summary()}


def _boundary(params, xs):
    """Return the points of the line where w1*x1 + w2*x2 + b = 0 (the p = 0.5 boundary)."""
    w1, w2, b = params
    if abs(w2) < 1e-9:
        return ([-b / w1] * 2, [-1e3, 1e3]) if abs(w1) > 1e-9 else ([], [])
    return xs, [-(w1 * v + b) / w2 for v in xs]


def _gif_figure(run):
    """Draw what every frame shares: the points, the whole loss curve in grey, the axes."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 3.4), dpi=80)
    canvas = FigureCanvasAgg(fig)  # Agg without pyplot: no global state shared between requests
    # Animation.save draws each frame on draw_idle and again in grab_frame; one draw is enough.
    canvas.draw_idle = lambda *args, **kwargs: None
    ax, lax = fig.subplots(1, 2)
    pts = np.array(run.points)
    lo, hi = pts.min(axis=0) - 0.3, pts.max(axis=0) + 0.3
    ax.set_xlim(lo[0], hi[0]), ax.set_ylim(lo[1], hi[1])
    colours = ("#1d2327" if run.labels is None
               else ["#ff7f0e" if c else "#1f77b4" for c in run.labels])
    ax.scatter(pts[:, 0], pts[:, 1], s=12, c=colours)
    ax.set_xlabel("x" if run.labels is None else "x₁")
    ax.set_ylabel("y" if run.labels is None else "x₂")
    lax.plot([s.step for s in run.steps], [s.loss for s in run.steps], color="#bbb", lw=1)
    lax.set_yscale("log"), lax.set_xlabel("step"), lax.set_ylabel(WORDS[run.options.model]["loss"])
    # Fixed margins, not tight_layout: its layout engine would draw every frame twice.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.86, wspace=0.3)
    for a in (ax, lax):  # fixed label places and few ticks: tick layout is most of each draw
        a.xaxis.set_label_coords(0.5, -0.13), a.yaxis.set_label_coords(-0.1, 0.5)
        a.xaxis.set_major_locator(MaxNLocator(5))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    return fig, ax, lax, [lo[0], hi[0]]


def render_gif(run, most=60, fps=10):
    """Render the run as an animated GIF: the fit on the left, the loss curve on the right."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    frames = thin(run.steps, most)
    fig, ax, lax, xs = _gif_figure(run)
    (line,) = ax.plot([], [], color="#c0392b", lw=2)
    (trail,) = lax.plot([], [], color="#2f6f4f", lw=1.5)
    (dot,) = lax.plot([], [], "o", color="#c0392b")
    title = fig.suptitle("")

    def draw(i):
        s, end = frames[i], run.diverged and i == len(frames) - 1
        if run.labels is None:
            line.set_data(xs, [s.params[0] * v + s.params[1] for v in xs])
        else:
            line.set_data(*_boundary(s.params, xs))
        upto = run.steps[:s.step + 1]
        trail.set_data([t.step for t in upto], [t.loss for t in upto])
        dot.set_data([s.step], [s.loss])
        title.set_text(f"{run.options.model} regression · lr {run.options.lr:g} · step {s.step} "
                       f"(epoch {s.epoch}) · loss {s.loss:.3g}" + (" · diverged" if end else ""))
        title.set_color("#a12a2a" if end else "#1d2327")
        return line, trail, dot, title

    anim = FuncAnimation(fig, draw, frames=len(frames), blit=False)
    with tempfile.TemporaryDirectory() as tmp:  # PillowWriter writes to a named file
        path = Path(tmp) / "sgd.gif"
        anim.save(path, writer=PillowWriter(fps=fps))
        return path.read_bytes()


# A run is the same for the same options (the seed fixes the data and the batches), and drawing
# it takes seconds: keep the last 32 GIFs per process (about half a megabyte each).
@functools.lru_cache(maxsize=32)
def gif(opts):
    """Return the GIF of the run that `opts` make, drawing it only the first time."""
    return render_gif(fit(opts))
