"""Decisions on images: many at once as one step, keeps that persist, undo in the order made."""
import pytest

from tests.cleaning_data import add_pictures
from webapp.cleaning import decisions


def test_undo_last_takes_back_decisions_newest_first_keeps_included(dataset):
    a, b, c, d = add_pictures(dataset, ["x", "x", "y", "y"])
    decisions.decide(dataset, "delete", [a, d])
    decisions.decide(dataset, "keep", [b])
    decisions.decide(dataset, "relabel", [c], label="x")
    (upload,) = add_pictures(dataset, ["y"], seed=7)  # the newest change, but not a cleaning one

    assert decisions.undo_last(dataset) == f"Undone: image #{c}: 'y' → 'x'."
    assert dataset.image(c)["label"] == "y"
    assert decisions.undo_last(dataset) == "Undone: keeping 1 image as labelled."
    assert decisions.kept_images(dataset.conn) == set()
    assert decisions.undo_last(dataset).startswith(f"Undone: deleted image #{a}")
    assert dataset.image(a)["deleted"] is None and dataset.image(d)["deleted"] is None  # one step
    assert decisions.undo_last(dataset) is None
    assert dataset.image(upload)["deleted"] is None


def test_keeps_persist_and_refuse_images_that_are_not_there(dataset):
    a, b = add_pictures(dataset, ["x", "y"])
    batch = decisions.keep(dataset, [a, b])
    assert decisions.kept_images(dataset.conn) == {a, b}
    decisions.keep(dataset, [b], other_id=a)
    assert decisions.kept_pairs(dataset.conn) == {(a, b)}
    with pytest.raises(decisions.DecisionRefused, match="no live image with id 99"):
        decisions.keep(dataset, [99])
    decisions.undo_keep(dataset.conn, batch)
    assert decisions.kept_images(dataset.conn) == set()
    with pytest.raises(decisions.DecisionRefused, match="undone already"):
        decisions.undo_keep(dataset.conn, batch)
    texts = [k["text"] for k in decisions.keep_history(dataset.conn)]
    assert texts == [f"kept pair #{a} and #{b} as distinct", f"kept images #{a}, #{b} as labelled"]


def test_a_decision_that_changes_nothing_says_so_records_nothing_and_undo_reaches_past_it(dataset):
    a, b, c = add_pictures(dataset, ["two", "two", "one"])
    decisions.decide(dataset, "delete", [a])
    events = dataset.last_event_id()

    same = decisions.decide(dataset, "relabel", [b], label="two")  # b is 'two' already
    assert same.message == f"Image #{b} is already 'two': nothing changed."
    assert same.changed == [] and dataset.last_event_id() == events
    some = decisions.decide(dataset, "relabel", [b, c], label="two")  # only c changes
    assert some.message == "Relabelled 1 image as 'two' (1 image was 'two' already)."
    assert some.changed == [c]
    decisions.decide(dataset, "keep", [b])
    again = decisions.decide(dataset, "keep", [b])
    assert again.message == f"Image #{b} is already kept: nothing changed."

    assert decisions.undo_last(dataset) == "Undone: keeping 1 image as labelled."
    assert decisions.undo_last(dataset) == f"Undone: image #{c}: 'one' → 'two'."
    assert decisions.undo_last(dataset) == f"Undone: deleted image #{a} ('two')."
    assert decisions.undo_last(dataset) is None
