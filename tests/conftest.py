"""Fixtures: an app on an isolated data dir, and one tiny trained model per session."""
import contextlib
import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

os.environ.setdefault("WINNOW_OFFLINE", "1")  # no network here: never try to download weights
os.environ.setdefault("OMP_NUM_THREADS", "2")

from tests.pictures import tinted_set  # noqa: E402
from webapp.app import create_app  # noqa: E402
from webapp.dataset.store import Dataset  # noqa: E402

PASSWORD = "correct horse"


def make_app(data_dir, **overrides):
    """Create an app on `data_dir` with test settings."""
    return create_app({"TESTING": True, "DATA_DIR": str(data_dir), "ADMIN_PASSWORD": PASSWORD,
                       "LOAD_MODEL": False, **overrides})


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path / "data")


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset(tmp_path / "data")
    yield ds
    ds.close()


class AdminSession:
    """A client logged in as admin that knows the page's CSRF token."""

    def __init__(self, client):
        self.client = client

    def csrf_token(self):
        page = self.client.get("/login").get_data(as_text=True)
        return page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]

    def login(self, password=PASSWORD):
        return self.client.post("/login", data={"password": password,
                                                "csrf_token": self.csrf_token()})


@pytest.fixture
def admin(client):
    s = AdminSession(client)
    assert s.login().status_code == 302
    return s


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    """A data dir with a two-colour dataset and a tiny resnet18 trained on it (once per session)."""
    from webapp.model import training

    data_dir = tmp_path_factory.mktemp("trained") / "data"
    ds = Dataset(data_dir)
    for label, data in tinted_set(per_class=32):
        ds.add_image(data, label=label, source="test")
    ds.close()
    # Small batches: BatchNorm's running statistics need enough steps to settle. The rate is
    # left to lr_find, within its budget (its floor: 16 iterations).
    opts = training.TrainOptions(arch="resnet18", size=32, epochs=2, fine_tune_epochs=2, bs=4,
                                 pretrained=False)
    version, metrics = training.train(data_dir, opts, log=lambda *a: None)
    return data_dir, version, metrics


@pytest.fixture
def trained_copy(trained_dir, tmp_path):
    """A private copy of the trained data dir that a test may change."""
    src, version, metrics = trained_dir
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst, version, metrics


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def browser():
    """Debian's Chromium under Playwright; missing, it skips locally and fails under CI."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's chromium for the browser tests; .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def serving(app):
    """Serve `app` on 127.0.0.1 on a free port in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
