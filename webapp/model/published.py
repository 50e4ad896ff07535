"""What the registry hands to serving nodes: the active version and its serving bundle's files.

The store is the source of truth: bundle.json is sent only when its bytes have the sha256 the
version's record holds, and a file only when that bundle.json lists it. The large files are not
hashed again here; a node checks each one against bundle.json before it serves.
"""
import hashlib
import json
import re
from pathlib import Path

from webapp.model import bundle, registry, serving
from webapp.runtime.bundle import MANIFEST

VERSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}")


class NotPublished(registry.ModelError):
    """A version or file a node cannot have: unknown, unfinished, or no usable bundle."""


class BundleMismatch(registry.ModelError):
    """The bundle on disk is not the one the registry recorded."""


def active(data_dir):
    """Return {"version", "bundle_sha256", "reason"}: what a node should serve, or why not."""
    version = registry.active_version(data_dir)
    if version is None:
        return {"version": None, "bundle_sha256": None, "reason": "no model is active yet"}
    try:
        record = _servable(data_dir, version)
    except NotPublished as e:
        return {"version": version, "bundle_sha256": None, "reason": str(e)}
    return {"version": version, "bundle_sha256": record["metrics"]["bundle"]["sha256"],
            "reason": None}


def _servable(data_dir, version):
    """Return the record of a ready version with a usable bundle, or raise NotPublished."""
    if not isinstance(version, str) or not VERSION_ID.fullmatch(version):
        raise NotPublished(f"{version!r} is not a model version id")
    try:
        record = registry.version_record(data_dir, version)
    except registry.ModelError as e:
        raise NotPublished(str(e)) from None
    if record["status"] != registry.READY:
        raise NotPublished(f"model {version} is not finished yet ({record['status']})")
    usable, reason = serving.bundle_status(record)
    if not usable:
        raise NotPublished(f"model {version} has no usable serving bundle: {reason}")
    return record


def _folder(data_dir, version):
    return bundle.bundle_dir(registry.models_dir(data_dir) / version)


def manifest(data_dir, version):
    """Return the bytes of a servable version's bundle.json, checked against its record."""
    record = _servable(data_dir, version)
    try:
        data = (_folder(data_dir, version) / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise NotPublished(f"model {version}: its {MANIFEST} is missing") from None
    if hashlib.sha256(data).hexdigest() != record["metrics"]["bundle"]["sha256"]:
        raise BundleMismatch("the bundle on disk does not match the registry")
    return data


def bundle_file(data_dir, version, name):
    """Return the path of one file a servable version's bundle.json lists, or raise NotPublished."""
    listed = bundle_files(data_dir, version)
    if name != Path(name).name or name not in listed:
        raise NotPublished(f"model {version}'s bundle has no file {name!r}")
    path = _folder(data_dir, version) / name
    if not path.is_file():
        raise NotPublished(f"model {version}: its bundle's {name} is missing")
    return path


def bundle_files(data_dir, version):
    """Return the file names a servable version's (checked) bundle.json lists."""
    return set(json.loads(manifest(data_dir, version)).get("files", {}))
