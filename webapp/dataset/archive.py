"""A dataset as a zip of class folders (the layout download_images makes and fastai loads)."""
import csv
import io
import tempfile
import zipfile
from pathlib import Path

from webapp.dataset.manifest import CLEANED_CSV


def _source(data_dir, name):
    """Return where an image named in a cleaned.csv is now: images/, or trash/ once deleted."""
    for path in (Path(data_dir) / name, Path(data_dir) / "trash" / name):
        if path.is_file():
            return path
    return None


def write_dataset_zip(data_dir, rows, out):
    """Write cleaned.csv rows into a zip on `out` as <label>/<file>; return (written, missing).

    The zip also holds a cleaned.csv with the zip's own paths, so plain fastai keeps the split:
    `ImageDataLoaders.from_csv(folder, 'cleaned.csv', valid_col='is_valid')`. Images deleted
    since are taken from the trash; ones purged since are listed in MISSING.txt.
    """
    written, missing = [], []
    # Images are JPEG/PNG already: storing them is as small as deflating and much faster.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for r in rows:
            source = _source(data_dir, r["name"])
            if source is None:
                missing.append(r["name"])
                continue
            arcname = f"{r['label']}/{Path(r['name']).name}"
            zf.write(source, arcname)
            written.append({"name": arcname, "label": r["label"], "is_valid": r["is_valid"]})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, ("name", "label", "is_valid"), lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
        zf.writestr(CLEANED_CSV, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
        if missing:
            zf.writestr("MISSING.txt", "purged from the trash since, so not included:\n"
                        + "\n".join(missing) + "\n")
    return len(written), missing


def dataset_zip_file(data_dir, rows):
    """Return a temporary file (deleted when closed) holding the zip, at position 0."""
    f = tempfile.TemporaryFile()
    try:
        write_dataset_zip(data_dir, rows, f)
    except BaseException:
        f.close()
        raise
    f.seek(0)
    return f
