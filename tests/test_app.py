"""The app serves the active model from its data dir, and says plainly when it cannot."""
from tests.conftest import make_app
from webapp import registry


def test_without_a_model_the_app_runs_and_says_so(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and "no model" in r.get_json()["error"]
    assert "No model is being served yet" in client.get("/").get_data(as_text=True)


def test_the_active_model_is_loaded_when_the_app_is_created(trained_dir):
    data_dir, version, _ = trained_dir
    client = make_app(data_dir, LOAD_MODEL=True).test_client()
    assert client.get("/readyz").get_json() == {"status": "ready", "model": version}
    page = client.get("/").get_data(as_text=True)
    assert version in page and "blue, red" in page


def test_a_tampered_model_is_not_served(trained_copy):
    data_dir, version, _ = trained_copy
    pkl = registry.models_dir(data_dir) / version / registry.EXPORT
    pkl.write_bytes(pkl.read_bytes()[:-1] + b"X")
    client = make_app(data_dir, LOAD_MODEL=True).test_client()
    r = client.get("/readyz")
    assert r.status_code == 503 and "recorded sha256" in r.get_json()["error"]
    assert "refusing to unpickle" in client.get("/").get_data(as_text=True)


def test_admin_sees_the_dataset_and_versions(trained_dir, tmp_path):
    from tests.conftest import AdminSession
    data_dir, version, metrics = trained_dir
    client = make_app(data_dir).test_client()
    AdminSession(client).login()
    page = client.get("/admin/").get_data(as_text=True)
    assert version in page and "no (from scratch)" in page
    assert "<td>red</td>" in page and "<td>blue</td>" in page
