"""A browser upload sent in batches is one import, and one cut short says how much was sent."""
import io
import random
import re

import pytest

from tests.pictures import jpeg, tinted
from webapp.jobs import imports

UPLOAD = "5f" * 16


def picture(seed):
    return jpeg(tinted("red", random.Random(seed), 32))


def send_batch(client, admin, seeds, total, upload_id=UPLOAD):
    files = [(io.BytesIO(picture(s)), f"{s}.jpg") for s in seeds]
    return client.post("/label/upload.json", data={
        "files": files, "label": "", "upload_id": upload_id, "upload_total": str(total),
        "csrf_token": admin.csrf_token()}, content_type="multipart/form-data")


def import_rows(client):
    """Return the overview's recent imports as (number, status, outcome) texts."""
    page = client.get("/label/").get_data(as_text=True)
    table = page.split('<table class="imports">')[-1].split("</table>")[0]
    rows = re.findall(r"<tr>\s*<td><a[^>]*>(\d+)</a></td>\s*<td>[^<]*</td>\s*"
                      r'<td class="import-status">([^<]*)</td>\s*<td>(.*?)</td>', table, re.S)
    return [(int(n), status, re.sub(r"<[^>]+>|\s+", " ", outcome).split()) for n, status, outcome
            in rows]


def test_an_upload_in_three_batches_is_one_import_with_every_file(app, admin, client):
    for seeds in ([1, 2], [3, 4], [5]):
        assert send_batch(client, admin, seeds, total=5).status_code == 200
    [(number, status, outcome)] = import_rows(client)
    assert status == "succeeded" and " ".join(outcome) == "stored: 5"
    page = client.get(f"/label/imports/{number}").get_data(as_text=True)
    assert page.count('class="stored"') == 5
    assert "5 of 5 files sent, in 3 batches." in " ".join(page.split())


def test_an_upload_whose_page_was_left_says_it_was_cut_short(app, admin, client):
    send_batch(client, admin, [1, 2], total=6)
    send_batch(client, admin, [3, 4], total=6)
    [(number, status, outcome)] = import_rows(client)
    assert status == "sending" and outcome[:4] == ["4", "of", "6", "sent"]
    r = client.post("/label/upload/stopped", data={"upload_id": UPLOAD,
                                                   "csrf_token": admin.csrf_token()})
    assert r.status_code == 204
    [(_, status, outcome)] = import_rows(client)
    assert status == "cut short" and " ".join(outcome) == "4 of 6 sent stored: 4"
    page = " ".join(client.get(f"/label/imports/{number}").get_data(as_text=True).split())
    assert "4 of 6 files sent, in 2 batches: cut short, the page sending them stopped" in page


def test_an_upload_that_went_quiet_is_cut_short_too(app, admin, client, monkeypatch):
    send_batch(client, admin, [1], total=3)
    send_batch(client, admin, [2], total=3, upload_id="6a" * 16)  # another upload, finished later
    send_batch(client, admin, [3], total=3, upload_id="6a" * 16)
    assert [status for _, status, _ in import_rows(client)] == ["sending", "sending"]
    monkeypatch.setattr(imports, "STALLED_SECONDS", -1.0)
    rows = import_rows(client)
    assert [(status, outcome[:4]) for _, status, outcome in rows] == [
        ("cut short", ["2", "of", "3", "sent"]), ("cut short", ["1", "of", "3", "sent"])]


@pytest.mark.parametrize("upload_id, total", [("../../x", 3), (UPLOAD, "lots"), (UPLOAD, 0)])
def test_a_batch_that_names_its_upload_wrongly_is_refused(app, admin, client, upload_id, total):
    r = send_batch(client, admin, [1], total=total, upload_id=upload_id)
    assert r.status_code == 400 and "names its upload" in r.get_json()["error"]
    assert import_rows(client) == []
