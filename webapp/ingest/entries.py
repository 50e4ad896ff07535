"""What an upload is made of: one Entry per file, and the refusal of an upload as a whole."""
from dataclasses import dataclass


class UploadRefused(ValueError):
    """An upload refused as a whole; the message says why."""


@dataclass
class Entry:
    """One file of an upload: its name, the class it goes to, why it is refused (if it is)."""

    name: str
    label: str | None
    refusal: str = ""
    source: object = None  # a staged file's path, or a zip's ZipInfo
