"""Lesson 2's SGD from scratch, animated: the page, its trajectory as JSON, and a GIF."""
import io
from dataclasses import asdict

from flask import Blueprint, abort, render_template, request, send_file

from webapp.lesson import sgd
from webapp.web import limits

bp = Blueprint("learn", __name__, url_prefix="/learn")


def _controls(args):
    """Return the form's values: what was asked, else the chosen model's defaults."""
    model = args.get("model") if args.get("model") in sgd.MODELS else "linear"
    return {k: args.get(k) or str(v) for k, v in asdict(sgd.defaults(model)).items()}


def _page(run, error=None):
    defaults = {m: asdict(sgd.defaults(m)) for m in sgd.MODELS}
    return render_template("learn/sgd.html", run=run, error=error, form=_controls(request.args),
                           defaults=defaults, words=sgd.WORDS)


@bp.get("/sgd")
@limits.sgd_runs
def sgd_page():
    try:
        run = sgd.fit(sgd.parse_options(request.args))
    except ValueError as e:
        return _page(None, str(e)), 400
    return _page(run)


@bp.get("/sgd.json")
@limits.sgd_runs
def sgd_json():
    try:
        run = sgd.fit(sgd.parse_options(request.args))
    except ValueError as e:
        return {"error": str(e)}, 400
    return sgd.to_json(run)


@bp.get("/sgd.gif")
@limits.sgd_runs
def sgd_gif():
    try:
        opts = sgd.parse_options(request.args)
    except ValueError as e:
        abort(400, str(e))
    gif = sgd.gif(opts)
    name = f"sgd-{opts.model}-lr{opts.lr:g}-bs{opts.bs}-epochs{opts.epochs}.gif"
    return send_file(io.BytesIO(gif), mimetype="image/gif", as_attachment=True, download_name=name)
