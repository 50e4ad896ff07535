"""Every change to the dataset is an event, and any change can be undone (as new events)."""
import csv
import random
import sqlite3

import pytest

from tests.pictures import jpeg, tinted
from webapp.core import db
from webapp.dataset import manifest
from webapp.dataset.store import Dataset, StoreError


def picture(seed, label="red"):
    return jpeg(tinted(label, random.Random(seed)))


def csv_labels(ds):
    with open(ds.data_dir / manifest.CLEANED_CSV, newline="") as f:
        return {r["name"]: r["label"] for r in csv.DictReader(f)}


@pytest.fixture
def three(dataset):
    """Three red pictures and one unlabeled, with classes red and blue."""
    ids = [dataset.add_image(picture(i), label="red").image_id for i in range(3)]
    dataset.change("add_class", name="blue")
    ids.append(dataset.add_image(picture(9)).image_id)
    return ids


def test_labeling_then_undo_last_walks_back_one_change_at_a_time(dataset, three):
    unlabeled = three[3]
    dataset.change("relabel", image_id=unlabeled, label="blue", actor="ann")
    dataset.change("relabel", image_id=three[0], label="blue", actor="ann")
    assert dataset.undo_last(actor="ann") is not None
    assert dataset.image(three[0])["label"] == "red"
    assert dataset.image(unlabeled)["label"] == "blue"
    dataset.undo_last(actor="ann")
    assert dataset.image(unlabeled)["label"] is None
    assert dataset.image(three[0])["path"] in csv_labels(dataset)
    assert dataset.image(unlabeled)["path"] not in csv_labels(dataset)
    assert dataset.undo_last(actor="ann") is None  # ann has nothing left to undo


def test_undoing_a_delete_brings_the_file_back(dataset, three):
    row = dataset.image(three[1])
    dataset.change("delete", image_id=three[1])
    assert not (dataset.data_dir / row["path"]).exists()
    dataset.undo_last()
    assert (dataset.data_dir / row["path"]).exists()
    assert dataset.image(three[1])["deleted"] is None
    assert csv_labels(dataset)[row["path"]] == "red"


def test_many_decisions_applied_at_once_are_one_undo_step(dataset, three):
    dataset.apply([{"kind": "delete", "image_id": three[0]},
                   {"kind": "delete", "image_id": three[1]},
                   {"kind": "relabel", "image_id": three[2], "label": "blue"}])
    assert len(csv_labels(dataset)) == 1
    dataset.undo_last()
    assert [dataset.image(i)["label"] for i in three[:3]] == ["red"] * 3
    assert len(csv_labels(dataset)) == 3


def test_a_failing_change_in_a_batch_applies_none_of_it(dataset, three):
    with pytest.raises(StoreError):
        dataset.apply([{"kind": "delete", "image_id": three[0]},
                       {"kind": "delete", "image_id": 999}])
    assert dataset.image(three[0])["deleted"] is None
    assert (dataset.data_dir / dataset.image(three[0])["path"]).exists()


@pytest.mark.parametrize("images_to", ["delete", "unlabel"])
def test_deleting_a_class_can_be_undone_whole(dataset, three, images_to):
    dataset.change("delete_class", name="red", images_to=images_to)
    assert "red" not in dataset.class_names() and csv_labels(dataset) == {}
    dataset.undo_last()
    assert "red" in dataset.class_names()
    assert [dataset.image(i)["label"] for i in three[:3]] == ["red"] * 3
    assert all(dataset.image(i)["deleted"] is None for i in three[:3])
    assert len(csv_labels(dataset)) == 3


def test_renaming_a_class_can_be_undone(dataset, three):
    dataset.change("rename_class", name="red", new_name="crimson")
    dataset.undo_last()
    assert dataset.class_names() == ["blue", "red"]
    assert set(csv_labels(dataset).values()) == {"red"}


def test_an_event_that_later_changes_depend_on_is_refused_and_nothing_changes(dataset, three):
    dataset.change("relabel", image_id=three[0], label="blue")
    first = dataset.history(limit=1)[0]["id"]
    dataset.change("relabel", image_id=three[0], label="green")
    n = len(dataset.history(limit=1000))
    with pytest.raises(StoreError, match="relabelled again since"):
        dataset.undo(first)
    assert dataset.image(three[0])["label"] == "green"
    assert len(dataset.history(limit=1000)) == n


def test_history_says_what_happened_and_what_was_undone(dataset, three):
    dataset.change("relabel", image_id=three[3], label="blue", actor="ann")
    event = dataset.history(limit=1)[0]
    assert event["text"] == f"image #{three[3]}: unlabeled → 'blue'"
    assert event["undone_by"] is None
    dataset.undo(event["id"], actor="bob")
    newest, old = dataset.history(limit=2)
    assert old["undone_by"] == newest["id"] and newest["undoes"] == old["id"]
    assert newest["actor"] == "bob" and newest["text"] == f"image #{three[3]}: 'blue' → unlabeled"
    with pytest.raises(StoreError, match="undone already"):
        dataset.undo(event["id"])
    assert [e["image_id"] for e in dataset.history(image_id=three[3])] == [three[3]] * 3


def test_undo_last_keeps_to_one_persons_changes_and_kinds(dataset, three):
    dataset.change("relabel", image_id=three[3], label="blue", actor="ann")
    dataset.change("add_class", name="green", actor="bob")
    assert dataset.undo_last(actor="ann", kinds=("relabel", "delete")) is not None
    assert dataset.image(three[3])["label"] is None
    assert "green" in dataset.class_names()  # bob's change stands


def test_a_new_class_cannot_be_undone_once_it_has_images(dataset, three):
    dataset.change("add_class", name="green")
    event = dataset.history(limit=1)[0]["id"]
    dataset.change("relabel", image_id=three[0], label="green")
    with pytest.raises(StoreError, match="has 1 image now"):
        dataset.undo(event)


# ---- the undo rule: only a recorded change can be undone, "undo last" always names what it
# takes back, and a no-op records nothing --------------------------------------------------

def test_a_no_op_records_nothing_and_undo_last_names_the_last_real_change(dataset, three):
    dataset.change("delete", image_id=three[1])
    before = dataset.last_event_id()
    dataset.change("relabel", image_id=three[0], label="red")  # red already: a no-op
    dataset.apply([{"kind": "relabel", "image_id": three[2], "label": "red"}])  # so is this
    dataset.change("add_class", name="blue")  # blue exists already
    assert dataset.last_event_id() == before  # nothing recorded
    undone = dataset.undo_last()
    assert undone.text() == f"deleted image #{three[1]} ('red')"
    assert dataset.image(three[1])["deleted"] is None


def test_only_a_recorded_change_can_be_undone(dataset, three):
    dataset.change("relabel", image_id=three[0], label="red")  # a no-op: no change to undo
    with pytest.raises(StoreError, match="does not exist"):
        dataset.undo_change(dataset.last_event_id() + 1)
    assert dataset.undo_last(kinds=("relabel",)) is None  # no relabel was ever recorded


def test_every_undo_names_what_it_took_back(dataset, three):
    dataset.apply([{"kind": "delete", "image_id": i} for i in three])
    shown = "; ".join(f"deleted image #{i} ('red')" for i in three[:3])
    assert dataset.undo_last().text() == shown + "; and 1 more"
    dataset.change("delete_class", name="red", images_to="unlabel")
    undone = dataset.undo_last()
    assert undone.text(kinds=("delete_class",)) == "deleted class 'red'; its 3 images unlabeled"
    dataset.change("add_class", name="green")
    assert dataset.undo(dataset.last_event_id()).text() == "created class 'green'"


def test_a_store_made_before_undo_existed_gains_the_columns(tmp_path):
    path = tmp_path / db.DB_NAME
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
                "actor TEXT NOT NULL, kind TEXT NOT NULL, image_id INTEGER, before TEXT, "
                "after TEXT)")
    old.execute("INSERT INTO events(at, actor, kind, after) "
                "VALUES ('t', 'cli', 'add_class', '{\"name\": \"x\"}')")
    old.commit()
    old.close()
    ds = Dataset(tmp_path)
    try:
        ds.change("add_class", name="red")
        assert [e["kind"] for e in ds.history()] == ["add_class", "add_class"]
        assert ds.last_change() == ds.history(limit=1)[0]["id"]  # the old event has no change id
    finally:
        ds.close()
