"""Admin login: one password, stored as a hash, attempts rate-limited, sessions revocable."""
import functools
import secrets
import sys
import time
import unicodedata
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField
from wtforms.validators import DataRequired

from webapp.core import db
from webapp.web.limits import configured, limiter

bp = Blueprint("auth", __name__)
PASSWORD_KEY = "admin_password_hash"
# An admin session names the generation it was logged in under; a new generation (logout, a
# password change) ends every session made before it, including cookies copied elsewhere.
GENERATION_KEY = "session_generation"


class LoginForm(FlaskForm):
    password = PasswordField("Admin password", validators=[DataRequired()])


def ensure_admin_password(data_dir, password=None, out=None):
    """Store the admin password's hash: the given one, else a generated one printed once."""
    with db.session(data_dir) as conn:
        stored = db.get_setting(conn, PASSWORD_KEY)
        if password:
            if not stored or not check_password_hash(stored, password):
                _store_password(conn, password)
        elif not stored:
            generated = secrets.token_urlsafe(12)
            _store_password(conn, generated)
            print(f"\n  Winnow admin password (shown once; set WINNOW_ADMIN_PASSWORD to choose "
                  f"your own): {generated}\n", file=out or sys.stderr, flush=True)


def set_password(data_dir, password):
    """Store a new admin password and end every admin session."""
    with db.session(data_dir) as conn, db.transaction(conn):
        _store_password(conn, password)


def _store_password(conn, password):
    db.set_setting(conn, PASSWORD_KEY, generate_password_hash(password))
    db.set_setting(conn, GENERATION_KEY, secrets.token_hex(16))


def end_sessions(data_dir):
    """End every admin session, wherever its cookie is."""
    with db.session(data_dir) as conn:
        db.set_setting(conn, GENERATION_KEY, secrets.token_hex(16))


def session_generation(data_dir):
    """Return the current session generation, making the first one if there is none."""
    with db.session(data_dir) as conn:
        generation = db.get_setting(conn, GENERATION_KEY)
        if generation is None:
            with db.transaction(conn):  # workers starting together agree on one
                generation = db.get_setting(conn, GENERATION_KEY)
                if generation is None:
                    generation = secrets.token_hex(16)
                    db.set_setting(conn, GENERATION_KEY, generation)
    return generation


def password_matches(data_dir, password):
    """Check a password against the stored hash."""
    with db.session(data_dir) as conn:
        stored = db.get_setting(conn, PASSWORD_KEY)
    return bool(stored) and check_password_hash(stored, password)


def is_admin():
    """Tell whether this request comes from a logged-in admin whose session is still current."""
    if "is_admin" not in g:  # asked by the view and by every page's menu: read the store once
        g.is_admin = _session_is_current()
    return g.is_admin


def _session_is_current():
    if session.get("admin") is not True:
        return False
    login_at = session.get("login_at")
    # The login's age, not the last request's, ends a session: a stolen cookie kept busy
    # still dies when the lifetime is up.
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if not isinstance(login_at, (int, float)) or not 0 <= time.time() - login_at <= lifetime:
        return False
    return session.get("generation") == session_generation(current_app.config["DATA_DIR"])


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


def safe_next(target, fallback):
    """Return `target` if it is a path on this site, else `fallback`."""
    if not isinstance(target, str) or not _is_local_path(target):
        return fallback
    decoded = target
    for _ in range(5):  # a path decoded twice somewhere (a proxy, a browser) must still be local
        decoded, before = unquote(decoded), decoded
        if decoded == before:
            return target if _is_local_path(decoded) else fallback
        if not _is_local_path(decoded):
            return fallback
    return fallback  # encoded more deeply than any real link


def _is_local_path(text):
    # Browsers read "//host" and "/\host" as another site and drop tabs and newlines first, so
    # only a single "/" followed by no backslash and no control character is a path here.
    parts = urlsplit(text)
    return (text.startswith("/") and not text.startswith("//") and "\\" not in text
            and not parts.scheme and not parts.netloc
            and not any(unicodedata.category(c).startswith("C") for c in text))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(configured("LOGIN_RATE_LIMIT"), methods=["POST"],
               error_message="Too many login attempts; wait a minute and try again.")
def login():
    form = LoginForm()
    if form.validate_on_submit():
        if password_matches(current_app.config["DATA_DIR"], form.password.data):
            data_dir = current_app.config["DATA_DIR"]
            session.clear()
            session.update(admin=True, generation=session_generation(data_dir),
                           login_at=int(time.time()))
            session.permanent = True
            g.pop("is_admin", None)
            flash("Logged in.")
            return redirect(safe_next(request.args.get("next"), url_for("admin.index")))
        flash("That password is not right.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
def logout():
    if is_admin():  # a stranger's logout (anyone can get a form token) must not end the admin's
        end_sessions(current_app.config["DATA_DIR"])
    session.clear()
    g.pop("is_admin", None)
    flash("Logged out.")
    return redirect(url_for("classify.index"))


class SessionInterface(SecureCookieSessionInterface):
    """Mark the session cookie Secure whenever the request came over HTTPS."""

    def get_cookie_secure(self, app):
        """Return True if config asks for Secure cookies or this request is HTTPS."""
        return bool(super().get_cookie_secure(app)
                    or (has_request_context() and request.is_secure))


def init_app(app):
    """Register login, the rate limiter, the session cookie and the admin password."""
    app.session_interface = SessionInterface()
    limiter.init_app(app)
    app.register_blueprint(bp)
    app.jinja_env.globals["is_admin"] = is_admin
    ensure_admin_password(app.config["DATA_DIR"], app.config["ADMIN_PASSWORD"])
