"""Near-duplicate search over embeddings: cosine similarity tile by tile, never an N×N matrix."""
from dataclasses import dataclass

import numpy as np

ROWS, COLS = 1024, 4096  # a 1024×4096 float32 tile is 16 MB; wider tiles mean fewer
# thread-pool handoffs, which matters on a machine whose cores are busy with other work
MAX_PAIRS = 200_000


@dataclass
class Pairs:
    """Pairs of rows (first < second) and their cosine similarity, most similar first."""

    first: np.ndarray  # int64
    second: np.ndarray  # int64
    similarity: np.ndarray  # float32
    threshold: float

    def __len__(self):
        return len(self.first)


def check_threshold(threshold):
    """Return the threshold as a float in (0, 1], or raise ValueError."""
    t = float(threshold)
    if not 0 < t <= 1:
        raise ValueError("the similarity threshold must be above 0 and at most 1")
    return t


def similar_pairs(embeddings, threshold=0.9, rows=ROWS, cols=COLS, max_pairs=MAX_PAIRS):
    """Return the pairs of rows whose cosine similarity is at least `threshold`.

    Works through (rows × cols) tiles of the upper triangle, so memory stays at one tile plus
    the pairs found. When more than `max_pairs` qualify, the most similar `max_pairs` are kept.
    """
    import torch

    threshold = check_threshold(threshold)
    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings, np.float32)), dim=1)
    n, floor = len(x), threshold
    found, count = [], 0
    for a in range(0, n, rows):
        xa = x[a:a + rows]
        for b in range(a, n, cols):
            sims = torch.mm(xa, x[b:b + cols].T)
            if b < a + rows:  # keep column > row only: each pair once, no self-pairs
                sims.triu_(diagonal=a - b + 1)  # (zeros never pass: the threshold is above 0)
            r, c = torch.nonzero(sims >= floor, as_tuple=True)
            if len(r):
                found.append((r + a, c + b, sims[r, c]))
                count += len(r)
            if count > 2 * max_pairs:  # keep memory bounded: drop all but the best max_pairs
                found = [_top(found, max_pairs)]
                count = len(found[0][0])
                floor = max(floor, float(found[0][2].min()))
    i, j, s = _top(found, max_pairs) if found else (torch.zeros(0, dtype=torch.long),) * 2 + (
        torch.zeros(0),)
    return Pairs(i.numpy().astype(np.int64), j.numpy().astype(np.int64),
                 s.numpy().astype(np.float32), threshold)


def _top(found, k):
    """Concatenate (rows, cols, sims) chunks and keep the k most similar, sorted descending."""
    import torch

    i = torch.cat([f[0] for f in found])
    j = torch.cat([f[1] for f in found])
    s = torch.cat([f[2] for f in found])
    order = torch.argsort(s, descending=True, stable=True)[:k]
    return i[order], j[order], s[order]
