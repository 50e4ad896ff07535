"""In a real browser: an admin cleans by loss, switches class and back, and undoes a delete;
deletes the most unusual picture on the Outliers tab and undoes that too."""
import csv

import numpy as np
import pytest

from tests.cleaning_data import add_pictures, fake_cv_scores, fake_scores
from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from webapp.cleaning import scoring
from webapp.dataset.store import Dataset
from webapp.model import registry


@pytest.fixture
def live(tmp_path):
    data_dir = tmp_path / "data"
    ds = Dataset(data_dir)
    labels = ["red", "blue"] * 6
    ids = add_pictures(ds, labels, seed=21)
    p_red = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99]
    emb = np.random.default_rng(3).normal(size=(len(ids), 16))
    emb[5] = emb[4] + 0.01  # one near-duplicate pair
    probs = [[1 - p, p] for p in p_red]
    fake_scores(data_dir, ids, ["blue", "red"], probs, embeddings=emb)
    fake_cv_scores(data_dir, ids, ["blue", "red"], probs)  # as if cross-validated
    ds.close()
    with serving(make_app(data_dir, TESTING=False)) as url:
        yield url, data_dir, ids


def logged_in_page(browser, url):
    page = browser.new_page()
    page.goto(url + "/login?next=/clean/")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/clean/")
    return page


def shown_ids(page):
    return [int(x) for x in page.locator(".clean-card").evaluate_all(
        "cards => cards.map(c => c.dataset.imageId)")]


def test_relabel_delete_switch_class_and_back_then_undo_the_delete(browser, live):
    url, data_dir, ids = live
    page = logged_in_page(browser, url)
    page.goto(url + "/clean/?label=red")
    reds = shown_ids(page)
    assert len(reds) == 6
    relabelled, deleted = reds[0], reds[1]

    card = page.locator(f'.clean-card[data-image-id="{relabelled}"]')
    card.locator("select[name=label]").select_option("blue")
    card.locator("button", has_text="Relabel").click()
    page.wait_for_selector(
        f'.clean-card[data-image-id="{relabelled}"] .outcome:has-text("Relabelled as blue")')

    page.keyboard.press("j")  # first card
    page.keyboard.press("j")  # second card
    page.keyboard.press("d")  # delete it
    page.wait_for_selector(f'.clean-card[data-image-id="{deleted}"] .outcome:has-text("Deleted")')
    assert "Deleted 1 image." in page.text_content(".clean-said")
    page.screenshot(path=str(ARTIFACTS / "clean-decided.png"), full_page=True)

    page.select_option("form.filters select[name=label]", "blue")
    page.click("form.filters button")
    page.wait_for_url("**label=blue**")
    assert relabelled in shown_ids(page) and deleted not in shown_ids(page)
    page.select_option("form.filters select[name=label]", "red")
    page.click("form.filters button")
    page.wait_for_url("**label=red**")
    assert set(shown_ids(page)) == set(reds) - {relabelled, deleted}  # both decisions still there

    page.click("#undo-last button")
    page.wait_for_selector(".flash")
    assert f"Undone: deleted image #{deleted}" in page.text_content(".flash")
    assert deleted in shown_ids(page) and relabelled not in shown_ids(page)
    page.screenshot(path=str(ARTIFACTS / "clean-undone.png"), full_page=True)

    ds = Dataset(data_dir)
    with open(data_dir / "cleaned.csv", newline="") as f:
        manifest = {r["name"]: r["label"] for r in csv.DictReader(f)}
    assert manifest[ds.image(relabelled)["path"]] == "blue"
    assert manifest[ds.image(deleted)["path"]] == "red"
    kinds = [(e["kind"], e["image_id"]) for e in ds.history(limit=3)]
    assert kinds == [("restore", deleted), ("delete", deleted), ("relabel", relabelled)]
    assert ds.history(limit=1)[0]["undoes"] == ds.history(limit=2)[1]["id"]
    ds.close()


def test_select_many_and_keep_them_at_once_then_see_pairs_and_history(browser, live):
    url, data_dir, ids = live
    page = logged_in_page(browser, url)
    first_two = shown_ids(page)[:2]
    page.keyboard.press("j")
    page.keyboard.press(" ")
    page.keyboard.press("j")
    page.keyboard.press(" ")
    assert page.text_content(".n-selected") == "2"
    page.click("form.bulk button:has-text('Keep selected')")
    page.wait_for_selector(".clean-said:has-text('Kept 2 images as labelled.')")
    page.reload()
    assert not set(first_two) & set(shown_ids(page))  # kept images are no longer suggested

    page.click("nav.tabs >> text=History")
    assert "as labelled" in page.text_content("main")
    page.screenshot(path=str(ARTIFACTS / "clean-history.png"), full_page=True)
    page.click("nav.tabs >> text=Near-duplicates")
    assert "1 pair at 0.95 or above" in page.text_content("main")
    page.screenshot(path=str(ARTIFACTS / "clean-duplicates.png"), full_page=True)
    page.click("button:has-text('Keep both')")
    page.wait_for_selector(".pair .outcome:has-text('Kept')")
    page.reload()
    assert "0 pairs at 0.95 or above" in page.text_content("main")

    page.click("nav.tabs >> text=Suspected label errors")
    first = page.locator(".clean-card:has(button.accept)").first
    suggested = first.locator("button.accept").text_content().split(": ")[1]
    first.locator("button.accept").click()
    page.wait_for_selector(f".clean-card .outcome:has-text('Relabelled as {suggested}')")
    page.screenshot(path=str(ARTIFACTS / "clean-label-issues.png"), full_page=True)


def test_the_outliers_tab_deletes_the_most_unusual_with_the_keyboard_and_undoes(browser, live):
    url, data_dir, ids = live
    ds = Dataset(data_dir)
    labels = [ds.image(i)["label"] for i in ids]
    ds.close()
    rng = np.random.default_rng(5)
    centres = {"red": rng.normal(size=16) * 3, "blue": rng.normal(size=16) * 3}
    emb = np.array([centres[lbl] for lbl in labels]) + rng.normal(scale=0.5, size=(len(ids), 16))
    emb[7] = -(centres["red"] + centres["blue"])  # pointing away from every other image
    scoring.save_embedding_checks(registry.models_dir(data_dir) / "made-up", np.asarray(ids),
                                  labels, ["blue", "red"], emb)
    page = logged_in_page(browser, url)
    page.click("nav.tabs >> text=Outliers")
    page.wait_for_url("**/clean/outliers")
    position = shown_ids(page).index(ids[7])
    assert position <= 1  # at the top, with at most the image the cross-validation doubts most
    for _ in range(position + 1):
        page.keyboard.press("j")
    page.keyboard.press("d")
    page.wait_for_selector(f'.clean-card[data-image-id="{ids[7]}"] .outcome:has-text("Deleted")')
    page.screenshot(path=str(ARTIFACTS / "clean-outliers.png"), full_page=True)
    page.reload()
    assert ids[7] not in shown_ids(page)
    page.click("#undo-last button")
    page.wait_for_selector(".flash")
    assert f"Undone: deleted image #{ids[7]}" in page.text_content(".flash")
    assert shown_ids(page).index(ids[7]) == position


def test_pressing_the_label_an_image_has_changes_nothing_and_undo_takes_back_the_delete(browser,
                                                                                       live):
    url, data_dir, ids = live
    page = logged_in_page(browser, url)
    page.goto(url + "/clean/?label=red")
    deleted, same = shown_ids(page)[:2]
    page.keyboard.press("j")
    page.keyboard.press("d")  # delete the first red picture
    page.wait_for_selector(f'.clean-card[data-image-id="{deleted}"] .outcome:has-text("Deleted")')
    ds = Dataset(data_dir)
    events = ds.last_event_id()

    page.keyboard.press("2")  # the second is 'red' already (the classes: 1 blue, 2 red)
    page.wait_for_selector(".clean-said:has-text('nothing changed')")
    assert page.text_content(".clean-said") == f"Image #{same} is already 'red': nothing changed."
    card = page.locator(f'.clean-card[data-image-id="{same}"]')
    assert "decided" not in card.get_attribute("class")  # not greyed: nothing was decided
    assert "Relabelled" not in card.text_content()
    page.screenshot(path=str(ARTIFACTS / "clean-no-op.png"), full_page=True)
    assert ds.last_event_id() == events  # the no-op recorded nothing

    page.keyboard.press("u")  # undo takes back the last real decision, and says which
    page.wait_for_selector(".flash")
    assert page.text_content(".flash") == f"Undone: deleted image #{deleted} ('red')."
    assert deleted in shown_ids(page)
    ds.close()
