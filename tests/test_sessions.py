"""Admin sessions end: at logout everywhere, at a password change, at their age; behind a proxy."""
from datetime import UTC, datetime

import pytest

from tests.conftest import PASSWORD, AdminSession, make_app

NEW_PASSWORD = "battery staple"


def copy_of(app, client):
    """Return another browser holding a copy of `client`'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def log_out(client):
    return client.post("/logout", data={"csrf_token": AdminSession(client).csrf_token()})


def test_a_cookie_copied_before_logout_stops_working(app, admin, client):
    thief = copy_of(app, client)
    assert thief.get("/admin/").status_code == 200
    assert log_out(client).status_code == 302
    assert thief.get("/admin/").status_code == 302
    assert thief.get("/clean/top-losses.json").status_code == 401


def test_a_strangers_logout_does_not_log_the_admin_out(app, admin, client):
    stranger = app.test_client()
    assert log_out(stranger).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_after_logout_a_new_login_works(app, admin, client):
    log_out(client)
    assert AdminSession(client).login().status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_session_ends_when_its_lifetime_is_up_however_busy(tmp_path):
    client = make_app(tmp_path / "d", SESSION_HOURS=2).test_client()
    AdminSession(client).login()
    expires = client.get_cookie("session").expires
    hours = (expires - datetime.now(UTC)).total_seconds() / 3600
    assert 1.9 < hours <= 2
    with client.session_transaction() as session:
        session["login_at"] -= 2 * 3600 - 60  # logged in almost two hours ago, busy ever since
    assert client.get("/admin/").status_code == 200
    with client.session_transaction() as session:
        session["login_at"] -= 120
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize("forged", [None, "soon", 4102444800])  # 4102444800: in 2100
def test_a_session_without_a_believable_login_time_is_refused(app, admin, client, forged):
    with client.session_transaction() as session:
        session["login_at"] = forged
    assert client.get("/admin/").status_code == 302


def test_changing_the_configured_password_logs_every_admin_out(tmp_path):
    app = make_app(tmp_path / "d", SECRET_KEY=None)
    client = app.test_client()
    AdminSession(client).login()
    restarted = make_app(tmp_path / "d", SECRET_KEY=None, ADMIN_PASSWORD=NEW_PASSWORD)
    assert copy_of(restarted, client).get("/admin/").status_code == 302
    unchanged = make_app(tmp_path / "d", SECRET_KEY=None, ADMIN_PASSWORD=NEW_PASSWORD)
    fresh = unchanged.test_client()
    AdminSession(fresh).login(NEW_PASSWORD)
    again = make_app(tmp_path / "d", SECRET_KEY=None, ADMIN_PASSWORD=NEW_PASSWORD)
    assert copy_of(again, fresh).get("/admin/").status_code == 200  # a restart alone keeps it


def login_cookie(client, headers=(), **request):
    """Log in and return the Set-Cookie header of the session."""
    token = AdminSession(client).csrf_token()
    # Over HTTPS, Flask-WTF also wants a same-site Referer, as a browser sends.
    r = client.post("/login", data={"password": PASSWORD, "csrf_token": token},
                    headers={"Referer": "https://localhost/login", **dict(headers)}, **request)
    assert r.status_code == 302, r.get_data(as_text=True)
    return next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("session="))


def test_the_session_cookie_is_httponly_and_lax_and_secure_only_over_https(app, client):
    cookie = login_cookie(client)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "Secure" in login_cookie(app.test_client(), base_url="https://localhost")


@pytest.mark.parametrize("hops, secure", [(1, True), (0, False)])
def test_behind_a_trusted_proxy_https_makes_the_cookie_secure(tmp_path, hops, secure):
    client = make_app(tmp_path / "d", TRUSTED_PROXIES=hops).test_client()
    cookie = login_cookie(client, headers={"X-Forwarded-Proto": "https"})
    assert ("Secure" in cookie) is secure


def test_secure_cookies_can_be_forced(tmp_path):
    client = make_app(tmp_path / "d", SESSION_COOKIE_SECURE=True).test_client()
    assert "Secure" in login_cookie(client)


@pytest.mark.parametrize("hops, second_client", [(1, 401), (0, 429)])
def test_login_limits_are_per_client_behind_a_trusted_proxy(tmp_path, hops, second_client):
    client = make_app(tmp_path / "d", TRUSTED_PROXIES=hops,
                      LOGIN_RATE_LIMIT="2 per minute").test_client()
    token = AdminSession(client).csrf_token()

    def attempt(address):
        return client.post("/login", data={"password": "guess", "csrf_token": token},
                           headers={"X-Forwarded-For": address}).status_code

    assert [attempt("203.0.113.7") for _ in range(3)] == [401, 401, 429]
    assert attempt("198.51.100.9") == second_client


def test_set_password_logs_every_admin_out_and_only_the_new_password_works(
        app, admin, client, runner):
    result = runner.invoke(args=["set-password"], input=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "every admin session is logged out" in result.output
    assert "WINNOW_ADMIN_PASSWORD is set" in result.output  # make_app sets it
    assert NEW_PASSWORD not in result.output  # the prompt hides what is typed
    assert client.get("/admin/").status_code == 302
    assert AdminSession(client).login(PASSWORD).status_code == 401
    assert AdminSession(client).login(NEW_PASSWORD).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_set_password_reads_standard_input_when_asked(app, runner):
    result = runner.invoke(args=["set-password", "--password-stdin"],
                           input=f"{NEW_PASSWORD}\nignored\n")
    assert result.exit_code == 0, result.output
    assert AdminSession(app.test_client()).login(NEW_PASSWORD).status_code == 302


@pytest.mark.parametrize("args, typed", [([], "one\ntwo\n"), (["--password-stdin"], "\n")])
def test_set_password_refuses_a_mistyped_or_empty_password(app, admin, client, runner, args,
                                                           typed):
    result = runner.invoke(args=["set-password", *args], input=typed)
    assert result.exit_code != 0
    assert client.get("/admin/").status_code == 200
    assert AdminSession(app.test_client()).login(PASSWORD).status_code == 302
