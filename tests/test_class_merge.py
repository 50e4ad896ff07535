"""Near-duplicate classes ('Two' beside 'two') merge into one, and the merge undoes whole."""
import csv
import random
import re

import pytest

from tests.pictures import jpeg, tinted
from webapp.dataset import classnames, manifest
from webapp.dataset.store import Dataset, StoreError


def picture(seed, label="red"):
    return jpeg(tinted(label, random.Random(seed)))


def csv_labels(ds):
    with open(ds.data_dir / manifest.CLEANED_CSV, newline="") as f:
        return sorted(r["label"] for r in csv.DictReader(f))


def made_when(ds):
    return {r["name"]: r["created"] for r in ds.conn.execute("SELECT * FROM classes")}


@pytest.fixture
def twos(dataset):
    """'two' with three images, 'Two' with two (one of them deleted), 'twos' with one."""
    ids = {"two": [dataset.add_image(picture(i), label="two").image_id for i in range(3)],
           "Two": [dataset.add_image(picture(10 + i), label="Two").image_id for i in range(2)],
           "twos": [dataset.add_image(picture(20), label="twos").image_id]}
    dataset.change("delete", image_id=ids["Two"][1])
    return ids


# ---- the store --------------------------------------------------------------------------------

def test_merging_relabels_every_image_and_removes_the_emptied_classes(dataset, twos):
    moved = dataset.merge_classes(["Two", "twos"], "two")
    assert moved == 2  # the live ones; the deleted one follows too, for a restore
    assert dataset.class_names() == ["two"]
    assert {dataset.image(i)["label"] for ids in twos.values() for i in ids} == {"two"}
    assert csv_labels(dataset) == ["two"] * 5
    event = dataset.history(limit=1)[0]
    assert event["kind"] == "merge_classes" and event["image_id"] is None
    assert event["text"] == "merged class 'Two', 'twos' into 'two' (2 images)"
    dataset.change("restore", image_id=twos["Two"][1])
    assert dataset.class_names() == ["two"]  # a restored picture does not bring 'Two' back


def test_undoing_a_merge_puts_back_each_label_and_class_exactly(dataset, twos):
    created = made_when(dataset)
    dataset.merge_classes(["Two", "twos"], "two")
    change = dataset.last_change()
    dataset.undo_change(change)
    assert dataset.class_names() == ["Two", "two", "twos"]
    assert {name: [dataset.image(i)["label"] for i in ids] for name, ids in twos.items()} == {
        "two": ["two"] * 3, "Two": ["Two"] * 2, "twos": ["twos"]}
    assert made_when(dataset) == created
    assert csv_labels(dataset) == ["Two"] + ["two"] * 3 + ["twos"]
    assert dataset.history(limit=1)[0]["text"] == "split class 'Two', 'twos' back out of 'two'"
    assert dataset.last_change() != change  # undone: nothing left to undo there


def test_merging_into_a_new_name_makes_it_and_undo_takes_it_away(dataset, twos):
    assert dataset.merge_classes(["Two", "two", "twos"], "number two") == 5
    assert dataset.class_names() == ["number two"]
    dataset.undo_last()
    assert dataset.class_names() == ["Two", "two", "twos"]


def test_a_merge_is_not_undone_over_a_later_change(dataset, twos):
    dataset.merge_classes(["Two"], "two")
    merge = dataset.last_change()
    dataset.change("relabel", image_id=twos["Two"][0], label="twos")
    with pytest.raises(StoreError, match="relabelled since the merge"):
        dataset.undo_change(merge)
    dataset.change("add_class", name="Two")
    dataset.change("relabel", image_id=twos["Two"][0], label="two")
    with pytest.raises(StoreError, match="exists again already"):
        dataset.undo_change(merge)
    assert dataset.image(twos["Two"][0])["label"] == "two"  # nothing half-undone


@pytest.mark.parametrize("names, into, words", [
    (["two"], "two", "choose at least one class besides 'two'"),
    (["nope"], "two", "there is no class 'nope'"),
    (["Two"], "../etc", "not a usable class name"),
])
def test_a_merge_that_makes_no_sense_is_refused(dataset, twos, names, into, words):
    with pytest.raises(StoreError, match=re.escape(words)):
        dataset.merge_classes(names, into)
    assert dataset.class_names() == ["Two", "two", "twos"]


@pytest.mark.parametrize("a, b, alike", [
    ("Two", "two", True), ("twos", "two", True), ("grizzly bear", "Grizzly_Bear", True),
    ("puppies", "puppy", True), ("boxes", "box", True), ("horses", "horse", True),
    ("two", "three", False), ("glass", "glas", False), ("bus", "bu", False), ("two", "two", False),
])
def test_names_alike_but_for_case_spacing_or_a_plural(a, b, alike):
    assert classnames.look_alike(a, b) is alike


# ---- the label page ---------------------------------------------------------------------------

def post(client, admin, path, **data):
    return client.post(path, data={**data, "csrf_token": admin.csrf_token()})


def test_renaming_onto_an_existing_class_offers_a_merge_instead(app, admin, client):
    ds = Dataset(app.config["DATA_DIR"])
    ids = [ds.add_image(picture(i), label="Two").image_id for i in range(2)]
    ds.add_image(picture(9), label="two")
    r = post(client, admin, "/label/classes/Two/rename", new_name="two")
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and "A class &#39;two&#39; exists already" in page
    assert "Merge &#39;Two&#39; into &#39;two&#39;" in page
    r = post(client, admin, "/label/classes/merge", names="Two", into="two")
    assert r.status_code == 303
    assert ds.class_names() == ["two"] and {ds.image(i)["label"] for i in ids} == {"two"}
    page = client.get("/label/").get_data(as_text=True)
    assert "Merged &#39;Two&#39; into &#39;two&#39;: 2 images moved" in page
    assert "merged class &#39;Two&#39; into &#39;two&#39; (2 images)" in page
    change_id = re.search(r'name="change_id" value="(\d+)"', page).group(1)
    assert post(client, admin, "/label/undo", change_id=change_id).status_code == 303
    assert ds.class_names() == ["Two", "two"]
    ds.close()


def test_the_overview_points_out_look_alike_classes_and_merges_ticked_ones(app, admin, client):
    ds = Dataset(app.config["DATA_DIR"])
    for i, label in enumerate(["two", "two", "Two", "threes", "three"]):
        ds.add_image(picture(i), label=label)
    page = client.get("/label/").get_data(as_text=True)
    assert "&#39;Two&#39;, &#39;two&#39; differ only in case, spacing or a plural" in page
    assert "&#39;three&#39;, &#39;threes&#39; differ only" in page
    assert 'name="names" value="threes" form="merge-form"' in page
    r = client.post("/label/classes/merge", data={"names": ["threes", "three"], "into": "three",
                                                  "csrf_token": admin.csrf_token()})
    assert r.status_code == 303 and ds.class_names() == ["Two", "three", "two"]
    r = post(client, admin, "/label/classes/merge", names="Two", into="")
    assert r.status_code == 400 and "Say which class" in r.get_data(as_text=True)
    r = post(client, admin, "/label/classes/merge", into="two")  # nothing ticked
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "Choose at least one class besides &#39;two&#39;" in page
    assert 'id="merge-into" name="into"' in page and 'value="two" autofocus' in page
    ds.close()
