"""Admin access: a password login, rate-limited, and a CSRF token on every form."""
import pytest

from tests.conftest import PASSWORD, AdminSession, make_app
from webapp.core import db
from webapp.jobs import runner as jobs
from webapp.model import registry
from webapp.web.auth import safe_next


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


# Each would leave the site in some browser: scheme-relative, backslashes, encoded slashes,
# control characters that browsers drop or that split a header, and schemes.
HOSTILE_NEXT = [
    "////evil.example", "//evil.example", "///evil.example", "/\\evil.example",
    "\\\\evil.example", "/%2F%2Fevil.example", "%2F%2Fevil.example", "/%2f/evil.example",
    "/%252F%252Fevil.example", "/%5Cevil.example", "/admin/..\\..\\evil.example",
    "/\t/evil.example", "\t//evil.example", " //evil.example", "/\n/evil.example",
    "/admin/\r\nSet-Cookie: a=b", "/%0D%0ASet-Cookie:%20a=b", "/%09/evil.example",
    "/\u202eelpmaxe.live", "https://evil.example/", "https:/\\evil.example",
    "http:evil.example", "javascript:alert(1)", "evil.example", "",
]
GOOD_NEXT = ["/admin/", "/", "/clean/?label=red", "/jobs/3",
             "/admin/models/v1/report?a=1&b=2", "/label/caf%C3%A9", "/clean/?q=a%2Fb"]


def assert_goes_to(response, path):
    location = response.headers["Location"]
    assert location == path
    assert location.startswith("/") and not location.startswith("//") and "\\" not in location


def log_in(client, next_url):
    return client.post("/login", query_string={"next": next_url},
                       data={"password": PASSWORD, "csrf_token": AdminSession(client).csrf_token()})


@pytest.mark.parametrize("next_url", HOSTILE_NEXT)
def test_login_never_redirects_to_another_site(client, next_url):
    r = log_in(client, next_url)
    assert r.status_code == 302
    assert_goes_to(r, "/admin/")
    assert client.get("/admin/").status_code == 200


@pytest.mark.parametrize("next_url", GOOD_NEXT)
def test_login_goes_back_to_the_page_that_asked(client, next_url):
    assert_goes_to(log_in(client, next_url), next_url)


def test_the_login_page_sends_the_admin_back_where_they_were(client):
    r = client.get("/jobs/")
    assert r.status_code == 302
    login_url = r.headers["Location"]
    r = client.post(login_url, data={"password": PASSWORD,
                                     "csrf_token": AdminSession(client).csrf_token()})
    assert_goes_to(r, "/jobs/")


SOME_HOSTILE = ["////evil.example", "/\\evil.example", "/%2F%2Fevil.example",
                "https://evil.example/", "/\t/evil.example"]


@pytest.mark.parametrize("next_url, goes_to", [(n, "/admin/") for n in SOME_HOSTILE]
                         + [("/admin/models/v1/report", "/admin/models/v1/report")])
def test_activating_a_version_goes_back_only_to_this_site(
        admin, client, monkeypatch, next_url, goes_to):
    monkeypatch.setattr(registry, "activate", lambda *a, **kw: None)  # no model needed here
    r = client.post("/admin/models/v1/activate",
                    data={"csrf_token": admin.csrf_token(), "next": next_url})
    assert r.status_code == 303
    assert_goes_to(r, goes_to)


@pytest.mark.parametrize("next_url", SOME_HOSTILE + ["/admin/"])
def test_cancelling_a_job_goes_back_only_to_this_site(app, admin, client, next_url):
    with db.session(app.config["DATA_DIR"]) as conn:
        job_id = jobs.create(conn, "download", {})
    r = client.post(f"/jobs/{job_id}/cancel",
                    data={"csrf_token": admin.csrf_token(), "next": next_url})
    assert r.status_code == 303
    assert_goes_to(r, next_url if next_url == "/admin/" else f"/jobs/{job_id}")


@pytest.mark.parametrize("next_url", SOME_HOSTILE + ["/clean/?label=red"])
def test_the_cleaner_goes_back_only_to_this_site(admin, client, next_url):
    r = client.post("/clean/undo-last", data={"csrf_token": admin.csrf_token(), "next": next_url})
    assert r.status_code == 303
    assert_goes_to(r, next_url if next_url.startswith("/clean/") else "/clean/")


def test_safe_next_keeps_only_paths_on_this_site():
    assert [safe_next(n, "/home") for n in HOSTILE_NEXT] == ["/home"] * len(HOSTILE_NEXT)
    assert [safe_next(n, "/home") for n in GOOD_NEXT] == GOOD_NEXT
    assert safe_next(None, "/home") == "/home"


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
