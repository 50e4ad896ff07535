"""In a real browser: look-alike classes mapped and merged (and undone), and an upload cut short."""
import csv
import io
import random
import time
import zipfile

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from tests.pictures import jpeg, tinted
from webapp.dataset.store import Dataset


def picture(seed, colour="red"):
    return jpeg(tinted(colour, random.Random(seed), 48))


def log_in(page, url):
    page.goto(url + "/label/")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/label/")


def totals(page):
    """Return {class: total} as the overview's table shows it."""
    return {row.get_attribute("data-class"): int(row.locator("td:nth-child(4)").text_content())
            for row in page.locator("table.classes tbody tr").all()}


def csv_labels(data_dir):
    with open(data_dir / "cleaned.csv", newline="") as f:
        return sorted(r["label"] for r in csv.DictReader(f))


def test_look_alike_folders_are_mapped_and_look_alike_classes_merged_and_unmerged(browser,
                                                                                  tmp_path):
    data_dir = tmp_path / "data"
    ds = Dataset(data_dir)
    for i, label in enumerate(["two", "two", "two", "three", "three"]):
        ds.add_image(picture(i), label=label)
    ds.close()
    archive = tmp_path / "numbers.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, folder in enumerate(["Two", "Two", "threes", "four"]):
            zf.writestr(f"{folder}/{i}.jpg", picture(10 + i, "blue"))
    archive.write_bytes(buf.getvalue())
    with serving(make_app(data_dir, TESTING=False)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        log_in(page, url)

        # The zip's 'Two/' and 'threes/' look like 'two' and 'three': the page asks first.
        page.click("text=Upload pictures")
        page.set_input_files("#archive", str(archive))
        page.click("#zip-form button[type=submit]")
        page.wait_for_selector("#zip-map-form")
        assert page.locator("#zip-map-form tbody tr").count() == 2
        assert page.input_value('tr[data-folder="Two"] select') == "two"
        page.select_option('tr[data-folder="threes"] select', "threes")  # keep it, for now
        page.screenshot(path=str(ARTIFACTS / "label-zip-look-alikes.png"), full_page=True)
        page.click("#zip-map-form button[type=submit]")
        page.wait_for_url("**/label/imports/*")
        page.wait_for_selector(".job-status:text('succeeded')", timeout=30_000)

        page.goto(url + "/label/")
        assert totals(page) == {"four": 1, "three": 2, "threes": 1, "two": 5}
        assert "'three', 'threes' differ only in case" in page.text_content(".look-alikes")

        # Renaming 'threes' to 'three' is refused, with a merge offered in its place.
        page.fill('tr[data-class="threes"] input[name=new_name]', "three")
        page.click('tr[data-class="threes"] button:text("Rename")')
        page.wait_for_selector("#merge-offer")
        page.screenshot(path=str(ARTIFACTS / "label-merge-offer.png"), full_page=True)
        page.click("#merge-offer button")
        page.wait_for_url("**/label/")
        assert "Merged 'threes' into 'three': 1 image moved" in page.text_content("main")
        assert totals(page) == {"four": 1, "three": 3, "two": 5}
        assert csv_labels(data_dir).count("three") == 3

        # One undo puts 'threes' back as it was.
        first_change = page.locator("ul.events li").first
        assert "merged class 'threes' into 'three' (1 image)" in first_change.text_content()
        first_change.locator("button:text('Undo')").click()
        page.wait_for_url("**/label/")
        assert totals(page) == {"four": 1, "three": 2, "threes": 1, "two": 5}
        assert csv_labels(data_dir).count("threes") == 1

        # Ticking classes merges them too, into any name.
        page.check('tr[data-class="threes"] input[type=checkbox]')
        page.check('tr[data-class="three"] input[type=checkbox]')
        page.fill("#merge-into", "three")
        page.click("#merge-form button[type=submit]")
        page.wait_for_url("**/label/")
        assert totals(page) == {"four": 1, "three": 3, "two": 5}
        assert page.locator(".look-alikes").count() == 0
        page.screenshot(path=str(ARTIFACTS / "label-merged.png"), full_page=True)
    assert csv_labels(data_dir) == ["four"] + ["three"] * 3 + ["two"] * 5


def test_leaving_the_page_mid_upload_asks_first_and_the_import_says_it_was_cut_short(browser,
                                                                                     tmp_path):
    data_dir = tmp_path / "data"
    files = []
    for i in range(45):  # three batches: 20, 20 and 5
        path = tmp_path / f"pic-{i:02}.jpg"
        path.write_bytes(picture(i))
        files.append(str(path))
    with serving(make_app(data_dir, TESTING=False)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        log_in(page, url)
        page.click("text=Upload pictures")

        held, dialogs = [], []

        def hold_after_the_first(route):  # the second batch hangs: the upload is mid-way
            if held or page.locator("#upload-results tbody tr").count():
                held.append(route)
            else:
                route.continue_()

        page.route("**/label/upload.json", hold_after_the_first)
        page.on("dialog", lambda d: (dialogs.append(d.type), d.accept()))
        page.set_input_files("#files", files)
        page.click("#upload-form button[type=submit]")
        page.wait_for_function(
            "() => document.querySelectorAll('#upload-results tbody tr').length === 20")
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert held and "21–40 of 45" in page.text_content("#upload-status")

        page.click("text=← Label")  # the admin wanders off with 25 pictures still to send
        page.wait_for_url("**/label/")
        assert dialogs == ["beforeunload"]

        deadline = time.monotonic() + 10  # the page's last word comes as a beacon
        while "cut short" not in page.text_content("table.imports") and time.monotonic() < deadline:
            page.wait_for_timeout(200)
            page.reload()
        rows = page.locator("table.imports tbody tr")
        assert rows.count() == 1
        assert rows.first.locator(".import-status").text_content() == "cut short"
        assert "20 of 45 sent" in rows.first.text_content()
        assert "stored: 20" in rows.first.text_content()
        page.screenshot(path=str(ARTIFACTS / "label-upload-cut-short.png"), full_page=True)

        rows.first.locator("a").click()
        page.wait_for_url("**/label/imports/*")
        assert "20 of 45 files sent, in 1 batch: cut short" in page.text_content("#upload-sent")
        assert page.locator("#import-items tbody tr").count() == 20
        page.screenshot(path=str(ARTIFACTS / "label-upload-cut-short-import.png"), full_page=True)
