"""What the dataset store refuses, as errors whose message says why."""


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


class ClassExists(StoreError):
    """A class name that is taken already: renaming onto it would be a merge."""

    def __init__(self, name):
        super().__init__(f"a class {name!r} exists already")
        self.name = name
