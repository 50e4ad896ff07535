"""Fetch an image URL for the server without letting the URL reach inside the network.

Only http/https; the host is resolved once and every address checked (loopback, private,
link-local, carrier-grade NAT, multicast, reserved and IPv4-mapped forms are refused); the
connection goes to the address that was checked, so DNS cannot change it in between; every
redirect is checked again; bytes, time per read and total time are capped.

The total time is one absolute deadline per fetch, over DNS, connect, TLS, headers, every
redirect and the body: per-read timeouts alone don't bound a server that trickles a byte at a
time, so a watchdog shuts the connection's socket down when the deadline passes. A caller may
also cap how many fetches run at once in this process (the web does; the download job doesn't).
"""
import ipaddress
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0 Safari/537.36 Winnow/1")
REDIRECTS = (301, 302, 303, 307, 308)
# Python counts these as global, but 6to4 wraps any IPv4 address (2002:7f00:1:: is 127.0.0.1)
# and fec0::/10 is the deprecated site-local range, still routed inside some networks.
ALSO_BLOCKED = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("fec0::/10"))


class FetchError(Exception):
    """A URL that was refused or could not be fetched; `kind` says which way."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind  # bad_url, blocked, too_large, timeout, http_status, upstream, busy


@dataclass
class Limits:
    """How far a fetch may go."""

    max_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 20.0
    max_redirects: int = 3
    allow_nets: tuple = ()  # ip_network objects that are allowed although private
    concurrency: int | None = None  # fetches in flight in this process with this cap; None: any

    @classmethod
    def from_settings(cls, settings, concurrency=None):
        """Return the limits that the FETCH_* settings (the app's config) give."""
        # The cap is the caller's choice, not read here: the web passes FETCH_CONCURRENCY, the
        # download job (its own process, many threads) must not be held to the web's share.
        return cls(max_bytes=settings["FETCH_MAX_BYTES"], deadline=settings["FETCH_DEADLINE"],
                   allow_nets=parse_allow_nets(settings["FETCH_ALLOW_NETS"]),
                   concurrency=concurrency)


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
            or ip.is_link_local or ip.is_unspecified or ip.is_private
            or any(ip in net for net in ALSO_BLOCKED))


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


def _getaddrinfo(host, port, timeout):
    """Return getaddrinfo's answer, or raise FetchError("timeout") after `timeout` seconds."""
    # The resolver has no timeout of its own: ask in a helper thread and stop waiting for it.
    answer = {}

    def ask():
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            answer["error"] = e

    helper = threading.Thread(target=ask, name="fetch-resolve", daemon=True)
    helper.start()
    helper.join(timeout)
    if helper.is_alive():
        raise FetchError("timeout", f"the host {host!r} did not resolve in time")
    if "error" in answer:
        raise FetchError("bad_url", f"the host {host!r} does not resolve")
    return answer["infos"]


def resolve(host, port, allow_nets=(), timeout=None):
    """Resolve a host and return one address to use, refusing if any address is blocked."""
    infos = _getaddrinfo(host, port, timeout)
    addresses = [info[4][0] for info in infos]
    for addr in addresses:
        if is_blocked(addr, allow_nets):
            raise FetchError("blocked", f"the host {host!r} is a private or reserved address "
                                        f"({addr}); only public addresses can be fetched")
    return addresses[0]


class _Watchdog:
    """Shut a fetch's sockets down when its deadline passes, whatever they are waiting for."""

    def __init__(self, ends):
        self.fired = False
        self._lock = threading.Lock()
        self._socks = []  # duplicates: they stay valid (never a reused fd) until stop()
        self._timer = threading.Timer(max(0.0, ends - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock):
        """Watch a freshly connected socket (shutting it down at once if already late)."""
        with self._lock:
            self._socks.append(sock.dup())
            if self.fired:
                _shut(self._socks[-1])

    def _fire(self):
        with self._lock:
            self.fired = True
            for sock in self._socks:
                _shut(sock)

    def stop(self):
        """Stop watching and let go of the duplicates."""
        self._timer.cancel()
        with self._lock:
            for sock in self._socks:
                sock.close()
            self._socks.clear()


def _shut(sock):
    try:  # the reads blocked on it, in any thread, return at once
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the other end


class _Watched:
    """A connection that hands its socket to the fetch's watchdog as soon as it is connected."""

    def __init__(self, *args, watchdog, **kw):
        self._watchdog = watchdog
        super().__init__(*args, **kw)

    def _new_conn(self):
        sock = super()._new_conn()
        self._watchdog.watch(sock)
        return sock


class _WatchedHTTP(_Watched, HTTPConnection):
    pass


class _WatchedHTTPS(_Watched, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


def _pool(parts, port, ip, limits, left, watchdog):
    timeout = urllib3.Timeout(connect=min(limits.connect_timeout, left),
                              read=min(limits.read_timeout, left))
    if parts.scheme == "https":
        return _HTTPSPool(ip, port, timeout=timeout, retries=False, maxsize=1,
                          server_hostname=parts.hostname, assert_hostname=parts.hostname,
                          watchdog=watchdog)
    return _HTTPPool(ip, port, timeout=timeout, retries=False, maxsize=1, watchdog=watchdog)


def _too_slow(limits):
    return FetchError("timeout", f"the server took longer than {limits.deadline:g} s")


def _time_left(ends, limits):
    """Return the seconds left before the fetch's deadline, refusing when none are."""
    left = ends - time.monotonic()
    if left <= 0:
        raise _too_slow(limits)
    return left


def _read_capped(resp, limits, ends):
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
        _time_left(ends, limits)
        chunks.append(chunk)
    return b"".join(chunks)


_SLOTS = {}  # cap -> its semaphore: every caller with the same cap shares it
_SLOTS_LOCK = threading.Lock()


@contextmanager
def _slot(cap):
    """Hold one of `cap` fetch slots of this process, or refuse at once when all are taken."""
    if cap is None:
        yield
        return
    with _SLOTS_LOCK:
        slots = _SLOTS.setdefault(cap, threading.BoundedSemaphore(cap))
    if not slots.acquire(blocking=False):  # waiting would tie up the caller's thread anyway
        raise FetchError("busy", "the server is fetching as many images as it can; "
                                 "try again in a moment")
    try:
        yield
    finally:
        slots.release()


def fetch(url, limits=None):
    """Return the bytes at an http(s) URL, following at most a few checked redirects."""
    limits = limits or Limits()
    with _slot(limits.concurrency):
        ends = time.monotonic() + limits.deadline
        watchdog = _Watchdog(ends)
        try:
            for _ in range(limits.max_redirects + 1):
                url, body = _hop(url, limits, ends, watchdog)
                if body is not None:
                    return body
        finally:
            watchdog.stop()
    raise FetchError("upstream", f"more than {limits.max_redirects} redirects")


def _hop(url, limits, ends, watchdog):
    """Fetch one URL: return (where it redirects, None) or (url, its body)."""
    parts, port = _check_url(url)
    ip = resolve(parts.hostname, port, limits.allow_nets, _time_left(ends, limits))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    pool = _pool(parts, port, ip, limits, _time_left(ends, limits), watchdog)
    try:
        resp = pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": USER_AGENT,
                                                  "Accept": "image/*,*/*;q=0.5"},
                            redirect=False, preload_content=False, assert_same_host=False)
        try:
            if resp.status in REDIRECTS and resp.headers.get("Location"):
                return urljoin(url, resp.headers["Location"]), None
            if resp.status >= 400:
                raise FetchError("http_status", f"the server answered HTTP {resp.status}")
            body = _read_capped(resp, limits, ends)
        finally:
            resp.release_conn()
    except (OSError, urllib3.exceptions.HTTPError) as e:
        if watchdog.fired:
            raise _too_slow(limits) from None
        if isinstance(e, (TimeoutError, urllib3.exceptions.TimeoutError)):
            raise FetchError("timeout", "the server did not answer in time") from None
        raise FetchError("upstream", f"the download failed ({type(e).__name__})") from None
    finally:
        pool.close()
    if watchdog.fired:  # a socket shut down mid-body can look like a short, complete body
        raise _too_slow(limits)
    return url, body
