"""URL lists: the lesson's files parsed, downloaded in parallel as a job, each URL accounted for."""
import random
import re
import time
from pathlib import Path

import pytest
from werkzeug import Request, Response

from tests.conftest import serving
from tests.pictures import jpeg, tinted
from tests.test_jobs import wait_for
from webapp.core import db
from webapp.dataset.store import Dataset
from webapp.ingest import downloads
from webapp.jobs import runner as jobs

LOCAL_NETS = "127.0.0.1/32,::1/128"
SETTINGS = {"VALID_PCT": 0.2, "SPLIT_SEED": 42, "MAX_PIXELS": 25_000_000,
            "FETCH_ALLOW_NETS": LOCAL_NETS, "FETCH_MAX_BYTES": 60_000, "FETCH_DEADLINE": 2.0}


def picture(seed, size=48):
    return jpeg(tinted("red" if seed % 2 else "blue", random.Random(seed), size))


def answering_after(seconds):
    """A handler that answers /late.jpg?n=<n> with picture n after a pause."""
    def late(request):
        time.sleep(seconds)
        return Response(picture(int(request.args["n"])), mimetype="image/jpeg")
    return late


def trickle():
    for _ in range(40):
        time.sleep(0.1)
        yield b"z"


def web_of_pictures(extra=None):
    """A local server: good pictures, a copy of one, a 404, a page, a huge body and a slow one."""
    routes = {f"/good{i}.jpg": lambda r, i=i: Response(picture(i), mimetype="image/jpeg")
              for i in range(4)}
    routes.update({
        "/copy-of-good0.jpg": lambda r: Response(picture(0), mimetype="image/jpeg"),
        "/gone.jpg": lambda r: Response("not here", status=404),
        "/page.jpg": lambda r: Response("<html>a page</html>", mimetype="text/html"),
        "/huge.jpg": lambda r: Response(b"\xff" * 200_000, mimetype="image/jpeg"),
        "/slow.jpg": lambda r: Response(trickle(), mimetype="image/jpeg", direct_passthrough=True),
        **(extra or {}),
    })

    @Request.application
    def app(request):
        handler = routes.get(request.path)
        return handler(request) if handler else Response("no such page", status=404)

    return serving(app)


# Two URLs serve the same picture: whichever arrives first is stored, the other is its duplicate.
TWINS = ("/good0.jpg", "/copy-of-good0.jpg")
EXPECTED = {  # path: (status, words in the detail)
    "/good1.jpg": ("stored", "as 'bears'"), "/good2.jpg": ("stored", "as 'bears'"),
    "/good3.jpg": ("stored", "as 'bears'"),
    "/gone.jpg": ("failed", "HTTP error: the server answered HTTP 404"),
    "/page.jpg": ("failed", "not an image"),
    "/huge.jpg": ("failed", "too large"),
    "/slow.jpg": ("failed", "timeout"),
}


def mixed_list(base):
    return [base + p for p in (*TWINS, *EXPECTED)]


def run_download(data_dir, urls, label="bears", workers=8):
    Path(data_dir).mkdir(exist_ok=True)
    return jobs.run_here(data_dir, "download",
                         downloads.job_params(SETTINGS, urls, label, workers), actor="test")


def outcomes(data_dir, job_id):
    return {i["key"]: i for i in jobs.items(data_dir, job_id)}


# ---- parsing the lists people have ----------------------------------------------------------

def test_a_pasted_list_keeps_each_url_once_in_order():
    found = downloads.parse_url_list(
        "https://a.example/1.jpg\n\n  https://a.example/2.jpg  \nhttps://a.example/1.jpg\n"
        "# a comment\nhttps://a.example/3.jpg?w=100,h=80\n")
    assert found.urls == ["https://a.example/1.jpg", "https://a.example/2.jpg",
                          "https://a.example/3.jpg?w=100,h=80"]
    assert found.repeated == 1 and found.notes() == ["1 repeated URL was taken once"]


def test_the_lessons_snippet_csv_is_read_with_its_nulls_reported():
    # What the browser snippet saves: escape(urls.join('\n')), with 'null' for images it missed.
    text = "\ufeffhttps://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9&s\nnull\nhttp://b.example/x.png\n"
    found = downloads.parse_url_list(text)
    assert found.urls == ["https://encrypted-tbn0.gstatic.com/images?q=tbn:ANd9&s",
                          "http://b.example/x.png"]
    assert found.not_urls == [(2, "null")]
    assert "1 line is not a web address: line 2 ('null')" in found.notes()


def test_a_csv_with_a_header_and_columns_gives_the_url_column():
    text = 'url,label\n"https://a.example/1.jpg",grizzly\nhttps://a.example/2.jpg,black\n'
    assert downloads.parse_url_list(text).urls == ["https://a.example/1.jpg",
                                                   "https://a.example/2.jpg"]


def test_the_maximum_count_takes_the_first_urls():
    text = "\n".join(f"https://a.example/{i}.jpg" for i in range(10))
    found = downloads.parse_url_list(text, limit=3)
    assert found.urls == [f"https://a.example/{i}.jpg" for i in range(3)]
    assert found.over_limit == 7
    assert found.notes() == ["7 URLs past the maximum count were left out"]


# ---- downloading: every URL's outcome is what the server did ---------------------------------

def test_a_mixed_list_is_reported_url_by_url_and_only_good_distinct_pictures_are_stored(tmp_path):
    data_dir = tmp_path / "data"
    with web_of_pictures() as base:
        job = run_download(data_dir, mixed_list(base))
        assert job["status"] == "succeeded", job
        seen = outcomes(data_dir, job["id"])
        assert set(seen) == {base + p for p in (*TWINS, *EXPECTED)}
        for path, (status, words) in EXPECTED.items():
            item = seen[base + path]
            assert item["status"] == status and words in item["detail"], (path, item)
        stored, copy = sorted((seen[base + p] for p in TWINS),
                              key=lambda i: i["status"] != "stored")
        assert (stored["status"], copy["status"]) == ("stored", "duplicate")
        assert copy["image_id"] == stored["image_id"]
        assert copy["detail"] == f"same picture as image #{stored['image_id']}"
        assert job["message"] == "Stored 4, duplicates 1, failed 4."
        assert (job["done"], job["total"]) == (9, 9)

        ds = Dataset(data_dir)
        assert ds.class_counts()["bears"]["train"] + ds.class_counts()["bears"]["valid"] == 4
        rows = ds.conn.execute("SELECT original_name, source FROM images").fetchall()
        assert sorted(r["original_name"] for r in rows) == sorted(
            [stored["key"]] + [base + f"/good{i}.jpg" for i in range(1, 4)])
        assert {r["source"] for r in rows} == {"url"}
        csv_lines = (data_dir / "cleaned.csv").read_text().splitlines()
        assert len(csv_lines) == 5 and all(",bears," in line for line in csv_lines[1:])
        files = sorted((data_dir / "images").rglob("*.*"))
        stamps = [f.stat().st_mtime_ns for f in files]

        again = run_download(data_dir, mixed_list(base), label="bears")  # the same list twice
        again_seen = outcomes(data_dir, again["id"])
        assert [again_seen[base + f"/good{i}.jpg"]["status"] for i in range(4)] == ["duplicate"] * 4
        assert sorted((data_dir / "images").rglob("*.*")) == files
        assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing overwritten
        ds.close()


def test_downloads_run_in_parallel(tmp_path):
    with web_of_pictures({"/late.jpg": answering_after(0.3)}) as base:
        urls = [f"{base}/late.jpg?n={n}" for n in range(16)]
        started = time.monotonic()
        job = run_download(tmp_path / "data", urls, workers=8)
        elapsed = time.monotonic() - started
    assert job["message"] == "Stored 16, duplicates 0, failed 0."
    assert elapsed < 16 * 0.3 / 3, f"16 downloads of 0.3 s took {elapsed:.1f} s with 8 at a time"


def test_private_addresses_are_blocked_unless_allowed(tmp_path):
    with web_of_pictures() as base:
        job = jobs.run_here(tmp_path, "download", downloads.job_params(
            {**SETTINGS, "FETCH_ALLOW_NETS": ""}, [base + "/good0.jpg"]))
        item = jobs.items(tmp_path, job["id"])[0]
    assert item["status"] == "failed" and item["detail"].startswith("blocked address:")


def test_a_long_download_keeps_its_heartbeat(tmp_path, monkeypatch):
    # A job lives longer than the stale limit only if its heartbeat thread really beats.
    monkeypatch.setattr(jobs, "HEARTBEAT_SECONDS", 0.1)
    monkeypatch.setattr(jobs, "STALE_SECONDS", 0.6)
    seen = []

    with web_of_pictures({"/late.jpg": answering_after(0.3)}) as base:
        urls = [f"{base}/late.jpg?n={n}" for n in range(6)]
        job = jobs.run_here(tmp_path, "download", downloads.job_params(SETTINGS, urls, workers=1),
                            on_update=lambda s: seen.append(jobs.get(tmp_path, s["id"])["status"]))
    assert job["status"] == "succeeded", job["message"]
    assert set(seen[:-1]) == {"running"} and len(seen) >= 7


# ---- from the admin pages and the terminal --------------------------------------------------

@pytest.fixture
def url_app(tmp_path):
    from tests.conftest import make_app

    return make_app(tmp_path / "data", FETCH_ALLOW_NETS=LOCAL_NETS, FETCH_MAX_BYTES=60_000,
                    FETCH_DEADLINE=2.0)


def test_an_admin_pastes_a_list_and_watches_each_url_arrive(url_app, tmp_path):
    from tests.conftest import AdminSession

    client = url_app.test_client()
    admin = AdminSession(client)
    admin.login()
    data_dir = url_app.config["DATA_DIR"]
    client.post("/label/classes", data={"name": "bears", "csrf_token": admin.csrf_token()})
    with web_of_pictures() as base:
        listing = tmp_path / "urls.csv"
        listing.write_text("\n".join(mixed_list(base)[4:]) + "\nnull\n")
        r = client.post("/label/urls", data={
            "urls": "\n".join(mixed_list(base)[:4]), "label": "bears", "workers": "4",
            "url_file": (listing.open("rb"), "urls.csv"), "csrf_token": admin.csrf_token()})
        assert r.status_code == 303
        job_id = int(r.headers["Location"].rstrip("/").rsplit("/", 1)[1])
        job = wait_for(data_dir, job_id)
    assert job["status"] == "succeeded", jobs.read_log(data_dir, job_id)
    assert job["params"]["workers"] == 4
    page = client.get(f"/label/imports/{job_id}").get_data(as_text=True)
    assert "<progress" in page
    assert '<p class="flash warning" role="status">1 line is not a web address' in page
    assert "stored: <strong>" not in page  # the counts once, as the items' pills
    for path in (*TWINS, *EXPECTED):
        assert base + path in page
    assert page.count('class="stored"') == 4 and page.count('class="failed"') == 4
    assert 'href="/media/' in page  # stored and duplicate pictures are linked
    twin = re.search(r'same picture as <a class="image-link" href="/media/(\d+)">image #(\d+)</a>',
                     page)
    assert twin and twin.group(1) == twin.group(2)  # named once, as the link
    overview = client.get("/label/").get_data(as_text=True)
    assert f'/label/imports/{job_id}"' in overview and "stored: 4" in overview


def test_an_import_not_started_yet_shows_no_count_and_no_phase_once_done(admin, client):
    data_dir = client.application.config["DATA_DIR"]
    with db.session(data_dir) as conn:
        job_id = jobs.create(conn, "download", {"urls": ["https://a.example/1.jpg"]})
    page = client.get(f"/label/imports/{job_id}").get_data(as_text=True)
    assert '<span class="job-count"></span>' in page  # not a lone "0"
    with db.session(data_dir) as conn:
        conn.execute("UPDATE jobs SET status = 'succeeded', phase = 'downloading', done = 1, "
                     "total = 1, finished = 1 WHERE id = ?", (job_id,))
    page = client.get(f"/label/imports/{job_id}").get_data(as_text=True)
    assert '<span class="job-count">1 / 1</span>' in page
    assert '<span class="job-phase"></span>' in page  # not "succeeded downloading"


def test_a_list_without_urls_is_refused_on_its_form_with_what_was_typed(admin, client):
    client.post("/label/classes", data={"name": "bears", "csrf_token": admin.csrf_token()})
    r = client.post("/label/urls", data={"urls": "null\nnot a url\n", "label": "bears",
                                         "max_count": "5", "csrf_token": admin.csrf_token()})
    assert r.status_code == 400
    page = r.get_data(as_text=True)
    assert 'id="urls-form"' in page  # the form again, not an error page
    assert "There are no http(s) URLs in that list. 2 lines are not web addresses" in page
    assert ">null\nnot a url\n</textarea>" in page
    assert '<option value="bears" selected>' in page and 'value="5"' in page
    r = client.post("/label/urls", data={"urls": "", "csrf_token": admin.csrf_token()})
    assert r.status_code == 400 and "The list is empty" in r.get_data(as_text=True)
    assert jobs.recent(client.application.config["DATA_DIR"]) == []


def test_the_terminal_downloads_a_list_with_a_summary(runner, app, tmp_path):
    app.config.update(FETCH_ALLOW_NETS=LOCAL_NETS, FETCH_MAX_BYTES=60_000, FETCH_DEADLINE=2.0)
    with web_of_pictures() as base:
        listing = tmp_path / "grizzly.csv"
        listing.write_text("\n".join(mixed_list(base)))
        result = runner.invoke(args=["download", "--label", "grizzly", str(listing)])
    assert result.exit_code == 0, result.output
    assert "stored 4, duplicates 1, failed 4" in result.output
    assert f"failed {base}/gone.jpg: HTTP error: the server answered HTTP 404" in result.output
    ds = Dataset(app.config["DATA_DIR"])
    assert sum(ds.class_counts()["grizzly"].values()) == 4
    ds.close()
    bad = runner.invoke(args=["download", "--label", "../etc", str(listing)])
    assert bad.exit_code != 0 and "not a usable class name" in bad.output


def test_a_cancelled_download_keeps_what_it_stored(tmp_path):
    with web_of_pictures({"/late.jpg": answering_after(0.2)}) as base:
        urls = [f"{base}/late.jpg?n={n}" for n in range(60)]
        job_id = jobs.start(tmp_path, "download", downloads.job_params(SETTINGS, urls, workers=2))
        deadline = time.monotonic() + 20
        while jobs.get(tmp_path, job_id)["done"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        jobs.cancel(tmp_path, job_id)
        job = wait_for(tmp_path, job_id)
    assert job["status"] == "cancelled"
    stored = [i for i in jobs.items(tmp_path, job_id) if i["status"] == "stored"]
    assert 3 <= len(stored) < 60
    ds = Dataset(tmp_path)
    assert ds.unlabeled_count() == len(stored)  # every stored picture is in the store
    ds.close()
    assert Path(tmp_path, "cleaned.csv").exists()
