"""In a real browser: an admin retrains, watches the bar move, reads the report, activates it."""
import json
import time
import urllib.request

from tests.conftest import ARTIFACTS, PASSWORD, make_app, serving
from webapp.model import registry

LOADED_WIDTH = """i => i.complete ? i.naturalWidth : new Promise(done => {
    i.onload = () => done(i.naturalWidth); i.onerror = () => done(0); })"""


def test_an_admin_retrains_watches_reads_the_report_and_activates(browser, trained_copy):
    data_dir, v1, _ = trained_copy
    app = make_app(data_dir, LOAD_MODEL=True, TESTING=False)
    with serving(app) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url + "/admin/")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/admin/")

        form = page.locator("form.train-form")
        assert form.locator("select[name=arch]").input_value() == "resnet34"  # the lesson's
        assert form.locator("input[name=size]").input_value() == "224"
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
                bar = page.locator(".job-bar")
                if bar.count():
                    seen.append((page.text_content(".job-phase"),
                                 bar.evaluate("b => b.value"),
                                 page.text_content("[data-train-losses]")))
                    if not shot and seen[-1][0] in ("frozen", "unfrozen"):
                        page.screenshot(path=str(ARTIFACTS / "admin-training.png"), full_page=True)
                        shot = True
            except Exception:  # the page reloaded between two reads
                pass
            time.sleep(0.3)
        by_phase = {}
        for phase, value, _ in seen:
            by_phase.setdefault(phase, []).append(value)
        assert {"frozen", "unfrozen"} & set(by_phase), seen
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
        assert page.locator("table.epochs").count() == 2
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
