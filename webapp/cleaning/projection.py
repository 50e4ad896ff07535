"""A 2D map of the embeddings: where each image sits among the others, for the cleaner's Map tab.

scikit-learn's t-SNE (Barnes-Hut) draws it: the L2-normalised embeddings go through PCA to
PCA_DIMS dimensions, then t-SNE places up to FIT_LIMIT of them (a seeded random sample when
there are more). Every other image is placed at the distance-weighted mean of its PLACE_NEIGHBOURS
nearest sampled images in the PCA space, so it lands in the cluster it belongs to. Why a sample:
t-SNE on all of 20 000 images took 90 s on 2 idle cores (122 CPU-seconds), and the scoring job
should stay within about a minute; the sample of 5 000 takes about 18 CPU-seconds and placing
the other 15 000 by their neighbours half a second (bench/clean_map.py). It runs on one thread:
on a machine whose cores are busy (gunicorn's workers, other jobs) two OpenMP threads spin
against them and took 70 s where one took 26 s. The map is rescaled to [0, 1] on its longer
side (the other side keeps the aspect ratio).
"""
import warnings
from dataclasses import dataclass

import numpy as np

from webapp.cleaning.embedding_models import normalised

PCA_DIMS = 50
FIT_LIMIT = 5000
PLACE_NEIGHBOURS = 5
PERPLEXITY = 30.0
THREADS = 1  # see above: one thread is steadier on a shared machine
METHOD = (f"t-SNE (scikit-learn, Barnes-Hut) on a {PCA_DIMS}-d PCA of the normalised "
          f"embeddings; above {FIT_LIMIT} images t-SNE fits a random {FIT_LIMIT} and the rest sit "
          f"at the weighted mean of their {PLACE_NEIGHBOURS} nearest fitted images")


@dataclass
class Projection:
    """Row i of `xy` is where embedding i sits on the map, both coordinates in [0, 1]."""

    xy: np.ndarray  # (n, 2) float32
    fitted: int  # how many rows t-SNE placed itself (the rest: by their neighbours)
    method: str


def project(embeddings, seed=0):
    """Return the Projection of the embeddings onto 2D (t-SNE, see the module's docstring)."""
    import sklearn.manifold  # noqa: F401  # loaded first: threadpool_limits limits only the
    import sklearn.neighbors  # noqa: F401  # thread pools (OpenMP, BLAS) already loaded
    from threadpoolctl import threadpool_limits

    with threadpool_limits(THREADS):
        return _project(normalised(embeddings), seed)


def _project(x, seed):
    """Return the Projection of normalised embeddings."""
    n = len(x)
    if n < 5 or x.shape[1] < 2:  # too few for t-SNE's neighbourhoods: PCA alone (or a point)
        return Projection(rescaled(_pca(x, 2)), n, "PCA")
    reduced = _pca(x, PCA_DIMS)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, FIT_LIMIT, replace=False)) if n > FIT_LIMIT else np.arange(n)
    xy = np.empty((n, 2), np.float32)
    xy[fit] = _tsne(reduced[fit], seed)
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    if len(rest):
        xy[rest] = place_by_neighbours(reduced[fit], xy[fit], reduced[rest])
    return Projection(rescaled(xy), len(fit), METHOD)


def _pca(x, dims):
    """Return x reduced to at most `dims` principal components (zero-padded to at least 2)."""
    from sklearn.decomposition import PCA

    n, d = x.shape
    k = min(dims, n, d)
    out = PCA(k, random_state=0).fit_transform(x) if k >= 1 and n > 1 else np.zeros((n, 0))
    return np.pad(out, ((0, 0), (0, max(0, 2 - out.shape[1])))).astype(np.float32)


def _tsne(x, seed):
    """Return t-SNE's 2D positions of the rows of x."""
    from sklearn.manifold import TSNE

    perplexity = min(PERPLEXITY, (len(x) - 1) / 3)  # t-SNE needs 3 × perplexity neighbours
    with warnings.catch_warnings():  # e.g. "the PCA initialization … changed": not the map's
        warnings.simplefilter("ignore", FutureWarning)
        return TSNE(2, perplexity=perplexity, init="pca",
                    random_state=seed).fit_transform(x).astype(np.float32)


def place_by_neighbours(fitted, fitted_xy, others, k=PLACE_NEIGHBOURS):
    """Return 2D positions for `others`: the inverse-distance weighted mean of the positions of
    their k nearest rows of `fitted`."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(fitted))
    dist, near = NearestNeighbors(n_neighbors=k).fit(fitted).kneighbors(others)
    weights = 1 / np.maximum(dist, 1e-6)
    weights /= weights.sum(1, keepdims=True)
    return (fitted_xy[near] * weights[..., None]).sum(1)


def rescaled(xy):
    """Return xy shifted and scaled into [0, 1] on its longer side, aspect ratio kept."""
    xy = np.asarray(xy, np.float32)
    if not len(xy):
        return xy.reshape(0, 2)
    low, span = xy.min(0), np.ptp(xy, 0)
    scale = float(span.max()) or 1.0
    return ((xy - low) / scale + (1 - span / scale) / 2).astype(np.float32)
