"""deploy/: nginx accepts both sites, and the systemd units start what the app really reads."""
import configparser
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX_CANDIDATES = ("/usr/sbin/nginx",)
# The node role's settings, which webapp/config.py must read (issue 14).
NODE_SETTINGS = ("WINNOW_ROLE", "WINNOW_MODEL_SOURCE", "WINNOW_NODE_TOKEN", "WINNOW_MODEL_CACHE",
                 "WINNOW_SOURCE_POLL")
ADMIN_CERT = "/etc/ssl/certs/winnow-admin.pem"
ADMIN_KEY = "/etc/ssl/private/winnow-admin.key"
LISTEN = re.compile(r"^(\s*)listen\s+[^\s;]+([^;]*);", re.M)


def nginx_binary():
    """Debian's nginx; missing, skip locally and fail under CI (.ci/run installs it)."""
    found = shutil.which("nginx") or next(
        (p for p in NGINX_CANDIDATES if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Debian's nginx for the deploy tests; .ci/run installs it")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_free_ports(text):
    """The site with each `listen PORT ...;` on 127.0.0.1 and a free port: `nginx -t` binds its
    listening sockets, which ports 80 and 443 would refuse to anyone but root, or to anyone while
    a web server runs here."""
    return LISTEN.sub(lambda m: f"{m.group(1)}listen 127.0.0.1:{free_port()}{m.group(2)};", text)


def nginx_test(tmp_path, *sites):
    """Run `nginx -t` on a main config that includes copies of `sites` (see on_free_ports),
    everything inside tmp_path, so that it runs as any user."""
    nginx = nginx_binary()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    copies = []
    for n, site in enumerate(sites):
        copy = prefix / f"site-{n}.conf"
        copy.write_text(on_free_ports(Path(site).read_text()))
        copies.append(copy)
    sites = copies
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    user = ""
    if os.geteuid() == 0:  # the workers' user must exist: root's default "nobody" may lack a group
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};\n"
    includes = "".join(f"    include {site};\n" for site in sites)
    main = prefix / "nginx.conf"
    main.write_text(
        f"{user}pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'};\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {temp['body']};\n"
        f"    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n"
        f"    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        f"{includes}"
        "}\n")
    run = subprocess.run([nginx, "-t", "-q", "-e", str(prefix / "error.log"), "-p", f"{prefix}/",
                          "-c", str(main)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr + run.stdout


def test_nginx_accepts_the_nodes_site(tmp_path):
    nginx_test(tmp_path, DEPLOY / "nginx" / "winnow.conf")


def test_nodes_site_retries_only_classifications(tmp_path):
    text = (DEPLOY / "nginx" / "winnow.conf").read_text()
    locations = dict(re.findall(r"location\s+([^{]+?)\s*\{(.*?)\}", text, re.S))
    retried = {path for path, body in locations.items() if "non_idempotent" in body}
    assert retried == {"= /api/classify", "= /classify", "= /classify-url"}
    assert "proxy_next_upstream" not in locations["/"]
    assert re.search(r"client_max_body_size 20m;", text)  # the app's 20 MB upload cap
    servers = re.findall(r"^\s*server\s+\S+\s+max_fails=\d+\s+fail_timeout=\S+;", text, re.M)
    assert len(servers) >= 2


def self_signed(tmp_path):
    """Write a self-signed certificate and its key: with the cryptography package when the venv
    has it, else with openssl; skip when neither is there."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor openssl is installed")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=winnow-admin.example.org", "-keyout", str(key),
                        "-out", str(cert)], check=True, capture_output=True, timeout=60)
        return cert, key
    import datetime

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "winnow-admin.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


def test_nginx_accepts_the_admin_site(tmp_path):
    nginx_binary()
    cert, key = self_signed(tmp_path)
    text = (DEPLOY / "nginx" / "admin.conf").read_text()
    assert ADMIN_CERT in text and ADMIN_KEY in text
    site = tmp_path / "admin.conf"
    site.write_text(text.replace(ADMIN_CERT, str(cert)).replace(ADMIN_KEY, str(key)))
    nginx_test(tmp_path, site)


def test_admin_site_caps_match_the_app(tmp_path):
    """The two large-upload routes exist, and nginx's caps equal the app's defaults."""
    from webapp.app import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "LOAD_MODEL": False,
                      "ADMIN_PASSWORD": "deploy-test"})
    text = (DEPLOY / "nginx" / "admin.conf").read_text()
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}

    def cap(location):
        body = re.search(rf"location = {re.escape(location)} \{{(.*?)\}}", text, re.S).group(1)
        number, unit = re.search(r"client_max_body_size (\d+)([kmg]);", body).groups()
        return int(number) * units[unit]

    general = re.search(r"^    client_max_body_size (\d+)m;", text, re.M).group(1)
    assert int(general) * units["m"] == app.config["MAX_CONTENT_LENGTH"]
    assert cap("/admin/models/import") == app.config["MAX_MODEL_UPLOAD_BYTES"]
    assert cap("/label/upload-zip") == app.config["MAX_ZIP_UPLOAD_BYTES"]
    posts = {rule.rule for rule in app.url_map.iter_rules() if "POST" in rule.methods}
    assert {"/admin/models/import", "/label/upload-zip"} <= posts


def read_unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def settings_read_by_the_app():
    """Every WINNOW_* name that webapp/config.py or gunicorn.conf.py reads."""
    text = (ROOT / "webapp" / "config.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r"WINNOW_[A-Z0-9_]+", text))


@pytest.mark.parametrize("unit, venv", [("winnow-admin.service", ".venv"),
                                         ("winnow-node.service", ".venv-serve")])
def test_units_start_gunicorn_as_deployed(unit, venv):
    service = read_unit(unit)["Service"]
    assert service["ExecStart"] == f"/opt/winnow/{venv}/bin/gunicorn -c gunicorn.conf.py wsgi:app"
    assert service["WorkingDirectory"] == "/opt/winnow"
    assert service["EnvironmentFile"].startswith("/etc/winnow/")
    assert service["User"] == "winnow"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
        assert service[key] == value, key
    assert service["ReadWritePaths"].startswith("/var/lib/winnow")
    graceful = re.search(r"^graceful_timeout = (\d+)", (ROOT / "gunicorn.conf.py").read_text(),
                         re.M)
    assert int(service["TimeoutStopSec"]) >= int(graceful.group(1))


@pytest.mark.parametrize("example", ["winnow-admin.env.example", "winnow-node.env.example"])
def test_env_examples_name_only_settings_the_app_reads(example):
    named = set(re.findall(r"WINNOW_[A-Z0-9_]+",
                           (DEPLOY / "systemd" / example).read_text()))
    assert named
    assert named - settings_read_by_the_app() == set()


def test_node_settings_are_read_by_the_config():
    missing = set(NODE_SETTINGS) - settings_read_by_the_app()
    assert not missing, f"webapp/config.py does not read {sorted(missing)}"
    node_env = (DEPLOY / "systemd" / "winnow-node.env.example").read_text()
    for name in NODE_SETTINGS:
        assert name in node_env, name
