"""A serving node follows the admin's registry: it pulls the active version's bundle, verifies
it, checks it on this machine and swaps it in, and keeps its last good version when it cannot.

The source is either a directory (a shared, read-only `models/` folder of the admin's data dir)
or the admin node's URL (`GET /registry/active`, `/registry/<v>/bundle` and its files, with a
node token). What the node pulled is kept in its cache:

    <cache>/versions/<version>/   bundle.json and the files it lists, verified
    <cache>/CURRENT               {"version", "bundle_sha256"} of the last version that loaded

so a node started while the source is down serves its cached version. Each worker process of a
node follows on its own thread; a file lock lets one of them download a version while the
others wait and then load what it wrote.
"""
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import urllib3

from webapp.core import files
from webapp.runtime import bundle as rt

CURRENT = "CURRENT"
VERSIONS = "versions"
KEEP = 3  # cached versions kept: the current one and the ones a roll back most likely wants
IN_MEMORY = 2  # checked predictors a process keeps: the one serving and the one before it
RETRY_REFUSED = 60.0  # seconds before a refused bundle (same version, same sha256) is tried again
VERSION_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
CHUNK = 1 << 20

log = logging.getLogger("winnow")


class SourceError(RuntimeError):
    """The source cannot be read (down, unreachable, or answering something else)."""


class Refused(RuntimeError):
    """What the source offers cannot serve: a bad bundle, or an active version without one."""


@dataclass(frozen=True)
class Active:
    """What the source says is active: the version, its bundle.json's sha256, or why not."""

    version: str | None
    bundle_sha256: str | None
    reason: str | None = None


def _checked_version(version):
    if version is not None and not VERSION_ID.match(str(version)):
        raise SourceError(f"the source names an odd version id {version!r}")
    return version


def _checked_name(name):
    if Path(name).name != name or name.startswith(".") or name == rt.MANIFEST:
        raise Refused(f"{rt.MANIFEST} lists a file named {name!r}: not a plain file name")
    return name


class DirectorySource:
    """A shared, read-only models/ folder: models/ACTIVE and each version's metrics.json."""

    def __init__(self, models_dir):
        self.models_dir = Path(models_dir)
        self.location = str(self.models_dir)

    def active(self):
        """Return the active version and its bundle's sha256, from ACTIVE and metrics.json."""
        try:
            version = (self.models_dir / "ACTIVE").read_text().strip() or None
        except FileNotFoundError:
            if not self.models_dir.is_dir():
                raise SourceError(f"{self.models_dir} is not a directory") from None
            return Active(None, None, "no model is active yet")
        except OSError as e:
            raise SourceError(f"cannot read {self.models_dir / 'ACTIVE'}: {e}") from None
        if version is None:
            return Active(None, None, "no model is active yet")
        _checked_version(version)
        try:
            metrics = json.loads((self.models_dir / version / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise SourceError(f"cannot read version {version}'s metrics.json: {e}") from None
        record = metrics.get("bundle") or {}
        if record.get("status") != "ready":
            reason = record.get("reason") or "made before serving bundles"
            return Active(version, None, f"version {version} has no serving bundle: {reason}")
        return Active(version, record["sha256"])

    def _path(self, version, name):
        return self.models_dir / version / "bundle" / name

    def read_manifest(self, version):
        """Return the bytes of the version's bundle.json."""
        try:
            return self._path(version, rt.MANIFEST).read_bytes()
        except OSError as e:
            raise SourceError(f"cannot read version {version}'s {rt.MANIFEST}: {e}") from None

    def copy_file(self, version, name, out):
        """Copy one file of the version's bundle into the open binary file `out`."""
        try:
            with open(self._path(version, name), "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
        except FileNotFoundError:
            raise Refused(f"version {version}'s {name} is missing from its bundle") from None
        except OSError as e:
            raise SourceError(f"cannot read version {version}'s {name}: {e}") from None


class HttpSource:
    """The admin node's registry over HTTP, read with a node token."""

    def __init__(self, base_url, token, connect_timeout=2.0, read_timeout=30.0):
        self.base_url = base_url.rstrip("/")
        self.location = self.base_url
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "winnow-node"}
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self._pool, self._pid = None, None

    def _http(self):
        # A pool's sockets must not be shared across fork: one pool per process.
        if self._pid != os.getpid():
            self._pool = urllib3.PoolManager(num_pools=2, maxsize=2, retries=False,
                                             timeout=self._timeout)
            self._pid = os.getpid()
        return self._pool

    def _get(self, path, stream=False, broken=SourceError):
        """GET a registry path; a 404 or 409 raises `broken` (a bundle's file: Refused)."""
        url = self.base_url + path
        try:
            response = self._http().request("GET", url, headers=self._headers,
                                            preload_content=not stream)
        except urllib3.exceptions.HTTPError as e:
            raise SourceError(f"{url}: {e}") from None
        if response.status != 200:
            body = response.data if not stream else response.read(2048)
            response.release_conn()
            try:
                detail = json.loads(body).get("error") or ""
            except (ValueError, AttributeError):
                detail = ""
            error = broken if response.status in (404, 409) else SourceError
            raise error(f"{url} answered {response.status}" + (f": {detail}" if detail else ""))
        return response

    def active(self):
        """Return what GET /registry/active says."""
        response = self._get("/registry/active")
        try:
            answer = json.loads(response.data)
            return Active(_checked_version(answer["version"]), answer["bundle_sha256"],
                          answer.get("reason"))
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"/registry/active answered something else: {e}") from None

    def read_manifest(self, version):
        """Return the bytes of GET /registry/<version>/bundle (bundle.json)."""
        return self._get(f"/registry/{version}/bundle", broken=Refused).data

    def copy_file(self, version, name, out):
        """Stream GET /registry/<version>/bundle/<name> into the open binary file `out`."""
        response = self._get(f"/registry/{version}/bundle/{name}", stream=True, broken=Refused)
        try:
            for chunk in response.stream(CHUNK):
                out.write(chunk)
        except urllib3.exceptions.HTTPError as e:
            raise SourceError(f"downloading {name} of version {version}: {e}") from None
        finally:
            response.release_conn()


def source_from_setting(setting, token=None):
    """Return the source that WINNOW_MODEL_SOURCE names: an http(s) URL or a directory."""
    if not setting:
        raise ValueError("WINNOW_ROLE=node needs WINNOW_MODEL_SOURCE: the admin node's URL "
                         "(with WINNOW_NODE_TOKEN) or a shared models/ directory")
    if re.match(r"^https?://", setting):
        if not token:
            raise ValueError("WINNOW_MODEL_SOURCE is a URL: set WINNOW_NODE_TOKEN to a node "
                             "token made on the admin node (/admin/ → Serving nodes)")
        return HttpSource(setting, token)
    return DirectorySource(setting)


def _sha256_while_writing(source, version, name, path):
    digest = hashlib.sha256()

    class Hashing:
        def write(self, chunk):
            digest.update(chunk)
            out.write(chunk)

    with open(path, "wb") as out:
        source.copy_file(version, name, Hashing())
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


class Cache:
    """The node's cache of pulled versions, and CURRENT: the last version that loaded."""

    def __init__(self, root):
        self.root = Path(root)
        self.versions = self.root / VERSIONS

    def dir_of(self, version):
        """Return where the version's bundle is kept."""
        return self.versions / version

    def current(self):
        """Return (version, bundle_sha256) of the last version that loaded, or None."""
        try:
            record = json.loads((self.root / CURRENT).read_text())
            return _checked_version(record["version"]), record["bundle_sha256"]
        except (OSError, ValueError, KeyError, TypeError, SourceError):
            return None

    def set_current(self, version, sha256):
        """Remember the version that now serves (atomically)."""
        files.write_atomic(self.root / CURRENT,
                           json.dumps({"version": version, "bundle_sha256": sha256}))

    def locked(self):
        """Return an open lock file, held exclusively: one process of the node pulls at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".lock", "a")  # noqa: SIM115 (closed by the caller)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def pull(self, source, active):
        """Download the active version's bundle into the cache, verifying each file on the way;
        return its folder. A cached copy whose bundle.json matches is used as it is (loading
        verifies every file again)."""
        version, expected = active.version, active.bundle_sha256
        target = self.dir_of(version)
        manifest_path = target / rt.MANIFEST
        if manifest_path.is_file() and files.file_sha256(manifest_path) == expected:
            return target
        self.versions.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".pull-{version}-", dir=self.versions))
        try:
            data = source.read_manifest(version)
            if hashlib.sha256(data).hexdigest() != expected:
                raise Refused(f"version {version}'s {rt.MANIFEST} does not match the sha256 "
                              "the registry gives for it")
            (work / rt.MANIFEST).write_bytes(data)
            try:
                listed = json.loads(data)["files"]
            except (ValueError, KeyError, TypeError) as e:
                raise Refused(f"version {version}'s {rt.MANIFEST} lists no files ({e})") from None
            for name, digest in listed.items():
                got = _sha256_while_writing(source, version, _checked_name(name), work / name)
                if got != digest:
                    raise Refused(f"version {version}'s {name} does not match its sha256 in "
                                  f"{rt.MANIFEST}")
            files.fsync_dir(work)
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
            files.fsync_dir(self.versions)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target

    def prune(self, keep):
        """Delete cached versions beyond the `keep` most recently used ones and old pulls."""
        if not self.versions.is_dir():
            return
        cached = sorted((p for p in self.versions.iterdir() if p.is_dir()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        kept = [p for p in cached if not p.name.startswith(".")]
        for path in kept[keep:]:
            shutil.rmtree(path, ignore_errors=True)
        for path in cached:
            if path.name.startswith(".pull-") and time.time() - path.stat().st_mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)  # a killed process's half-pulled version


class Follower:
    """The version a node serves, kept in step with the source.

    `predictor` is swapped by one reference assignment: a request that took it keeps it to the
    end. `on_failure(kind, message)` hears of each failed check ("unreachable" or "refused").
    """

    def __init__(self, source, cache_dir, precision="auto", poll=1.0, on_failure=None):
        self.source, self.cache = source, Cache(cache_dir)
        self.precision, self.poll = precision, poll
        self.on_failure = on_failure or (lambda kind, message: None)
        self.predictor, self.sha256 = None, None
        self.state, self.last_error, self.source_active = "unknown", None, None
        self.checked_at, self.loaded_at = None, None
        self._refused = {}  # (version, sha256) -> when it was refused
        # Predictors this process loaded and checked, by (version, sha256): a roll back to the
        # version served just before swaps it in at once, without loading and checking it again.
        self._loaded = OrderedDict()
        self._lock = threading.Lock()  # one check at a time
        self._starting = threading.Lock()
        self._thread_pid = None

    @property
    def version(self):
        """Return the version this process serves, or None."""
        return self.predictor.version if self.predictor else None

    def load_cached(self):
        """Serve the cache's last good version, if there is one and it still verifies."""
        current = self.cache.current()
        if current is None:
            return self
        version, sha = current
        try:
            self._swap(self._loaded.get(current) or rt.load(
                self.cache.dir_of(version), version, self.precision, expected_sha256=sha), sha)
        except (rt.BundleError, OSError, ValueError, KeyError) as e:
            self._refused[current] = time.time()
            self._failed("refused", f"the cached version {version} cannot serve: {e}")
        return self

    def _catch_up_with_cache(self):
        """With the source unreachable, serve the version the node's cache last loaded, if this
        process serves another: a worker forked from an older master, say, or one that missed
        the last switch another worker of the node made before the source went away."""
        current = self.cache.current()
        if current is None or current == (self.version, self.sha256):
            return
        refused_at = self._refused.get(current)
        if refused_at is not None and time.time() - refused_at < RETRY_REFUSED:
            return
        log.info("model source unreachable: serving the node's cached version %s", current[0])
        self.load_cached()

    def _swap(self, predictor, sha):
        self.predictor, self.sha256 = predictor, sha
        self.loaded_at = time.time()
        key = (predictor.version, sha)
        self._loaded[key] = predictor
        self._loaded.move_to_end(key)
        while len(self._loaded) > IN_MEMORY:
            self._loaded.popitem(last=False)
        log.info("serving model %s (%s)", predictor.version, predictor.precision)

    def _failed(self, state, message):
        if (self.state, self.last_error) != (state, message):
            log.warning("model source %s: %s", self.source.location, message)
        self.state, self.last_error = state, message
        self.on_failure(state, message)

    def check(self):
        """Ask the source once; pull, check and swap in a new active version."""
        with self._lock:
            self._check()

    def _check(self):
        self.checked_at = time.time()
        try:
            active = self.source.active()
        except SourceError as e:
            self._failed("unreachable", str(e))
            self._catch_up_with_cache()
            return
        self.source_active = active.version
        if active.version is None or active.bundle_sha256 is None:
            self._failed("refused", active.reason or "the source offers no serving bundle")
            return
        key = (active.version, active.bundle_sha256)
        if key == (self.version, self.sha256):
            self.state, self.last_error = "ok", None
            return
        refused_at = self._refused.get(key)
        if refused_at is not None and time.time() - refused_at < RETRY_REFUSED:
            return  # still refused: the state and the error say why
        if key in self._loaded:  # a roll back to a version this process checked already
            self._swap(self._loaded[key], active.bundle_sha256)
            self.state, self.last_error = "ok", None
            try:  # the cache's copy marked as used, and as the one to serve after a restart
                os.utime(self.cache.dir_of(active.version))
                self.cache.set_current(*key)
            except OSError:
                pass  # pruned by another worker: the next restart pulls it again
            return
        try:
            with self.cache.locked():
                path = self.cache.pull(self.source, active)
                predictor = rt.load(path, active.version, self.precision,
                                    expected_sha256=active.bundle_sha256)
                self.cache.set_current(*key)
                os.utime(path)
                self.cache.prune(KEEP)
        except SourceError as e:
            self._failed("unreachable", str(e))
            self._catch_up_with_cache()
            return
        except (Refused, rt.BundleError, OSError, ValueError, KeyError) as e:
            self._refused[key] = time.time()
            self._failed("refused", f"version {active.version} refused, still serving "
                                    f"{self.version or 'nothing'}: {e}")
            return
        self._refused.pop(key, None)
        self._swap(predictor, active.bundle_sha256)
        self.state, self.last_error = "ok", None

    def _follow(self):
        while True:  # a daemon thread's body: check every `poll` seconds, for ever
            time.sleep(self.poll)
            try:
                self.check()
            except Exception as e:  # never let the thread die: the node would stop following
                log.exception("model source check failed")
                self._failed("refused", f"unexpected error: {e}")

    def start(self):
        """Follow on a daemon thread in this process, once per process (threads do not survive
        fork). A freshly forked worker first checks in the foreground: it may have been forked
        from a process that serves an older version."""
        if self._thread_pid == os.getpid():
            return
        with self._starting:
            if self._thread_pid == os.getpid():
                return
            self.check()
            self._thread_pid = os.getpid()
            threading.Thread(target=self._follow, name="winnow-follow", daemon=True).start()

    def describe(self):
        """Return the source's state for /readyz."""
        return {"location": self.source.location, "state": self.state,
                "active": self.source_active,
                "checked_s_ago": (round(time.time() - self.checked_at, 3)
                                  if self.checked_at else None),
                "last_error": self.last_error}
