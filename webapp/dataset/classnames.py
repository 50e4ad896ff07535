"""Class names that look like one another: the same word but for case, spacing or a plural."""
import re

SEPARATORS = re.compile(r"[\s_\-]+")


def _forms(name):
    """Return a name's comparable forms: lower case, separators dropped, singular if plural."""
    word = SEPARATORS.sub("", name.strip().lower())
    forms = {word}
    if word.endswith("ies") and len(word) > 4:
        forms.add(word[:-3] + "y")  # puppies → puppy
    if word.endswith("es") and len(word) > 4:
        forms.add(word[:-2])  # boxes → box
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        forms.add(word[:-1])  # bears → bear, horses → horse
    return forms


def look_alike(a, b):
    """Tell whether two different names differ only in case, spacing or a plural."""
    return a != b and bool(_forms(a) & _forms(b))


def _biggest(names, sizes):
    """Return the name with the most images (the first by name on a tie)."""
    return sorted(names, key=lambda n: (-sizes.get(n, 0), n))[0]


def _groups(names):
    """Return the names that look alike, as groups of two or more, each sorted."""
    groups = []
    for name in sorted(names):
        joined = [g for g in groups if any(look_alike(name, other) for other in g)]
        merged = sorted({name}.union(*joined))
        groups = [g for g in groups if g not in joined] + [merged]
    return [g for g in groups if len(g) > 1]


def merge_suggestions(sizes):
    """Return (names, into) for each group of look-alike classes: into the one with most images.

    `sizes` is {class: number of images}.
    """
    out = []
    for group in _groups(sizes):
        into = _biggest(group, sizes)
        out.append(([n for n in group if n != into], into))
    return out


def folder_targets(folders, classes):
    """Return {folder: the class it probably means} for folders that look like another name.

    `folders` is {folder name: files} from an import, `classes` {class: images} in the dataset.
    A folder that looks like an existing class goes to it (the biggest if several); folders that
    look like each other, and like no class, go to the biggest of them.
    """
    targets = {}
    for folder in folders:
        if folder in classes:
            continue
        alike = [c for c in classes if look_alike(folder, c)]
        if alike:
            targets[folder] = _biggest(alike, classes)
    rest = [f for f in folders if f not in classes and f not in targets]
    for group in _groups(rest):
        into = _biggest(group, folders)
        targets.update({f: into for f in group if f != into})
    return targets
