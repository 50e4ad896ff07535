"""Admin pages show stored images: the file itself, or a cached thumbnail."""
import io

from PIL import Image

from tests.pictures import encode, tinted


def stored(app, data, label="red"):
    from webapp.dataset.store import Dataset

    ds = Dataset(app.config["DATA_DIR"])
    try:
        return ds.add_image(data, label=label).image_id
    finally:
        ds.close()


def test_an_admin_sees_a_stored_image_and_its_thumbnail(app, admin, client):
    import random

    image_id = stored(app, encode(tinted("red", random.Random(1), 300), "PNG"))
    r = client.get(f"/media/{image_id}")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert Image.open(io.BytesIO(r.data)).size == (300, 300)
    r = client.get(f"/media/{image_id}?size=128")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.data)).size) == 128
    assert client.get(f"/media/{image_id}?size=7").status_code == 400
    assert client.get("/media/999").status_code == 404


def test_deleted_images_are_still_shown_for_undo(app, admin, client):
    import random

    from webapp.dataset.store import Dataset

    image_id = stored(app, encode(tinted("blue", random.Random(2), 64), "PNG"), "blue")
    ds = Dataset(app.config["DATA_DIR"])
    ds.change("delete", image_id=image_id)
    ds.close()
    assert client.get(f"/media/{image_id}?size=128").status_code == 200


def test_images_need_a_login(app):
    assert app.test_client().get("/media/1").status_code in (302, 401)
