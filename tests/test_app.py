"""The app serves the active model from its data dir, and says plainly when it cannot."""
from tests.conftest import make_app
from webapp.model import registry


def test_without_a_model_the_app_runs_and_says_so(client):
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and "no model" in r.get_json()["error"]
    assert "No model is being served yet" in client.get("/").get_data(as_text=True)


def test_the_active_model_is_loaded_when_the_app_is_created(trained_dir):
    data_dir, version, _ = trained_dir
    client = make_app(data_dir, LOAD_MODEL=True).test_client()
    ready = client.get("/readyz").get_json()
    assert (ready["status"], ready["model"], ready["runtime"]) == ("ready", version, "onnx")
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


def second_version(data_dir, version):
    """Register a copy of `version` under a new id, as a retrain would."""
    import shutil
    new_dir = registry.new_version_dir(data_dir)
    shutil.copyfile(registry.models_dir(data_dir) / version / registry.EXPORT,
                    new_dir / registry.EXPORT)
    return registry.record_version(data_dir, new_dir, {"error_rate": None}, "trained")


def test_activating_a_version_swaps_it_in_without_a_restart(trained_copy, monkeypatch):
    data_dir, v1, _ = trained_copy
    v2 = second_version(data_dir, v1)
    app = make_app(data_dir, LOAD_MODEL=True)
    monkeypatch.setattr(type(app.extensions["winnow.model"]), "CHECK_EVERY", 0.0)
    client = app.test_client()
    assert client.get("/readyz").get_json()["model"] == v1
    registry.activate(data_dir, v2)
    assert client.get("/readyz").get_json()["model"] == v2
    # A tampered version is refused; the one being served stays.
    (registry.models_dir(data_dir) / v1 / registry.EXPORT).write_bytes(b"not the recorded file")
    registry.activate(data_dir, v1)
    assert client.get("/readyz").get_json()["model"] == v2
    assert app.extensions["winnow.model"].error.endswith("refusing to unpickle it")


def test_metrics_count_requests_predictions_and_the_active_model(trained_dir):
    import io
    import random

    from tests.pictures import jpeg, tinted
    data_dir, version, _ = trained_dir
    client = make_app(data_dir, LOAD_MODEL=True).test_client()
    client.post("/api/classify", data=jpeg(tinted("red", random.Random(1), 40)),
                content_type="image/jpeg")
    client.post("/api/classify", data={"file": (io.BytesIO(b"junk"), "x.jpg")})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'winnow_requests_total{endpoint="/api/classify",status="200"}' in text
    assert 'winnow_requests_total{endpoint="/api/classify",status="400"}' in text
    assert 'winnow_predictions_total{label="red"}' in text
    assert f'winnow_active_model{{version="{version}"}} 1.0' in text
    assert 'winnow_request_seconds_bucket{endpoint="/api/classify"' in text
