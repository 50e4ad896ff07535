"""Import from and export to fastai's layouts: class folders and a name,label CSV."""
import csv
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from webapp.dataset.store import Added, StoreError, check_class_name

SKIPPED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def counts_line(counts, failed="rejected"):
    """Say what an import did, in one line: stored, duplicates, and rejected (or failed)."""
    return (f"stored {counts.get('stored', 0)}, duplicates {counts.get('duplicate', 0)}, "
            f"{failed} {counts.get(failed, 0)}")


@dataclass
class Summary:
    """What an import did, file by file."""

    results: list = field(default_factory=list)

    def add(self, added):
        """Record one file's outcome."""
        self.results.append(added)

    @property
    def counts(self):
        """Return {status: n}."""
        return Counter(r.status for r in self.results)

    def lines(self):
        """Return a human summary: totals, then each rejection with its reason."""
        out = [counts_line(self.counts)]
        out += [f"  rejected {r.name}: {r.reason}" for r in self.results if r.status == "rejected"]
        return out


def _files_in(folder):
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in SKIPPED_NAMES)


def folder_items(root):
    """List (path, label) for a folder of class sub-folders; top-level files are unlabeled."""
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"{root} is not a folder")
    items = [(p, None) for p in _files_in(root)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = check_class_name(sub.name)
        items += [(p, label) for p in _files_in(sub)]
    return items


def csv_items(root, csv_path):
    """List (path, label) from a fastai cleaned.csv (name,label[,...]) relative to `root`."""
    root = Path(root).resolve()
    items = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"name", "label"} <= set(reader.fieldnames):
            raise StoreError(f"{csv_path} needs the columns name and label (it has "
                             f"{', '.join(reader.fieldnames or []) or 'none'})")
        for row in reader:
            path = (root / row["name"]).resolve()
            if not path.is_relative_to(root):
                raise StoreError(f"{row['name']!r} points outside {root}")
            label = row["label"].strip() or None
            items.append((path, check_class_name(label) if label else None))
    return items


def import_items(dataset, items, source, progress=None, actor="cli"):
    """Add (path, label) items to the dataset, reporting each one."""
    summary = Summary()
    for i, (path, label) in enumerate(items):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            summary.add(Added("rejected", str(path), reason=f"cannot read the file ({e.strerror})"))
        else:
            summary.add(dataset.add_image(data, label=label, source=source,
                                          name=str(path), actor=actor, write_csv=False))
        if progress:
            progress(i + 1, len(items))
    dataset.write_cleaned_csv()
    return summary


def export_folder(dataset, dest):
    """Copy the live labeled images into dest/<class>/ (the layout fastai loads); return n."""
    dest = Path(dest)
    n = 0
    for row in dataset.labeled():
        target = dest / row["label"] / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dataset.data_dir / row["path"], target)
        n += 1
    for name in dataset.class_names():  # empty classes stay visible as empty folders
        os.makedirs(dest / name, exist_ok=True)
    return n
