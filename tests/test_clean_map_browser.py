"""In a real browser: an admin opens the map of a scored dataset, hovers a dot to see its picture,
drags a box round a cluster, relabels it in one go and undoes that; then clicks the picture
unlike all the others and deletes it."""
import numpy as np
import pytest

from tests.cleaning_data import VERSION, add_pictures, fake_scores
from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from webapp.cleaning import scoring
from webapp.dataset.store import Dataset
from webapp.model import registry

VOCAB = ["blue", "green", "red"]


@pytest.fixture
def live(tmp_path):
    """Thirty-six pictures in three clusters, one of them far from the rest, scored and mapped."""
    data_dir = tmp_path / "data"
    ds = Dataset(data_dir)
    labels = [VOCAB[i % 3] for i in range(36)]
    ids = add_pictures(ds, labels, seed=8)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 32)) * 2
    x = centres[[i % 3 for i in range(36)]] + rng.normal(size=(36, 32))
    x[5] = -centres.sum(0) * 2  # unlike any other picture
    fake_scores(data_dir, ids, VOCAB, np.eye(3)[[i % 3 for i in range(36)]] * 0.9 + 0.03,
                embeddings=x)
    vdir = registry.models_dir(data_dir) / VERSION
    scoring.save_embedding_checks(vdir, np.asarray(ids), labels, VOCAB, x)
    scoring.save_projection(vdir, np.asarray(ids), x)
    ds.close()
    with serving(make_app(data_dir, TESTING=False)) as url:
        yield url, data_dir, ids, labels


def open_map(browser, url, errors):
    page = browser.new_page(viewport={"width": 1100, "height": 1100})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/login?next=/clean/map")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/clean/map")
    page.wait_for_selector("#map[data-points]")
    page.locator("#map-canvas").evaluate("canvas => canvas.scrollIntoView({block: 'center'})")
    return page


def where(page, image_id):
    return page.evaluate("id => window.winnowMap.where(id)", image_id)


def labels_now(data_dir, ids):
    ds = Dataset(data_dir)
    try:
        return {i: ds.image(i)["label"] for i in ids}
    finally:
        ds.close()


def test_hover_box_select_relabel_and_undo_on_the_map(browser, live):
    url, data_dir, ids, labels = live
    errors = []
    page = open_map(browser, url, errors)
    assert page.evaluate("window.winnowMap.count()") == 36

    spot = where(page, ids[0])
    page.mouse.move(spot["x"], spot["y"])
    page.wait_for_selector("#map-tip:not([hidden])")
    thumb = page.locator("#map-tip img")
    assert thumb.get_attribute("src").endswith(f"/media/{ids[0]}?size=128")
    assert thumb.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    assert "blue · " in page.text_content("#map-tip p")
    page.screenshot(path=str(ARTIFACTS / "clean-map-hover.png"), full_page=True)

    greens = [i for i, lbl in zip(ids, labels, strict=True) if lbl == "green"]
    spots = [where(page, i) for i in greens]
    left, right = min(s["x"] for s in spots) - 4, max(s["x"] for s in spots) + 4
    top, bottom = min(s["y"] for s in spots) - 4, max(s["y"] for s in spots) + 4
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=4)
    page.mouse.move(right, bottom, steps=4)
    page.mouse.up()
    chosen = page.evaluate("window.winnowMap.selectedIds()")
    assert set(chosen) == set(greens)  # the cluster, and nothing else
    assert page.text_content("#map-n") == str(len(greens))
    assert page.locator("#map-selected li").count() == len(greens)
    page.screenshot(path=str(ARTIFACTS / "clean-map-selected.png"), full_page=True)

    page.select_option("#map-decide select[name=label]", "red")
    page.click("#map-decide button:has-text('Relabel')")
    page.wait_for_selector(f".clean-said:has-text('Relabelled {len(greens)} images as')")
    assert set(labels_now(data_dir, greens).values()) == {"red"}
    assert page.is_hidden("#map-decide")
    page.screenshot(path=str(ARTIFACTS / "clean-map-relabelled.png"), full_page=True)

    page.click("#undo-last button")
    page.wait_for_selector(".flash")
    assert "Undone" in page.text_content(".flash")
    assert set(labels_now(data_dir, greens).values()) == {"green"}
    page.wait_for_selector('#map[data-points="36"]')  # the reloaded page's map
    assert errors == []


def test_click_the_far_away_picture_open_it_and_delete_it(browser, live):
    url, data_dir, ids, _ = live
    errors = []
    page = open_map(browser, url, errors)
    assert "outliers (" in page.text_content(".map-marks")
    spot = where(page, ids[5])
    page.mouse.click(spot["x"], spot["y"])
    page.wait_for_selector("#map-open:not([hidden])")
    assert page.locator("#map-open .map-open-full").get_attribute("href").endswith(
        f"/media/{ids[5]}")
    assert page.evaluate("window.winnowMap.selectedIds()") == [ids[5]]
    assert "outlier" in page.text_content("#map-open .map-open-facts")  # marked with a cross
    page.click("#map-decide button:has-text('Delete')")
    page.wait_for_selector(".clean-said:has-text('Deleted 1 image.')")
    ds = Dataset(data_dir)
    assert ids[5] not in {r["id"] for r in ds.labeled()}
    ds.close()
    assert page.is_hidden("#map-open")
    page.mouse.move(spot["x"], spot["y"])
    assert page.is_hidden("#map-tip")  # a deleted dot is gone from the map

    page.keyboard.press("u")
    page.wait_for_selector(".flash")
    assert "Undone" in page.text_content(".flash")
    ds = Dataset(data_dir)
    assert ids[5] in {r["id"] for r in ds.labeled()}
    ds.close()
    page.wait_for_selector('#map[data-points="36"]')  # the reloaded page's map
    assert errors == []
