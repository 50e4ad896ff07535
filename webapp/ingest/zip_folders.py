"""A zip's class folders, checked before it is imported: those that look like another class."""
from dataclasses import dataclass

from webapp.dataset import classnames
from webapp.dataset.store import StoreError, check_class_name
from webapp.ingest import uploads, zips


@dataclass
class LookAlike:
    """A folder whose name looks like another class's, and the class it probably means."""

    folder: str
    files: int
    target: str
    existing: bool  # the target is a class of the dataset (else another folder of the zip)


def look_alikes(dataset, token, label=None, max_entries=zips.MAX_ZIP_ENTRIES,
                max_bytes=zips.MAX_ZIP_BYTES):
    """Return the staged zip's folders that differ from a class only in case, spacing or plural."""
    staged = uploads.staged_folder(dataset.data_dir, token) / uploads.ZIP_NAME
    folders = zips.zip_labels(staged, label, max_entries, max_bytes)
    sizes = {name: n["train"] + n["valid"] for name, n in dataset.class_counts().items()}
    targets = classnames.folder_targets(folders, sizes)
    return [LookAlike(folder, folders[folder], target, target in sizes)
            for folder, target in sorted(targets.items())]


def label_map(folders, classes):
    """Return {folder: class} from a form's paired lists; each class must be a usable name."""
    if len(folders) != len(classes):
        raise StoreError("say one class for each folder")
    return {folder: check_class_name(cls) for folder, cls in zip(folders, classes, strict=True)
            if folder and cls and cls != folder}
