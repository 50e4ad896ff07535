"""Near-duplicate search, tile by tile (never an N×N matrix), on perceptual hashes or embeddings.

Two images are near-duplicates when their perceptual hashes (imagehash's 64-bit pHash: whether
each of the 64 lowest frequencies of a 32×32 grey thumbnail is above their median) agree on
enough bits. The similarity is the
share of agreeing bits, so 0.875 means at most 8 of 64 differ. bench/near_duplicates.py chose
hash and threshold by planting re-encoded, resized and slightly cropped copies in a real set:
the hash finds them with few other pairs, while the penultimate activations of any two images
of one class are about as close as an image and its copy (figures: README, Cleaning). Versions
scored before hashes were stored fall back to the cosine similarity of their embeddings.
"""
from dataclasses import dataclass

import numpy as np

ROWS, COLS = 1024, 4096  # a 1024×4096 float32 tile is 16 MB; wider tiles mean fewer
# thread-pool handoffs, which matters on a machine whose cores are busy with other work
MAX_PAIRS = 200_000
HASH, COSINE = "phash", "cosine"  # what a version's pairs were found with
HASH_BITS = 64
DEFAULT_THRESHOLD = {HASH: 0.875, COSINE: 0.95}  # COSINE: the default before hashes existed


@dataclass
class Pairs:
    """Pairs of rows (first < second) and their similarity, most similar first."""

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


def perceptual_hash(image):
    """Return a PIL image's 64-bit perceptual hash (pHash) as an int."""
    import imagehash

    grey = image.convert("L")
    grey = grey.reduce(max(1, min(grey.size) // 128))  # box-shrink first: a 12 MP photo in ms
    bits = imagehash.phash(grey, hash_size=8).hash.flatten()
    return int(np.packbits(bits).view(">u8")[0])


def similar_hashes(hashes, threshold=DEFAULT_THRESHOLD[HASH], rows=ROWS, cols=COLS,
                   max_pairs=MAX_PAIRS):
    """Return the pairs of rows whose hashes agree on at least `threshold` of their bits."""
    h = np.asarray(hashes, np.uint64)

    def tile(a, b):
        differ = np.bitwise_count(h[a, None] ^ h[None, b])
        return 1 - differ.astype(np.float32) / HASH_BITS

    return _search(len(h), tile, threshold, rows, cols, max_pairs)


def similar_pairs(embeddings, threshold=DEFAULT_THRESHOLD[COSINE], rows=ROWS, cols=COLS,
                  max_pairs=MAX_PAIRS):
    """Return the pairs of rows whose embeddings' cosine similarity is at least `threshold`."""
    import torch

    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings, np.float32)), dim=1)
    return _search(len(x), lambda a, b: torch.mm(x[a], x[b].T).numpy(), threshold, rows, cols,
                   max_pairs)


def find_pairs(hashes, embeddings, threshold):
    """Return (method, Pairs): by hashes when the scores have them, else by embeddings."""
    if hashes is not None:
        return HASH, similar_hashes(hashes, threshold)
    return COSINE, similar_pairs(embeddings, threshold)


def _search(n, tile, threshold, rows, cols, max_pairs):
    """Collect the pairs at or above threshold from `tile(rows slice, cols slice)` similarities.

    Works through (rows × cols) tiles of the upper triangle, so memory stays at one tile plus
    the pairs found. When more than `max_pairs` qualify, the most similar `max_pairs` are kept.
    """
    threshold = check_threshold(threshold)
    floor, found, count = threshold, [], 0
    for a in range(0, n, rows):
        for b in range(a, n, cols):
            sims = tile(slice(a, a + rows), slice(b, b + cols))
            if b < a + rows:  # keep column > row only: each pair once, no self-pairs
                sims = np.triu(sims, a - b + 1)  # (zeros never pass: the threshold is above 0)
            r, c = np.nonzero(sims >= floor)
            if len(r):
                found.append((r + a, c + b, sims[r, c]))
                count += len(r)
            if count > 2 * max_pairs:  # keep memory bounded: drop all but the best max_pairs
                found = [_top(found, max_pairs)]
                count = len(found[0][0])
                floor = max(floor, float(found[0][2].min()))
    i, j, s = _top(found, max_pairs) if found else (np.zeros(0, np.int64),) * 2 + (
        np.zeros(0, np.float32),)
    return Pairs(i.astype(np.int64), j.astype(np.int64), s.astype(np.float32), threshold)


def _top(found, k):
    """Concatenate (rows, cols, sims) chunks and keep the k most similar, sorted descending."""
    i, j, s = (np.concatenate([f[n] for f in found]) for n in range(3))
    order = np.argsort(-s, kind="stable")[:k]
    return i[order], j[order], s[order]
