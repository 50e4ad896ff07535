"""Terminal commands: flask --app wsgi import-folder | import-csv | export-folder | train | demo,
download (a URL list), set-password and node-token (create | list | revoke)."""
import click
from flask import current_app
from flask.cli import with_appcontext

from webapp.dataset.store import Dataset, StoreError, check_class_name
from webapp.ingest import downloads, folders
from webapp.jobs import runner as jobs
from webapp.lesson import demo
from webapp.model import node_tokens, registry, training
from webapp.web import auth, forms
from webapp.web.terminal import run_in_terminal


def _dataset():
    return Dataset.from_config(current_app.config)


def _import(items, source):
    dataset = _dataset()
    try:
        with click.progressbar(length=len(items), label="Importing", show_pos=True) as bar:
            last = [0]

            def progress(done, total):
                bar.update(done - last[0])
                last[0] = done

            summary = folders.import_items(dataset, items, source, progress)
    finally:
        dataset.close()
    for line in summary.lines():
        click.echo(line)


@click.command("import-folder")
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@with_appcontext
def import_folder_command(path):
    """Import a folder of class sub-folders (top-level files come in unlabeled)."""
    try:
        items = folders.folder_items(path)
    except StoreError as e:
        raise click.ClickException(str(e)) from e
    _import(items, "folder")


@click.command("import-csv")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@with_appcontext
def import_csv_command(root, csv_file):
    """Import images listed in a fastai cleaned.csv (name,label relative to ROOT)."""
    try:
        items = folders.csv_items(root, csv_file)
    except StoreError as e:
        raise click.ClickException(str(e)) from e
    _import(items, "csv")


@click.command("export-folder")
@click.argument("dest", type=click.Path(file_okay=False))
@with_appcontext
def export_folder_command(dest):
    """Copy the labeled images into DEST/<class>/, the layout fastai loads."""
    dataset = _dataset()
    try:
        n = folders.export_folder(dataset, dest)
        n_classes = len(dataset.class_names())
    finally:
        dataset.close()
    click.echo(f"exported {n} images in {n_classes} class folders to {dest}")


def _train(params):
    """Run the train job here, the same job the admin page starts, with progress bars."""
    data_dir = current_app.config["DATA_DIR"]
    params = {**params, **forms.recipe_settings(current_app.config)}
    try:
        training.preflight(data_dir, training.TrainOptions.from_params(params))
    except training.TrainingRefused as e:
        raise click.ClickException(str(e)) from e
    return run_in_terminal("train", params, "training")["result"]["version"]


DEFAULTS = training.TrainOptions()  # the recipe's defaults, shown by train --help


@click.command("train")
@click.option("--arch", default=DEFAULTS.arch, type=click.Choice(training.ARCHS),
              show_default=True)
@click.option("--size", default=DEFAULTS.size, show_default=True, help="image size in pixels")
@click.option("--epochs", default=DEFAULTS.epochs, show_default=True,
              help="epochs with the body frozen (from scratch: one cycle of both)")
@click.option("--fine-tune-epochs", default=DEFAULTS.fine_tune_epochs, show_default=True,
              help="epochs unfrozen")
@click.option("--lr", type=float, default=DEFAULTS.lr,
              help="learning rate (default: lr_find's suggestion; from scratch, its valley but "
                   "at least 3e-3)")
@click.option("--bs", default=DEFAULTS.bs, show_default=True, help="batch size")
@click.option("--pretrained/--no-pretrained", default=DEFAULTS.pretrained,
              help="use ImageNet weights (default: when torchvision can load them)")
@click.option("--lr-find-iters", type=int, default=DEFAULTS.lr_find_iters, show_default="auto",
              help="lr_find's iterations at most (auto: a quarter of the run's training batches, "
                   "16 to 100)")
@click.option("--no-activate", is_flag=True, help="register the new version without serving it")
@with_appcontext
def train_command(arch, size, epochs, fine_tune_epochs, lr, bs, pretrained, lr_find_iters,
                  no_activate):
    """Train from cleaned.csv with the lesson's recipe and register a new model version."""
    _train({"arch": arch, "size": size, "epochs": epochs, "fine_tune_epochs": fine_tune_epochs,
            "lr": lr, "bs": bs, "pretrained": pretrained, "lr_find_iters": lr_find_iters,
            "activate": not no_activate})


@click.command("demo")
@click.option("--per-class", default=60, show_default=True, help="pictures per class")
@click.option("--if-no-model", is_flag=True, help="do nothing when a model is active already")
@with_appcontext
def demo_command(per_class, if_no_model):
    """Make a small synthetic dataset (day, night and sunset landscapes) and train a model on it."""
    data_dir = current_app.config["DATA_DIR"]
    if if_no_model and registry.active_version(data_dir):
        click.echo(f"model {registry.active_version(data_dir)} is active; no demo needed")
        return
    dataset = _dataset()
    try:
        with click.progressbar(length=per_class * len(demo.SCENES),
                               label="Drawing pictures") as bar:
            results = demo.add_demo_images(dataset, per_class, progress=lambda d, t: bar.update(1))
    finally:
        dataset.close()
    click.echo(f"demo dataset: {sum(r.status == 'stored' for r in results)} new pictures of "
               f"{', '.join(demo.SCENES)}")
    # From scratch, small and quick, the recipe's epochs; lr_find's suggestion is too timid
    # for random weights.
    _train({"arch": "resnet18", "size": 64, "bs": 8, "lr": 3e-3, "pretrained": False,
            "lr_find_iters": 50})


@click.command("download")
@click.option("--label", default=None, help="the class the pictures go to (default: unlabeled)")
@click.option("--max", "max_count", type=int, default=None, help="at most this many URLs")
@click.option("--workers", default=downloads.DEFAULT_WORKERS, show_default=True,
              help="downloads at a time")
@click.argument("url_file", type=click.File("r", encoding="utf-8", errors="replace"))
@with_appcontext
def download_command(label, max_count, workers, url_file):
    """Download the images a URL list names (one per line, or the lesson's CSV) into the dataset."""
    found = downloads.parse_url_list(url_file.read(), max_count)
    for note in found.notes():
        click.echo(note)
    if not found.urls:
        raise click.ClickException("there are no http(s) URLs in that file")
    try:
        label = check_class_name(label) if label is not None else None
    except StoreError as e:
        raise click.ClickException(str(e)) from e
    cfg = current_app.config
    with click.progressbar(length=len(found.urls), label="Downloading", show_pos=True) as bar:
        def update(status):
            bar.update(status["done"] - bar.pos)

        job = jobs.run_here(cfg["DATA_DIR"], "download",
                            downloads.job_params(cfg, found.urls, label, workers, "cli"),
                            on_update=update)
    failed = [i for i in jobs.items(cfg["DATA_DIR"], job["id"], limit=downloads.MAX_URLS)
              if i["status"] == "failed"]
    counts = jobs.item_counts(cfg["DATA_DIR"], job["id"])
    click.echo(downloads.summary(counts) + f" (job #{job['id']}: {job['status']})")
    for item in failed:
        click.echo(f"  failed {item['key']}: {item['detail']}")
    if job["status"] != "succeeded":
        raise click.ClickException(job["message"])


@click.command("set-password")
@click.option("--password-stdin", is_flag=True,
              help="read the new password from the first line of standard input")
@with_appcontext
def set_password_command(password_stdin):
    """Change the admin password and log every admin session out."""
    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        password = click.prompt("New admin password", hide_input=True, confirmation_prompt=True)
    if not password.strip():
        raise click.ClickException("the password is empty")
    auth.set_password(current_app.config["DATA_DIR"], password)
    click.echo("Admin password changed; every admin session is logged out.")
    if current_app.config["ADMIN_PASSWORD"]:
        # The app stores WINNOW_ADMIN_PASSWORD whenever it starts, undoing this change.
        click.echo("WINNOW_ADMIN_PASSWORD is set: unset it, or the next start restores it.",
                   err=True)


@click.group("node-token")
def node_token_group():
    """Make, list and revoke the tokens serving nodes read the model registry with."""


@node_token_group.command("create")
@click.argument("name")
@with_appcontext
def create_node_token_command(name):
    """Make a token for the node NAME and print it, once, alone on standard output."""
    try:
        token_id, token = node_tokens.create(current_app.config["DATA_DIR"], name)
    except node_tokens.TokenRefused as e:
        raise click.ClickException(str(e)) from e
    click.echo(token)
    click.echo(f"Node token #{token_id}: set it as the node's WINNOW_NODE_TOKEN now; it is not "
               "shown again.", err=True)


@node_token_group.command("list")
@with_appcontext
def list_node_tokens_command():
    """List the node tokens, newest first (their hashes stay in the store)."""
    tokens = node_tokens.listing(current_app.config["DATA_DIR"])
    if not tokens:
        click.echo("no node tokens yet")
    for t in tokens:
        state = f"revoked {t['revoked']}" if t["revoked"] else "live"
        click.echo(f"#{t['id']}\t{t['name']}\tcreated {t['created']}\t"
                   f"last used {t['last_used'] or 'never'}\t{state}")


@node_token_group.command("revoke")
@click.argument("token_id", metavar="ID", type=click.IntRange(0, 2 ** 63 - 1))
@with_appcontext
def revoke_node_token_command(token_id):
    """Revoke the node token ID: a node using it is refused from its next request on."""
    try:
        revoked = node_tokens.revoke(current_app.config["DATA_DIR"], token_id)
    except node_tokens.TokenRefused as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"node token #{token_id} " + ("revoked" if revoked else "was revoked already"))


def init_app(app):
    """Register the commands."""
    for command in (import_folder_command, import_csv_command, export_folder_command,
                    train_command, demo_command, download_command, set_password_command,
                    node_token_group):
        app.cli.add_command(command)
