"""cleaned.csv: the training manifest that plain fastai reads."""
import csv
import hashlib
import io
import os
import tempfile
from pathlib import Path

CLEANED_CSV = "cleaned.csv"
COLUMNS = ("name", "label", "is_valid")


def render_cleaned_csv(rows):
    """Return cleaned.csv's text for rows with path, label and is_valid."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow((r["path"], r["label"], "True" if r["is_valid"] else "False"))
    return buf.getvalue()


def write_cleaned_csv(data_dir, rows):
    """Write cleaned.csv into `data_dir` atomically (temp file + os.replace)."""
    data_dir = Path(data_dir)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".cleaned-", suffix=".csv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(render_cleaned_csv(rows))
        os.replace(tmp, data_dir / CLEANED_CSV)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data_dir / CLEANED_CSV


def file_sha256(path):
    """Return the sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
