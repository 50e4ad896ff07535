"""The recipe's rules for learning rates: lr_find's budget, its suggestions, the rate from scratch.

Measured with bench/lr_find.py (figures in the README's Training section).
"""
import math

# From random weights the whole lr_find curve is one long descent and its valley sits early on
# it: on 3 digit classes at 64 px the valley (4e-4 to 6e-4) left the error at 0.17 to 0.71,
# where 3e-3 (the lesson's default_lr, and the rate fastbook trains xresnet50 from scratch at)
# reached plain fastai's. So from scratch the valley is raised to this floor (scratch_lr). No
# ceiling from the other suggestions: a short lr_find's minimum is too noisy to cap it with (on
# 201 pictures it once sat at the curve's first point, 6e-8).
SCRATCH_LR = 3e-3
# lr_find's budget. fastai's lr_find takes 100 iterations whatever the run; on a few hundred
# images that is several times the training itself. Here a run's lr_finds together take at most
# a quarter of its training batches, at least LR_FIND_MIN_ITERS each (fewer points and the
# suggestions are noise), at most fastai's 100. An lr_find iteration costs about 1.3 training
# steps (it saves and reloads the weights around them), the training also validates, and the
# job also exports and scores: so lr_find stays under a quarter of the run.
LR_FIND_SHARE = 1 / 4
LR_FIND_MIN_ITERS = 16
LR_FIND_MAX_ITERS = 100


def lr_find_budget(batches_per_epoch, opts, finds=1):
    """Return how many iterations each lr_find may run: the options' number when given, else
    LR_FIND_SHARE of the run's training batches split between its `finds` lr_finds, within
    LR_FIND_MIN_ITERS and LR_FIND_MAX_ITERS."""
    if opts.lr_find_iters:
        return opts.lr_find_iters
    run = batches_per_epoch * (opts.epochs + opts.fine_tune_epochs)
    share = round(run * LR_FIND_SHARE / max(1, finds))
    return max(LR_FIND_MIN_ITERS, min(LR_FIND_MAX_ITERS, share))


def scratch_lr(suggestions):
    """Return the rate to train random weights with: lr_find's valley, at least SCRATCH_LR."""
    return max(finite_or(suggestions.get("valley"), SCRATCH_LR), SCRATCH_LR)


def smoothing(beta, iters):
    """Return the β to smooth an lr_find of `iters` iterations with: over fewer iterations than
    fastai's 100 the same β would average the curve over a wider span of rates, so it keeps the
    span of the 100-iteration one."""
    return max(0.0, 1 - (1 - beta) * LR_FIND_MAX_ITERS / iters)


def suggest(lrs, losses, num_it):
    """Return fastai's suggestions (minimum, steep, valley) for an lr_find curve, trimmed as fastai
    trims its own (the first tenth of num_it, the last twentieth) and cut at the first NaN."""
    import torch
    from fastai.callback.schedule import minimum, steep, valley

    end = len(losses) - max(1, round(num_it / 20))
    x, y = torch.tensor(lrs[num_it // 10:end]), torch.tensor(losses[num_it // 10:end])
    nan = torch.nonzero(torch.isnan(y)).flatten()
    if len(nan):
        x, y = x[:nan[0]], y[:nan[0]]
    found = {}
    for func in (minimum, steep, valley):
        try:
            found[func.__name__] = finite_or(func(x, y, num_it)[0], None)
        except (IndexError, ValueError, RuntimeError):  # too few points before it diverged
            found[func.__name__] = None
    return found


def finite_or(x, default):
    """Return x as a float if it is a finite number, else `default`."""
    return float(x) if x is not None and math.isfinite(float(x)) else default
