"""The terminal commands: import from fastai's layouts, export back, and train."""
import csv
import random

from tests.pictures import encode, jpeg, tinted
from webapp.model.training import TrainOptions


def make_folder(root):
    rng = random.Random(9)
    for label in ("red", "blue"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.jpg").write_bytes(jpeg(tinted(label, rng)))
    (root / "red" / "copy.jpg").write_bytes((root / "red" / "0.jpg").read_bytes())
    (root / "red" / "notes.jpg").write_text("not a picture")
    (root / "loose.png").write_bytes(encode(tinted("blue", rng), "PNG"))
    return root


def test_import_folder_then_export_round_trip(runner, app, tmp_path):
    src = make_folder(tmp_path / "downloads")
    r = runner.invoke(args=["import-folder", str(src)])
    assert r.exit_code == 0, r.output
    assert "stored 7, duplicates 1, rejected 1" in r.output
    assert "notes.jpg: not an image" in r.output
    r = runner.invoke(args=["export-folder", str(tmp_path / "out")])
    assert r.exit_code == 0 and "exported 6 images in 2 class folders" in r.output
    exported = {(p.parent.name, p.read_bytes()) for p in (tmp_path / "out").rglob("*.*")}
    originals = {(p.parent.name, p.read_bytes()) for p in src.glob("*/[0-9].jpg")}
    assert exported == originals


def test_import_csv_from_a_fastai_v1_cleaner(runner, tmp_path):
    root = make_folder(tmp_path / "data")
    with open(root / "cleaned.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "label"])
        w.writerow(["red/0.jpg", "blue"])  # relabelled in the cleaner
        w.writerow(["blue/1.jpg", "blue"])
    r = runner.invoke(args=["import-csv", str(root), str(root / "cleaned.csv")])
    assert r.exit_code == 0 and "stored 2, duplicates 0, rejected 0" in r.output


def test_import_csv_refuses_paths_outside_its_folder(runner, tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "bad.csv").write_text("name,label\n../../etc/passwd,red\n")
    r = runner.invoke(args=["import-csv", str(root), str(root / "bad.csv")])
    assert r.exit_code != 0 and "points outside" in r.output


def test_train_refuses_clearly_without_data(runner):
    r = runner.invoke(args=["train", "--arch", "resnet18"])
    assert r.exit_code != 0 and "cleaned.csv does not exist yet" in r.output


def test_train_help_shows_the_recipes_own_defaults(runner):
    out = runner.invoke(args=["train", "--help"]).output
    d = TrainOptions()
    for option, value in (("--arch", d.arch), ("--size", d.size), ("--epochs", d.epochs),
                          ("--fine-tune-epochs", d.fine_tune_epochs), ("--bs", d.bs),
                          ("--lr-find-iters", "(auto)")):
        shown = out[out.index(f"  {option} "):].split("[default: ", 1)[1].split("]", 1)[0]
        assert shown == str(value), option


def test_demo_skips_when_a_model_is_active(runner, app):
    from webapp.model import registry
    (registry.models_dir(app.config["DATA_DIR"])).mkdir(parents=True)
    (registry.models_dir(app.config["DATA_DIR"]) / "ACTIVE").write_text("some-version\n")
    r = runner.invoke(args=["demo", "--if-no-model"])
    assert r.exit_code == 0 and "no demo needed" in r.output


def test_demo_pictures_are_varied_and_labeled():
    from webapp.core.images import intake
    from webapp.lesson import demo

    pics = list(demo.scene_images(per_class=4, size=48))
    assert [label for label, _ in pics[:3]] == list(demo.SCENES)
    assert len({data for _, data in pics}) == len(pics)
    assert all(intake(data).image.size == (48, 48) for _, data in pics)
