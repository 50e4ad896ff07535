"""The store: content-addressed images, a fixed split, and changes that come with their events."""
import csv
import json
import random
import threading

import pytest

from tests.pictures import jpeg, tinted, tinted_set
from webapp.core import files
from webapp.dataset import manifest
from webapp.dataset.store import Dataset, StoreError, is_valid_for


def cleaned(ds):
    with open(ds.data_dir / manifest.CLEANED_CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_identical_bytes_are_stored_once_and_reported_as_duplicate(dataset):
    data = jpeg(tinted("red", random.Random(1)))
    first = dataset.add_image(data, label="red", name="a.jpg")
    again = dataset.add_image(data, label="blue", name="copy-of-a.jpg")
    assert first.status == "stored"
    assert (again.status, again.image_id) == ("duplicate", first.image_id)
    row = dataset.image(first.image_id)
    assert row["label"] == "red"  # the duplicate changed nothing
    assert row["path"] == f"images/{row['sha256'][:2]}/{row['sha256']}.jpg"
    assert (dataset.data_dir / row["path"]).read_bytes() == data
    assert len(list((dataset.data_dir / "images").rglob("*.jpg"))) == 1


def test_rejected_file_stores_nothing(dataset):
    got = dataset.add_image(b"<html>not a picture</html>", label="red", name="evil.jpg")
    assert got.status == "rejected" and "not an image" in got.reason
    assert dataset.class_names() == [] and not (dataset.data_dir / "images").exists()


def test_split_is_fixed_by_content_under_relabel_and_growth(tmp_path):
    ds = Dataset(tmp_path / "d")
    ids = [ds.add_image(d, label=lbl).image_id for lbl, d in tinted_set(per_class=30, seed=1)]
    before = {i: ds.image(i)["is_valid"] for i in ids}
    assert 0.08 < sum(before.values()) / len(ids) < 0.35  # about valid_pct = 0.2
    for i in ids[::3]:
        ds.change("relabel", image_id=i, label="green")
    for _, d in tinted_set(per_class=30, seed=2):  # growth
        ds.add_image(d, label="red")
    assert {i: ds.image(i)["is_valid"] for i in ids} == before
    # Another data dir with the same seed puts the same image in the same split.
    other = Dataset(tmp_path / "e")
    row = ds.image(ids[0])
    got = other.add_image((ds.data_dir / row["path"]).read_bytes(), label="red")
    assert other.image(got.image_id)["is_valid"] == row["is_valid"]


def test_split_depends_on_seed_and_pct():
    shas = [f"{i:064x}" for i in range(2000)]
    a = [is_valid_for(s, 0.2, 42) for s in shas]
    assert a != [is_valid_for(s, 0.2, 7) for s in shas]
    assert 0.17 < sum(a) / len(a) < 0.23
    assert sum(is_valid_for(s, 0.5, 42) for s in shas) > sum(a)


def test_relabel_writes_its_event_and_cleaned_csv(dataset):
    img = dataset.add_image(jpeg(tinted("red", random.Random(3))), label="red", name="x.jpg")
    dataset.change("relabel", image_id=img.image_id, label="blue", actor="alice")
    event = dataset.events(limit=1)[0]
    assert (event["kind"], event["actor"], event["image_id"]) == ("relabel", "alice", img.image_id)
    assert json.loads(event["before"]) == {"label": "red"}
    assert json.loads(event["after"]) == {"label": "blue"}
    rows = cleaned(dataset)
    assert [r["label"] for r in rows] == ["blue"]
    assert rows[0]["name"] == dataset.image(img.image_id)["path"]


def test_a_failing_event_rolls_back_the_change(dataset, monkeypatch):
    img = dataset.add_image(jpeg(tinted("red", random.Random(4))), label="red")
    n_events = len(dataset.events())

    def broken(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dataset, "_event", broken)
    with pytest.raises(RuntimeError):
        dataset.change("relabel", image_id=img.image_id, label="blue")
    monkeypatch.undo()
    assert dataset.image(img.image_id)["label"] == "red"
    assert "blue" not in dataset.class_names()
    assert len(dataset.events()) == n_events


def test_delete_moves_to_trash_and_restore_brings_it_back(dataset):
    img = dataset.add_image(jpeg(tinted("red", random.Random(5))), label="red")
    path = dataset.image(img.image_id)["path"]
    dataset.change("delete", image_id=img.image_id)
    assert not (dataset.data_dir / path).exists() and (dataset.data_dir / "trash" / path).exists()
    assert cleaned(dataset) == []
    with pytest.raises(StoreError, match="no image"):
        dataset.change("relabel", image_id=img.image_id, label="blue")
    dataset.change("restore", image_id=img.image_id)
    assert (dataset.data_dir / path).exists()
    assert [r["label"] for r in cleaned(dataset)] == ["red"]
    assert [e["kind"] for e in dataset.events(limit=2)] == ["restore", "delete"]


def test_classes_rename_and_delete(dataset):
    ids = [dataset.add_image(d, label=lbl).image_id for lbl, d in tinted_set(per_class=3, seed=6)]
    dataset.change("add_class", name="empty one")
    assert dataset.class_counts()["empty one"] == {"train": 0, "valid": 0}
    dataset.change("rename_class", name="red", new_name="crimson")
    assert {r["label"] for r in cleaned(dataset)} == {"crimson", "blue"}
    with pytest.raises(StoreError, match="exists already"):
        dataset.change("rename_class", name="crimson", new_name="blue")
    dataset.change("delete_class", name="crimson", images_to="unlabel")
    assert dataset.unlabeled_count() == 3 and "crimson" not in dataset.class_names()
    dataset.change("delete_class", name="blue", images_to="delete")
    assert cleaned(dataset) == [] and dataset.unlabeled_count() == 3
    dataset.change("restore", image_id=ids[1])  # a blue one: its class comes back
    assert dataset.class_counts()["blue"]["train"] + dataset.class_counts()["blue"]["valid"] == 1


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65, "tab\there"])
def test_unusable_class_names_are_refused(dataset, name):
    with pytest.raises(StoreError, match="not a usable class name"):
        dataset.change("add_class", name=name)


def test_cleaned_csv_is_replaced_atomically(dataset, monkeypatch):
    img = dataset.add_image(jpeg(tinted("red", random.Random(7))), label="red")
    before = (dataset.data_dir / "cleaned.csv").read_text()
    entries = sorted(dataset.data_dir.iterdir())

    def crash(*a):
        raise OSError("no space left")

    monkeypatch.setattr(files.os, "replace", crash)  # the relabel commits, its CSV rewrite fails
    with pytest.raises(OSError, match="no space left"):
        dataset.change("relabel", image_id=img.image_id, label="blue")
    assert (dataset.data_dir / "cleaned.csv").read_text() == before
    assert sorted(dataset.data_dir.iterdir()) == entries  # no temp file left behind
    monkeypatch.undo()
    dataset.write_cleaned_csv()  # the next write catches up
    assert [r["label"] for r in cleaned(dataset)] == ["blue"]


def test_two_writers_cannot_leave_an_older_cleaned_csv(dataset, monkeypatch):
    """A writer that read its rows before another's change must not write after it."""
    a = dataset.add_image(jpeg(tinted("red", random.Random(8))), label="red")
    read_early, other_done, failed = threading.Event(), threading.Event(), []
    real_labeled = Dataset.labeled

    def slow_labeled(self):
        rows = real_labeled(self)
        if threading.current_thread() is first and not read_early.is_set():
            read_early.set()
            other_done.wait(1.0)  # without the lock the other writer finishes meanwhile
        return rows

    def write_from_a_second_process():  # a thread with its own connection stands in for one
        try:
            ds = Dataset(dataset.data_dir)
            ds.write_cleaned_csv()
            ds.close()
        except Exception as e:  # reported below, in the test's own thread
            failed.append(e)

    monkeypatch.setattr(Dataset, "labeled", slow_labeled)
    first = threading.Thread(target=write_from_a_second_process)
    first.start()
    assert read_early.wait(5)
    dataset.change("relabel", image_id=a.image_id, label="blue")  # commits, rewrites the CSV
    other_done.set()
    first.join(5)
    assert not failed
    assert [r["label"] for r in cleaned(dataset)] == ["blue"]
