"""SGD from scratch: the lesson's line and the homework's classes are fitted, and shown."""
import io
from dataclasses import replace

import pytest
from PIL import Image

from webapp.app import create_app
from webapp.lesson import sgd


@pytest.fixture
def app(tmp_path):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path), "LOAD_MODEL": False,
                      "ADMIN_PASSWORD": "pw"})
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.mark.parametrize("seed", [sgd.SEED, 0, 1, 2])
def test_sgd_recovers_the_lessons_line(seed):
    run = sgd.fit(replace(sgd.defaults(), seed=seed))
    slope, intercept = run.steps[-1].params
    assert not run.diverged and run.reason is None
    assert abs(slope - 3) < 0.1
    assert abs(intercept - 2.5) < 0.15  # y = 3x + 2 + uniform(0, 1) noise, whose mean is 0.5
    assert run.steps[-1].loss < run.steps[0].loss / 50
    assert len(run.steps) == 1 + 10 * 10  # step 0, then 10 epochs of 100/10 minibatches


def test_logistic_regression_separates_the_blobs():
    run = sgd.fit(sgd.defaults("logistic"))
    first, last = run.steps[0], run.steps[-1]
    assert not run.diverged
    assert last.accuracy >= 0.95 and first.accuracy < 0.8
    assert last.loss < first.loss / 5
    assert len(last.params) == 3 and sorted(set(run.labels)) == [0, 1]


def test_a_learning_rate_ten_times_too_high_is_reported_as_diverged():
    opts = sgd.defaults()
    run = sgd.fit(replace(opts, lr=opts.lr * 10))
    assert run.diverged
    assert "if the loss explodes, the learning rate is too high" in run.reason
    assert len(run.steps) < 20  # stopped as soon as it blew up
    assert run.summary() == run.reason


def test_the_same_seed_gives_the_same_trajectory():
    for model in sgd.MODELS:
        a, b = sgd.fit(sgd.defaults(model)), sgd.fit(sgd.defaults(model))
        assert a.steps == b.steps and a.points == b.points
        other = sgd.fit(replace(sgd.defaults(model), seed=7))
        assert other.points != a.points


@pytest.mark.parametrize("args, message", [
    ({"lr": "0"}, "learning rate must be above 0"),
    ({"lr": "-1"}, "learning rate must be above 0"),
    ({"lr": "101"}, "at most 100"),
    ({"lr": "fast"}, "learning rate must be a number"),
    ({"lr": "nan"}, "finite"),
    ({"bs": "0"}, "batch size must be between 1 and 100"),
    ({"bs": "101"}, "batch size must be between 1 and 100"),
    ({"bs": "2.5"}, "batch size must be an integer"),
    ({"epochs": "0"}, "epochs must be between 1 and 500"),
    ({"epochs": "501"}, "epochs must be between 1 and 500"),
    ({"model": "resnet"}, "model must be one of linear, logistic"),
    ({"bs": "1", "epochs": "500"}, "at most 10000"),
])
def test_bad_options_are_refused_with_a_clear_message(args, message):
    with pytest.raises(ValueError, match=message):
        sgd.parse_options(args)


def test_blank_options_mean_the_models_defaults():
    assert sgd.parse_options({}) == sgd.defaults()
    assert sgd.parse_options({"model": "logistic", "lr": ""}) == sgd.defaults("logistic")


def test_the_gif_has_many_frames_but_not_one_per_step():
    gif = sgd.render_gif(sgd.fit(sgd.defaults()))  # 101 steps, thinned
    im = Image.open(io.BytesIO(gif))
    assert im.format == "GIF" and 20 <= im.n_frames <= 60


def test_the_page_has_the_animation_controls_and_the_words(client):
    r = client.get("/learn/sgd")
    page = r.get_data(as_text=True)
    assert r.status_code == 200
    for needle in ('id="sgd-canvas"', 'id="sgd-status"', 'name="lr"', 'name="bs"', 'name="epochs"',
                   'name="model"', "learn/sgd.js", "/learn/sgd.gif?", "Minibatch", "Epoch",
                   "Learning rate", "Architecture", "Parameters", "Loss function", "SGD"):
        assert needle in page
    assert "After 100 steps" in page  # the server's summary, for readers without JS


def test_the_page_says_why_a_run_diverged_even_without_js(client):
    page = client.get("/learn/sgd?lr=2").get_data(as_text=True)
    assert "the learning rate is too high" in page


def test_bad_options_re_render_the_page_with_the_error(client):
    r = client.get("/learn/sgd?lr=0&bs=7")
    page = r.get_data(as_text=True)
    assert r.status_code == 400
    assert "learning rate must be above 0" in page and 'value="7"' in page


def test_the_json_is_the_trajectory(client):
    data = client.get("/learn/sgd.json?model=linear&lr=0.2&bs=10&epochs=10").get_json()
    assert data["model"] == "linear" and data["diverged"] is False
    assert data["steps_total"] == 100 and len(data["steps"]) == 101 and len(data["points"]) == 100
    assert abs(data["steps"][-1]["params"][0] - 3) < 0.1
    logistic = client.get("/learn/sgd.json?model=logistic").get_json()
    assert len(logistic["steps"][0]["params"]) == 3 and logistic["steps"][-1]["accuracy"] >= 0.95


def test_the_json_reports_divergence_and_bad_options(client):
    data = client.get("/learn/sgd.json?lr=2").get_json()
    assert data["diverged"] is True and "learning rate is too high" in data["reason"]
    r = client.get("/learn/sgd.json?bs=0")
    assert r.status_code == 400 and "batch size" in r.get_json()["error"]


def test_the_gif_is_a_download(client):
    r = client.get("/learn/sgd.gif?epochs=3&lr=0.3")
    assert r.status_code == 200 and r.mimetype == "image/gif"
    assert r.headers["Content-Disposition"].startswith("attachment")
    assert Image.open(io.BytesIO(r.data)).n_frames >= 20
    assert client.get("/learn/sgd.gif?epochs=0").status_code == 400
