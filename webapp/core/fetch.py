"""Fetch an image URL for the server without letting the URL reach inside the network.

Only http/https; the host is resolved once and every address checked (loopback, private,
link-local, carrier-grade NAT, multicast, reserved and IPv4-mapped forms are refused); the
connection goes to the address that was checked, so DNS cannot change it in between; every
redirect is checked again; bytes, time per read and total time are capped.
"""
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0 Safari/537.36 Winnow/1")
REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """A URL that was refused or could not be fetched; `kind` says which way."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind  # bad_url, blocked, too_large, timeout, http_status, upstream


@dataclass
class Limits:
    """How far a fetch may go."""

    max_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 20.0
    max_redirects: int = 3
    allow_nets: tuple = ()  # ip_network objects that are allowed although private

    @classmethod
    def from_settings(cls, settings):
        """Return the limits that the FETCH_* settings (the app's config) give."""
        return cls(max_bytes=settings["FETCH_MAX_BYTES"], deadline=settings["FETCH_DEADLINE"],
                   allow_nets=parse_allow_nets(settings["FETCH_ALLOW_NETS"]))


def parse_allow_nets(text):
    """Parse 'a/b, c/d' into networks (WINNOW_FETCH_ALLOW_NETS)."""
    return tuple(ipaddress.ip_network(p.strip(), strict=False) for p in (text or "").split(",")
                 if p.strip())


def is_blocked(ip, allow_nets=()):
    """Tell whether an address is off limits for server-side fetching."""
    ip = ipaddress.ip_address(ip)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if any(ip in net for net in allow_nets):
        return False
    return (not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback
            or ip.is_link_local or ip.is_unspecified or ip.is_private)


def _check_url(url):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("bad_url", "only http and https URLs can be fetched")
    if not parts.hostname:
        raise FetchError("bad_url", "the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise FetchError("bad_url", "the URL's port is not a number") from None
    return parts, port


def resolve(host, port, allow_nets=()):
    """Resolve a host and return one address to use, refusing if any address is blocked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError("bad_url", f"the host {host!r} does not resolve") from None
    addresses = [info[4][0] for info in infos]
    for addr in addresses:
        if is_blocked(addr, allow_nets):
            raise FetchError("blocked", f"the host {host!r} is a private or reserved address "
                                        f"({addr}); only public addresses can be fetched")
    return addresses[0]


def _pool(parts, port, ip, limits):
    timeout = urllib3.Timeout(connect=limits.connect_timeout, read=limits.read_timeout)
    if parts.scheme == "https":
        return urllib3.HTTPSConnectionPool(ip, port, timeout=timeout, retries=False,
                                           server_hostname=parts.hostname,
                                           assert_hostname=parts.hostname, maxsize=1)
    return urllib3.HTTPConnectionPool(ip, port, timeout=timeout, retries=False, maxsize=1)


def _read_capped(resp, limits, started):
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > limits.max_bytes:
        raise FetchError("too_large",
                         f"the image is larger than {limits.max_bytes // 1_000_000} MB")
    chunks, size = [], 0
    while chunk := resp.read1(64 * 1024):  # whatever has arrived, so the deadline is checked
        size += len(chunk)
        if size > limits.max_bytes:  # Content-Length may lie: count what arrives
            raise FetchError("too_large",
                             f"the image is larger than {limits.max_bytes // 1_000_000} MB")
        if time.monotonic() - started > limits.deadline:
            raise FetchError("timeout", f"the server took longer than {limits.deadline:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(url, limits=None):
    """Return the bytes at an http(s) URL, following at most a few checked redirects."""
    limits = limits or Limits()
    started = time.monotonic()
    for _ in range(limits.max_redirects + 1):
        parts, port = _check_url(url)
        ip = resolve(parts.hostname, port, limits.allow_nets)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        pool = _pool(parts, port, ip, limits)
        try:
            resp = pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": USER_AGENT,
                                                      "Accept": "image/*,*/*;q=0.5"},
                                redirect=False, preload_content=False, assert_same_host=False)
            try:
                if resp.status in REDIRECTS and resp.headers.get("Location"):
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status >= 400:
                    raise FetchError("http_status", f"the server answered HTTP {resp.status}")
                return _read_capped(resp, limits, started)
            finally:
                resp.release_conn()
        except (TimeoutError, urllib3.exceptions.TimeoutError):
            raise FetchError("timeout", "the server did not answer in time") from None
        except urllib3.exceptions.HTTPError as e:
            raise FetchError("upstream", f"the download failed ({type(e).__name__})") from None
        finally:
            pool.close()
    raise FetchError("upstream", f"more than {limits.max_redirects} redirects")
