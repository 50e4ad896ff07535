"""Admin login: one password, stored as a hash, attempts rate-limited."""
import functools
import secrets
import sys
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField
from wtforms.validators import DataRequired

from webapp.core import db

bp = Blueprint("auth", __name__)
limiter = Limiter(get_remote_address, storage_uri="memory://", default_limits=[])
PASSWORD_KEY = "admin_password_hash"


class LoginForm(FlaskForm):
    password = PasswordField("Admin password", validators=[DataRequired()])


def ensure_admin_password(data_dir, password=None, out=None):
    """Store the admin password's hash: the given one, else a generated one printed once."""
    with db.session(data_dir) as conn:
        stored = db.get_setting(conn, PASSWORD_KEY)
        if password:
            if not stored or not check_password_hash(stored, password):
                db.set_setting(conn, PASSWORD_KEY, generate_password_hash(password))
        elif not stored:
            generated = secrets.token_urlsafe(12)
            db.set_setting(conn, PASSWORD_KEY, generate_password_hash(generated))
            print(f"\n  Winnow admin password (shown once; set WINNOW_ADMIN_PASSWORD to choose "
                  f"your own): {generated}\n", file=out or sys.stderr, flush=True)


def password_matches(data_dir, password):
    """Check a password against the stored hash."""
    with db.session(data_dir) as conn:
        stored = db.get_setting(conn, PASSWORD_KEY)
    return bool(stored) and check_password_hash(stored, password)


def is_admin():
    """Tell whether this request comes from a logged-in admin."""
    return session.get("admin") is True


def admin_required(view):
    """Send anyone who is not logged in to the login page (401 JSON for JSON routes)."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not is_admin():
            wants_json = (request.path.endswith(".json")
                          or request.accept_mimetypes.best == "application/json")
            if wants_json:
                return {"error": "log in as admin first"}, 401
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def _safe_next(target):
    """Return a same-site path to go to after login, never another host."""
    parts = urlsplit(target or "")
    if parts.scheme or parts.netloc or not (target or "").startswith("/"):
        return url_for("admin.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"],
               error_message="Too many login attempts; wait a minute and try again.")
def login():
    form = LoginForm()
    if form.validate_on_submit():
        if password_matches(current_app.config["DATA_DIR"], form.password.data):
            session.clear()
            session["admin"] = True
            session.permanent = True
            flash("Logged in.")
            return redirect(_safe_next(request.args.get("next")))
        flash("That password is not right.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    flash("Logged out.")
    return redirect(url_for("classify.index"))


def init_app(app):
    """Register login, the rate limiter and the admin password."""
    limiter.init_app(app)
    app.register_blueprint(bp)
    app.jinja_env.globals["is_admin"] = is_admin
    ensure_admin_password(app.config["DATA_DIR"], app.config["ADMIN_PASSWORD"])
