"""Counts in words: "1 image", "3 images", one way for the domain and the pages."""


def plural(n, one, many=None):
    """Return a count with its noun: "1 image", "2 images" (`many` for irregular plurals)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
