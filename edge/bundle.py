"""The model-bundle format (format_version 1): a folder with bundle.json and model files.

:func:`write_bundle_json` (export side) and :func:`load_bundle` (every reader) are the two
halves of the contract in docs/architecture.md. Readers verify the sha256 of every model file
and refuse a bundle whose files are missing, truncated or tampered with, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import FerEdgeError
from .inputs.files import atomic_write_text
from .preprocess import CropSpec, InputSpec

BUNDLE_FORMAT = "fer-edge-bundle"
BUNDLE_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "name", "arch", "labels", "input", "crop",
                 "output", "models", "metrics")
BUNDLE_JSON = "bundle.json"
# Labels reach logs, JSON, frames and the live page: short printable names only (no control
# characters, newlines or screens of text; the page still renders them as text, never HTML).
MAX_LABEL_CHARS = 32


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    arch: str
    labels: tuple[str, ...]
    input: InputSpec
    crop: CropSpec
    models: dict[str, dict[str, Any]]
    metrics: dict[str, Any]
    meta: dict[str, Any]  # the whole bundle.json

    @property
    def precisions(self) -> list[str]:
        return list(self.models)

    def model_path(self, precision: str) -> Path:
        if precision not in self.models:
            raise FerEdgeError(f"{self.path}: no {precision!r} model in this bundle; it has "
                               f"{', '.join(self.models) or 'none'}")
        return self.path / self.models[precision]["file"]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_bundle_path() -> Path:
    """The bundle that ships inside the package (used when no model is given)."""
    return Path(str(resources.files("fer_edge.edge") / "assets" / "default_bundle"))


def load_bundle(path: str | os.PathLike | None = None, verify: bool = True) -> Bundle:
    """Read and check a bundle folder (or its bundle.json); None means the shipped default."""
    p = Path(path) if path is not None else default_bundle_path()
    if p.is_file() and p.name == BUNDLE_JSON:
        p = p.parent
    meta_file = p / BUNDLE_JSON
    if not p.is_dir():
        raise FerEdgeError(f"{p}: model bundle folder not found")
    if not meta_file.is_file():
        raise FerEdgeError(f"{p}: not a model bundle (no {BUNDLE_JSON})")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FerEdgeError(f"{meta_file}: invalid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise FerEdgeError(f"{meta_file}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise FerEdgeError(f"{meta_file}: missing key(s) {', '.join(missing)}")
    if meta["format"] != BUNDLE_FORMAT or meta["format_version"] != BUNDLE_VERSION:
        raise FerEdgeError(f"{meta_file}: format {meta['format']!r} v{meta['format_version']} "
                           f"is not {BUNDLE_FORMAT} v{BUNDLE_VERSION}")
    models = meta["models"]
    if not isinstance(models, dict) or not models:
        raise FerEdgeError(f"{meta_file}: 'models' names no model file")
    for key, entry in models.items():
        if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
            raise FerEdgeError(f"{meta_file}: models.{key} needs 'file' and 'sha256'")
        if not isinstance(entry["file"], str) or Path(entry["file"]).name != entry["file"] \
                or entry["file"] in ("", ".", ".."):
            raise FerEdgeError(f"{meta_file}: models.{key}.file {entry['file']!r} must be a "
                               "file name inside the bundle folder")
        f = p / entry["file"]
        if not f.is_file():
            raise FerEdgeError(f"{f}: model file named in bundle.json is missing")
        if verify and sha256_file(f) != entry["sha256"]:
            raise FerEdgeError(f"{f}: sha256 does not match bundle.json (corrupt, truncated or "
                               "modified file)")
    labels = meta["labels"]
    if not isinstance(labels, list) or not labels or len(set(map(str, labels))) != len(labels) \
            or not all(isinstance(x, str) and x for x in labels):
        raise FerEdgeError(f"{meta_file}: 'labels' must be a non-empty list of distinct names")
    for x in labels:
        if not x.isprintable() or not x.strip() or len(x) > MAX_LABEL_CHARS:
            raise FerEdgeError(f"{meta_file}: label {x[:40]!r} is not a name: labels must be "
                               f"printable text of 1 to {MAX_LABEL_CHARS} characters")
    try:
        crop = CropSpec.from_dict(meta["crop"])
    except FerEdgeError as e:
        raise FerEdgeError(f"{meta_file}: {e}") from None
    for ok, what in ((isinstance(meta["metrics"], dict), "'metrics' must be an object"),
                     (isinstance(meta["name"], str), "'name' must be a string")):
        if not ok:
            raise FerEdgeError(f"{meta_file}: {what}")
    try:
        spec = InputSpec.from_dict(meta["input"])
    except FerEdgeError as e:
        raise FerEdgeError(f"{meta_file}: {e}") from None
    return Bundle(
        path=p, name=meta["name"], arch=str(meta["arch"]), labels=tuple(labels), input=spec,
        crop=crop,
        models=models, metrics=meta["metrics"], meta=meta,
    )


def write_bundle_json(folder: Path, meta: dict[str, Any]) -> Path:
    """Fill in the sha256 of every model file, check the keys, write bundle.json atomically.
    Call it last, after every model file is in place."""
    meta = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, **meta}
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise FerEdgeError(f"bundle for {folder}: missing key(s) {', '.join(missing)}")
    for entry in meta["models"].values():
        entry["sha256"] = sha256_file(folder / entry["file"])
        entry["bytes"] = (folder / entry["file"]).stat().st_size
    out = folder / BUNDLE_JSON
    atomic_write_text(out, json.dumps(meta, indent=2) + "\n")
    return out
