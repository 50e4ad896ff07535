"""cleaned.csv: the training manifest that plain fastai reads."""
import csv
import io
from pathlib import Path

from webapp.core import files

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
    """Write cleaned.csv into `data_dir` atomically; return its path."""
    path = Path(data_dir) / CLEANED_CSV
    files.write_atomic(path, render_cleaned_csv(rows))
    return path
