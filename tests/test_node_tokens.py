"""Node tokens: an admin makes them on /admin/ or in the terminal, sees each once, revokes them."""
import hashlib
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import AdminSession
from webapp.core import db
from webapp.model import node_tokens

TOKEN = re.compile(r"wn_[A-Za-z0-9_-]{43}")


def post(admin, path, **data):
    return admin.client.post(path, data={**data, "csrf_token": admin.csrf_token()})


def store_bytes(data_dir):
    """Everything SQLite has written for the store: the file and its write-ahead log."""
    return b"".join(p.read_bytes() for p in data_dir.glob(db.DB_NAME + "*"))


def test_an_admin_makes_a_token_and_sees_it_only_once(app, admin):
    data_dir = app.config["DATA_DIR"]
    r = post(admin, "/admin/node-tokens", name="  edge-1  ")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    token = TOKEN.search(page).group()
    assert "WINNOW_NODE_TOKEN" in page and "shown only this once" in page
    assert node_tokens.check(data_dir, token)["name"] == "edge-1"

    # Not in the session cookie, not on the next page, not in the store: only its hash is kept.
    cookie = admin.client.get_cookie("session").value
    assert token not in str(app.session_interface.get_signing_serializer(app).loads(cookie))
    again = admin.client.get("/admin/").get_data(as_text=True)
    assert token not in again and "edge-1" in again and "Revoke" in again
    on_disk = store_bytes(Path(data_dir))
    assert token.encode() not in on_disk
    assert hashlib.sha256(token.encode()).hexdigest().encode() in on_disk


@pytest.mark.parametrize("name, words", [
    ("", "give the node a name"),
    ("    ", "give the node a name"),
    ("n" * 65, "at most 64 characters"),
    ("edge\t1", "printable characters only"),
])
def test_a_bad_name_is_refused_and_nothing_is_made(app, admin, name, words):
    r = post(admin, "/admin/node-tokens", name=name)
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and words in page
    assert not TOKEN.search(page)
    assert node_tokens.listing(app.config["DATA_DIR"]) == []


def test_an_admin_revokes_a_token_and_its_node_is_refused(app, admin):
    data_dir = app.config["DATA_DIR"]
    kept_id, kept = node_tokens.create(data_dir, "edge-1")
    gone_id, gone = node_tokens.create(data_dir, "edge-2")
    r = post(admin, f"/admin/node-tokens/{gone_id}/revoke")
    assert r.status_code == 303 and r.location.endswith("/admin/#nodes")
    page = admin.client.get("/admin/").get_data(as_text=True)
    assert f"Node token #{gone_id} is revoked" in page
    row = page[page.index(f'data-token-id="{gone_id}"'):].split("</tr>")[0]
    assert "Revoke" not in row
    assert "Revoke" in page[page.index(f'data-token-id="{kept_id}"'):].split("</tr>")[0]
    assert node_tokens.check(data_dir, gone) is None
    assert node_tokens.check(data_dir, kept)["id"] == kept_id
    revoked_at = node_tokens.listing(data_dir)[0]["revoked"]

    post(admin, f"/admin/node-tokens/{gone_id}/revoke")  # a second click changes nothing
    assert "was revoked already" in admin.client.get("/admin/").get_data(as_text=True)
    assert node_tokens.listing(data_dir)[0]["revoked"] == revoked_at
    r = post(admin, "/admin/node-tokens/999/revoke")
    assert r.status_code == 400 and "There is no node token #999." in r.get_data(as_text=True)
    assert post(admin, f"/admin/node-tokens/{2 ** 64}/revoke").status_code == 404
    assert node_tokens.check(data_dir, kept) is not None


def test_the_token_pages_are_for_the_admin_only(app, client):
    data_dir = app.config["DATA_DIR"]
    token_id, token = node_tokens.create(data_dir, "edge-1")
    stranger = AdminSession(client)  # never logged in
    for r in (client.get("/admin/"), post(stranger, "/admin/node-tokens", name="mine"),
              post(stranger, f"/admin/node-tokens/{token_id}/revoke")):
        assert r.status_code == 302 and "/login" in r.location
    assert [t["name"] for t in node_tokens.listing(data_dir)] == ["edge-1"]
    assert node_tokens.check(data_dir, token) is not None


def test_a_node_token_opens_no_admin_page(app, client):
    data_dir = app.config["DATA_DIR"]
    token_id, token = node_tokens.create(data_dir, "edge-1")
    bearer = {"Authorization": f"Bearer {token}"}
    for path in ("/admin/", "/admin/models/import", "/label/"):
        r = client.get(path, headers=bearer)
        assert r.status_code == 302 and "/login" in r.location
    r = client.post("/admin/node-tokens", headers=bearer,
                    data={"name": "mine", "csrf_token": AdminSession(client).csrf_token()})
    assert r.status_code == 302 and "/login" in r.location
    assert len(node_tokens.listing(data_dir)) == 1


def test_the_token_forms_need_their_csrf_token(app, admin):
    data_dir = app.config["DATA_DIR"]
    token_id, token = node_tokens.create(data_dir, "edge-1")
    r = admin.client.post("/admin/node-tokens", data={"name": "edge-2"})
    assert r.status_code == 400 and "security token" in r.get_data(as_text=True)
    r = admin.client.post(f"/admin/node-tokens/{token_id}/revoke")
    assert r.status_code == 400
    assert [t["name"] for t in node_tokens.listing(data_dir)] == ["edge-1"]
    assert node_tokens.check(data_dir, token) is not None


def test_check_knows_live_tokens_only(tmp_path):
    token_id, token = node_tokens.create(tmp_path, "edge-1")
    assert set(node_tokens.check(tmp_path, token)) == {"id", "name", "created", "last_used",
                                                        "revoked"}
    for other in (token + "x", token[:-1], token.upper(), "", None, "wn_" + "a" * 300, b"wn_"):
        assert node_tokens.check(tmp_path, other) is None
    assert node_tokens.revoke(tmp_path, token_id) is True
    assert node_tokens.check(tmp_path, token) is None
    assert node_tokens.revoke(tmp_path, token_id) is False
    with pytest.raises(node_tokens.TokenRefused, match="no node token #7"):
        node_tokens.revoke(tmp_path, 7)


def test_each_token_is_new_and_listed_newest_first_without_its_hash(tmp_path):
    made = [node_tokens.create(tmp_path, f"edge-{i}") for i in range(3)]
    assert len({token for _, token in made}) == 3
    assert all(TOKEN.fullmatch(token) for _, token in made)
    listed = node_tokens.listing(tmp_path)
    assert [t["id"] for t in listed] == [token_id for token_id, _ in reversed(made)]
    assert all("hash" not in t for t in listed)


def test_last_used_is_written_at_most_once_a_minute(tmp_path, monkeypatch):
    token_id, token = node_tokens.create(tmp_path, "edge-1")
    monkeypatch.setattr(node_tokens, "now", lambda: "2026-11-28T04:15:00+00:00")
    first = node_tokens.check(tmp_path, token)["last_used"]
    assert first == node_tokens.listing(tmp_path)[0]["last_used"] is not None

    writes = []
    with db.session(tmp_path) as conn:
        conn.execute("UPDATE node_tokens SET last_used = ?", ("9999-01-01T00:00:00+00:00",))
    monkeypatch.setattr(node_tokens, "now", lambda: writes.append(1) or "2026-11-28T04:16")
    node_tokens.check(tmp_path, token)  # used within the minute: no write
    assert writes == [] and node_tokens.listing(tmp_path)[0]["last_used"].startswith("9999")

    with db.session(tmp_path) as conn:  # more than a minute ago: brought up to date
        conn.execute("UPDATE node_tokens SET last_used = ?", ("2000-01-01T00:00:00+00:00",))
    node_tokens.check(tmp_path, token)
    assert node_tokens.listing(tmp_path)[0]["last_used"] == "2026-11-28T04:16"


def test_a_store_made_before_node_tokens_gets_the_table(tmp_path):
    old = sqlite3.connect(tmp_path / db.DB_NAME)
    old.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    old.execute("INSERT INTO settings VALUES ('kept', 'yes')")
    old.commit()
    old.close()
    token_id, token = node_tokens.create(tmp_path, "edge-1")
    assert node_tokens.check(tmp_path, token)["id"] == token_id
    with db.session(tmp_path) as conn:
        assert db.get_setting(conn, "kept") == "yes"


def test_an_operator_manages_tokens_from_the_terminal(app, runner):
    data_dir = app.config["DATA_DIR"]
    r = runner.invoke(args=["node-token", "create", "edge-1"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert TOKEN.fullmatch(token) and r.stdout == token + "\n"  # alone: scripts capture it
    assert "WINNOW_NODE_TOKEN" in r.stderr
    token_id = node_tokens.check(data_dir, token)["id"]

    r = runner.invoke(args=["node-token", "list"])
    assert r.exit_code == 0 and f"#{token_id}\tedge-1\t" in r.output and "live" in r.output
    assert token not in r.output
    r = runner.invoke(args=["node-token", "revoke", str(token_id)])
    assert r.exit_code == 0 and f"node token #{token_id} revoked" in r.output
    assert node_tokens.check(data_dir, token) is None
    assert "revoked 20" in runner.invoke(args=["node-token", "list"]).output
    assert "was revoked already" in runner.invoke(
        args=["node-token", "revoke", str(token_id)]).output

    r = runner.invoke(args=["node-token", "revoke", "42"])
    assert r.exit_code != 0 and "there is no node token #42" in r.output
    r = runner.invoke(args=["node-token", "create", "  "])
    assert r.exit_code != 0 and "give the node a name" in r.output and not r.stdout
    assert len(node_tokens.listing(data_dir)) == 1


def test_the_terminal_says_when_there_are_no_tokens(runner):
    r = runner.invoke(args=["node-token", "list"])
    assert r.exit_code == 0 and "no node tokens yet" in r.output
