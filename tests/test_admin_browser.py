"""In a real browser: an admin retrains, watches the bar move, reads the report, activates it."""
import json
import time
import urllib.request

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from webapp.model import registry

LOADED_WIDTH = """i => i.complete ? i.naturalWidth : new Promise(done => {
    i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); })"""



def logged_in_admin_page(browser, url):
    """Open /admin/ in a new page and log in as the admin."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(url + "/admin/")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/")
    return page

def test_an_admin_retrains_watches_reads_the_report_and_activates(browser, trained_copy):
    data_dir, v1, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True, TESTING=False)
    with serving(app) as url:
        page = logged_in_admin_page(browser, url)

        form = page.locator("form.train-form")
        # No run started yet: the active version's settings (the session model's).
        assert "Settings of the active version" in page.text_content(".settings-from")
        assert form.locator("select[name=arch]").input_value() == "resnet18"
        assert form.locator("input[name=size]").input_value() == "32"
        assert form.locator("input[name=lr]").input_value() == "auto"
        form.locator("select[name=arch]").select_option("resnet18")
        for name, value in (("size", "32"), ("epochs", "2"), ("fine_tune_epochs", "1"),
                            ("lr", "0.01"), ("bs", "8")):
            form.locator(f"input[name={name}]").fill(value)
        form.locator("select[name=pretrained]").select_option("no")
        form.locator("summary").click()
        form.locator("input[name=lr_find_iters]").fill("10")
        form.locator("input[name=activate]").uncheck()  # activate it by hand after reading
        form.locator("button[type=submit]").click()
        page.wait_for_url("**/admin/#retrain")
        assert "Training started as job #" in page.text_content("main")

        # Watch the bar without reloading: jobs.js polls; admin.js reloads when it is done.
        seen, shot = [], False
        deadline = time.monotonic() + 300
        while not page.locator(".last-training").count():
            assert time.monotonic() < deadline, f"training did not finish; saw {seen}"
            try:
                # One read of phase, bar and losses: jobs.js may redraw between two reads.
                now = page.evaluate("""() => {
                    const bar = document.querySelector(".job-bar");
                    if (!bar) return null;
                    const text = (sel) => (document.querySelector(sel) || {}).textContent || "";
                    return [text(".job-phase"), bar.value, text("[data-train-losses]")];
                }""")
                if now:
                    seen.append(tuple(now))
                    if not shot and seen[-1][0] in ("frozen", "unfrozen", "from scratch"):
                        page.screenshot(path=str(ARTIFACTS / "admin-training.png"), full_page=True)
                        shot = True
            except Exception:  # the page reloaded between two reads
                pass
            time.sleep(0.3)
        by_phase = {}
        for phase, value, _ in seen:
            by_phase.setdefault(phase, []).append(value)
        assert "from scratch" in by_phase, seen  # no ImageNet weights: one stage, all of it
        moved = [v for v in by_phase.values() if len(set(v)) >= 2]
        assert moved and all(v == sorted(v) for v in moved), seen  # it moved, forwards
        assert any("smoothed loss" in text for _, _, text in seen)
        assert any("last epoch: train_loss" in text for _, _, text in seen)
        assert "succeeded" in page.text_content(".last-training")

        page.click("text=Read the report")
        version = page.url.rsplit("/", 1)[-1]
        assert version != v1 and registry.active_version(data_dir) == v1
        main = page.text_content("main")
        assert "Diagnosis" in main and "The lesson's advice:" in main
        assert page.locator("table.epochs").count() == 1  # from scratch: one fit_one_cycle
        assert page.locator("table.phases td", has_text="lr_find").count() == 0  # rate given
        for img in page.locator(".plots img").all():  # drawn by matplotlib on first request
            assert img.evaluate(LOADED_WIDTH) > 0
        assert page.locator("table.confusion a[href^='/clean/?actual=']").count() == 4
        page.screenshot(path=str(ARTIFACTS / "admin-report.png"), full_page=True)
        page.locator("table.confusion a").first.click()  # blue predicted as blue, in the cleaner
        page.wait_for_url("**/clean/?actual=blue&predicted=blue*")
        assert f"version={version}" in page.url and "went wrong" not in page.text_content("main")
        page.go_back()

        page.click("text=Activate this version")
        assert f"Model {version} is now active" in page.text_content("main")
        time.sleep(1.2)  # the serving app looks at models/ACTIVE at most once a second
        with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
            assert json.loads(r.read())["model"] == version
        page.goto(url + "/admin/")
        page.screenshot(path=str(ARTIFACTS / "admin-versions.png"), full_page=True)
        assert f"Roll back to {v1}" in page.text_content("main")


def says(page, element, text):
    """Wait until the element's text holds `text` (the page asks the server a moment after)."""
    page.wait_for_function("([e, text]) => e.textContent.includes(text)",
                           arg=[element.element_handle(), text], timeout=10000)


def test_the_estimate_follows_the_form_before_start(browser, trained_copy, monkeypatch, tmp_path):
    """Change the size or the architecture: what the run will cost, and whether it has ImageNet
    weights, are said again before Start."""
    data_dir, v1, _ = trained_copy
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights here; and offline
    with serving(make_app(data_dir, TESTING=False)) as url:
        page = logged_in_admin_page(browser, url)
        form = page.locator("form.train-form")
        total = form.locator("[data-estimate-total]")
        basis = form.locator("[data-estimate-basis]")
        note = form.locator("[data-weights-note]")
        assert f"From your run {v1} (resnet18 at 32 px" in basis.text_content()
        assert "scaled by" not in basis.text_content()  # the settings it was timed with
        at_32 = total.text_content()

        form.locator("input[name=size]").fill("128")
        says(page, basis, "(128/32)²")
        assert total.text_content() != at_32
        assert [r.text_content() for r in form.locator("[data-estimate-phases] th").all()][:2] == [
            "lr_find", "from scratch"]

        assert note.text_content().startswith("No ImageNet weights, as chosen")
        form.locator("select[name=pretrained]").select_option("auto")
        form.locator("select[name=arch]").select_option("resnet50")
        says(page, note, "resnet50")
        assert note.text_content().startswith("No ImageNet weights for resnet50 on this machine")
        assert "warning" in note.get_attribute("class")
        says(page, basis, "FLOPs")
        page.locator("#retrain").screenshot(path=str(ARTIFACTS / "admin-retrain-estimate.png"))

        form.locator("input[name=size]").fill("4000")
        says(page, basis, "No estimate: the image size must be between 16 and 1024")
