"""Admin access: a password login, rate-limited, and a CSRF token on every form."""
import pytest

from tests.conftest import PASSWORD, AdminSession, make_app


def test_admin_pages_need_a_login(client):
    r = client.get("/admin/")
    assert r.status_code == 302 and "/login?next=/admin/" in r.headers["Location"]


def test_login_with_the_password_then_logout(client):
    s = AdminSession(client)
    r = s.login()
    assert r.status_code == 302 and r.headers["Location"].endswith("/admin/")
    assert client.get("/admin/").status_code == 200
    r = client.post("/logout", data={"csrf_token": s.csrf_token()})
    assert r.status_code == 302
    assert client.get("/admin/").status_code == 302


def test_a_wrong_password_is_refused(client):
    r = AdminSession(client).login("guess")
    assert r.status_code == 401 and "not right" in r.get_data(as_text=True)
    assert client.get("/admin/").status_code == 302


def test_login_never_redirects_to_another_site(client):
    s = AdminSession(client)
    r = client.post("/login?next=https://evil.example/", data={
        "password": PASSWORD, "csrf_token": s.csrf_token()})
    assert r.headers["Location"] == "/admin/"


def test_login_attempts_are_rate_limited(tmp_path):
    client = make_app(tmp_path / "d", LOGIN_RATE_LIMIT="3 per minute").test_client()
    s = AdminSession(client)
    codes = [s.login("guess").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert "Too many login attempts" in s.login().get_data(as_text=True)


def test_posts_without_a_csrf_token_are_refused(admin, client):
    r = client.post("/admin/models/anything/activate")
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    r = client.post("/logout")
    assert r.status_code == 400


def test_activating_an_unknown_version_says_so(admin, client):
    r = client.post("/admin/models/nope/activate", data={"csrf_token": admin.csrf_token()},
                    follow_redirects=True)
    assert "there is no model version" in r.get_data(as_text=True)


def test_generated_password_is_printed_once(tmp_path, capsys):
    from webapp.web.auth import ensure_admin_password, password_matches

    ensure_admin_password(tmp_path)
    printed = capsys.readouterr().err
    password = printed.split("your own): ")[1].split()[0]
    assert password_matches(tmp_path, password)
    ensure_admin_password(tmp_path)
    assert capsys.readouterr().err == ""
    assert password_matches(tmp_path, password)


def test_secret_key_is_generated_once_and_kept(tmp_path):
    a = make_app(tmp_path / "d", SECRET_KEY=None)
    b = make_app(tmp_path / "d", SECRET_KEY=None)
    assert a.secret_key and a.secret_key == b.secret_key


@pytest.mark.parametrize("path, code", [("/nowhere", 404), ("/api/nowhere", 404)])
def test_errors_are_pages_or_json(client, path, code):
    r = client.get(path)
    assert r.status_code == code
    if path.startswith("/api/"):
        assert r.get_json() == {"error": "There is nothing here."}
    else:
        assert "<h1>Error 404</h1>" in r.get_data(as_text=True)


def test_too_large_requests_get_413(tmp_path):
    client = make_app(tmp_path / "d", MAX_CONTENT_LENGTH=100).test_client()
    r = client.post("/login", data={"password": "x" * 1000})
    assert r.status_code == 413 and "too large" in r.get_data(as_text=True)
