"""In a real browser: from nothing to a labeled two-class dataset, by upload and by URL list."""
import random
import re

from werkzeug import Request, Response

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from tests.pictures import jpeg, tinted
from webapp.dataset.store import Dataset


def pictures_server():
    """A local web server with a few pictures and a missing one."""
    @Request.application
    def app(request):
        found = re.fullmatch(r"/(red|blue)(\d+)\.jpg", request.path)
        if not found:
            return Response("not here", status=404)
        colour, n = found.groups()
        picture = jpeg(tinted(colour, random.Random(1000 + int(n)), 64))
        return Response(picture, mimetype="image/jpeg")

    return serving(app)


def test_an_admin_builds_a_two_class_dataset_in_the_browser(browser, tmp_path):
    data_dir = tmp_path / "data"
    app = make_app(data_dir, TESTING=False, FETCH_ALLOW_NETS="127.0.0.1/32")
    files = []
    for i, colour in enumerate(["red", "blue", "red", "blue"]):
        path = tmp_path / f"{colour}-{i}.jpg"
        path.write_bytes(jpeg(tinted(colour, random.Random(i), 64)))
        files.append(path)
    with serving(app) as url, pictures_server() as web:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(url + "/label/")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/label/")

        for name in ("red", "blue"):
            page.fill("#class-name", name)
            page.click("#new-class button")
            page.wait_for_selector(f'tr[data-class="{name}"]')

        page.click("text=Upload pictures")
        page.set_input_files("#files", [str(f) for f in files])
        page.click("#upload-form button[type=submit]")
        # Arrow functions: the app's CSP refuses the eval Playwright polls a bare expression with.
        page.wait_for_function(
            "() => document.getElementById('upload-summary').textContent.includes('stored 4')")
        assert page.locator("#upload-results tr.stored").count() == 4
        assert page.locator("#upload-progress").evaluate("el => el.value") == 4
        page.screenshot(path=str(ARTIFACTS / "label-upload.png"), full_page=True)

        page.click("text=Label the unlabeled ones")
        page.wait_for_selector("#queue")
        page.screenshot(path=str(ARTIFACTS / "label-queue.png"), full_page=True)
        labeled = []
        for path in files:  # class 1 is blue, class 2 is red (sorted by name)
            image_id = page.get_attribute("#queue", "data-image")
            with page.expect_navigation():
                page.keyboard.press("2" if path.name.startswith("red") else "1")
            labeled.append(image_id)
        assert page.locator("#queue-empty").is_visible()

        with page.expect_navigation():
            page.keyboard.press("u")  # undo the last label: that picture is back in the queue
        assert page.get_attribute("#queue", "data-image") == labeled[-1]
        assert "Undone:" in page.text_content("main")
        with page.expect_navigation():
            page.keyboard.press("1")
        assert page.locator("#queue-empty").is_visible()

        page.goto(url + "/label/urls")
        page.fill("#urls", "\n".join([f"{web}/red7.jpg", f"{web}/red8.jpg", f"{web}/gone.jpg"]))
        page.select_option("#label", "red")
        page.click("#urls-form button[type=submit]")
        page.wait_for_url("**/label/imports/*")
        page.wait_for_selector(".job-status:text('succeeded')", timeout=30_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#import-items tbody tr').length === 3")
        assert page.locator("#import-items tr.stored").count() == 2
        assert "HTTP 404" in page.text_content("#import-items tr.failed")
        assert page.locator("#import-items tr.stored a.image-link").count() == 2
        page.screenshot(path=str(ARTIFACTS / "label-import.png"), full_page=True)

        page.goto(url + "/label/")
        page.screenshot(path=str(ARTIFACTS / "label-overview.png"), full_page=True)
        totals = {name: page.text_content(f'tr[data-class="{name}"] td:nth-child(4)')
                  for name in ("red", "blue")}
    assert totals == {"red": "4", "blue": "2"}
    ds = Dataset(data_dir)
    labels = {r["original_name"]: r["label"] for r in ds.conn.execute("SELECT * FROM images")}
    assert {name: labels[name] for name in (f.name for f in files)} == {
        f.name: f.name.split("-")[0] for f in files}
    assert ds.unlabeled_count() == 0
    csv_rows = (data_dir / "cleaned.csv").read_text().splitlines()[1:]
    assert sorted(row.split(",")[1] for row in csv_rows) == ["blue"] * 2 + ["red"] * 4
    ds.close()


def test_refusals_keep_what_was_typed_and_imports_and_the_queue_say_what_happened(browser,
                                                                                 tmp_path):
    data_dir = tmp_path / "data"
    app = make_app(data_dir, TESTING=False, FETCH_ALLOW_NETS="127.0.0.1/32")
    ds = Dataset(data_dir)
    waiting = ds.add_image(jpeg(tinted("blue", random.Random(5), 64))).image_id
    ds.close()
    with serving(app) as url, pictures_server() as web:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(url + "/label/")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/label/")

        page.fill("#class-name", "red/blue")  # not a class name: the form says why, and keeps it
        page.click("#new-class button")
        page.wait_for_selector("#new-class + .error-message")
        assert "not a usable class name" in page.text_content("#new-class + .error-message")
        assert page.input_value("#class-name") == "red/blue"
        page.fill("#class-name", "red")
        page.click("#new-class button")
        page.wait_for_selector('tr[data-class="red"]')

        page.goto(url + "/label/urls")
        page.select_option("#label", "red")
        page.fill("#urls", "null")
        page.click("#urls-form button[type=submit]")  # no URL in it: the form again, class kept
        page.wait_for_selector("#urls-form .error-message")
        assert "1 line is not a web address" in page.text_content("#urls-form .error-message")
        assert page.input_value("#label") == "red" and page.input_value("#urls") == "null"
        page.screenshot(path=str(ARTIFACTS / "label-urls-refused.png"), full_page=True)

        page.fill("#urls", "\n".join([f"{web}/red7.jpg", f"{web}/red7.jpg",
                                      f"{web}/red7.jpg?again=1"]))
        page.click("#urls-form button[type=submit]")
        page.wait_for_url("**/label/imports/*")
        assert page.text_content(".flash.warning") == "1 repeated URL was taken once."
        page.wait_for_selector(".job-status:text('succeeded')", timeout=30_000)
        page.wait_for_selector("#import-items tr.duplicate a.image-link")
        assert page.text_content(".job-phase") == ""  # "succeeded", not "succeeded downloading"
        twin = " ".join(page.text_content("#import-items tr.duplicate td:last-child").split())
        stored = page.text_content("#import-items tr.stored a.image-link")
        assert twin == f"same picture as {stored}"  # named once, as the link
        assert page.text_content(".job-detail").strip() == ""  # the counts once: the pills
        assert page.text_content(".job-counts").split() == ["duplicate:", "1", "stored:", "1"]
        page.screenshot(path=str(ARTIFACTS / "label-import-duplicate.png"), full_page=True)

        page.goto(url + "/label/queue")  # no model is active
        assert "Enter" not in page.text_content(".queue-controls .hint")
        page.keyboard.press("Enter")
        assert "no model is active" in page.text_content("#queue-said")
        page.screenshot(path=str(ARTIFACTS / "label-queue-no-model.png"), full_page=True)
        with page.expect_navigation():
            page.keyboard.press("s")
        assert page.text_content(".flash") == (
            f"Skipped image #{waiting}: it comes back at the end of the queue.")
