"""Dataset readers: FER2013 (Kaggle folder layout or challenge CSV) and labelled folders.

The data room of the shared contract: this module (``Split``, ``load_split`` and the readers),
``splits`` (the train/val/test split of data that has none) and ``soft_labels`` (FER+ vote
distributions as training targets). May import the shared top modules and the input room.

Every reader returns a :class:`Split` of uint8 grayscale faces at a fixed size, the form that
:func:`fer_edge.edge.preprocess.preprocess` turns into model input. Decoded splits are cached
as ``.npz`` files keyed on the source (file list, sizes, mtimes), so a second load is instant
and a changed dataset is read again.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import FerEdgeError
from ..inputs.files import atomic_write
from ..inputs.images import IMAGE_SUFFIXES, UNSUPPORTED_SUFFIXES, BadImage, read_image
from ..labels import FER2013_LABELS, class_name
from .splits import DEFAULT_FRACTIONS, PART_OF, counts_line, plan_split, split_record

log = logging.getLogger(__name__)

MIN_SIDE = 8  # a smaller image cannot hold a face: refused like a corrupt one
CSV_USAGE = {"train": "Training", "training": "Training",
             "test": "PublicTest", "val": "PublicTest", "validation": "PublicTest",
             "publictest": "PublicTest", "privatetest": "PrivateTest"}
# The Kaggle folder layout names the PublicTest split "test".
FOLDER_SPLIT = {"training": "train", "train": "train", "test": "test", "publictest": "test",
                "val": "test", "validation": "test"}
# The Usage values of the challenge CSV (any case); another value is an error, never a
# silently dropped row.
CSV_USAGE_VALUES = {"training": "Training", "publictest": "PublicTest",
                    "privatetest": "PrivateTest"}
CACHE_VERSION = 2  # 2: images read with imageio.read_image (truncated/tiny files refused)


@dataclass
class Split:
    """One labelled split held in memory."""

    images: np.ndarray  # uint8 [N, H, W]
    labels: np.ndarray  # int64 [N], indices into ``label_names``
    label_names: tuple[str, ...]
    source: str
    paths: list[str] = field(default_factory=list)  # per image, when read from files
    # per image, a training target distribution over ``label_names`` (float32 [N, C]; FER+
    # votes, see soft_labels.py); None: the single labels are the targets
    soft: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.label_names))

    def stratified(self, n: int | None, seed: int = 0) -> Split:
        """At most about ``n`` images keeping the class proportions (every present class
        kept), seed-fixed; the whole split when ``n`` is None or not smaller."""
        if n is None or n >= len(self):
            return self
        rng = np.random.default_rng(seed)
        idx = []
        for c in range(len(self.label_names)):
            members = np.flatnonzero(self.labels == c)
            if len(members):
                k = max(1, round(n * len(members) / len(self)))
                idx.append(rng.choice(members, size=min(k, len(members)), replace=False))
        return self.subset(np.sort(np.concatenate(idx)))

    def capped(self, per_class: int, seed: int = 0) -> Split:
        """At most ``per_class`` images of each class (a seed-fixed sample)."""
        rng = np.random.default_rng(seed)
        idx = [m if len(m) <= per_class else rng.choice(m, per_class, replace=False)
               for m in (np.flatnonzero(self.labels == c) for c in range(len(self.label_names)))]
        return self.subset(np.sort(np.concatenate(idx)))

    def subset(self, index: np.ndarray) -> Split:
        paths = [self.paths[i] for i in index] if self.paths else []
        return Split(self.images[index], self.labels[index], self.label_names, self.source, paths,
                     None if self.soft is None else self.soft[index])

    def targets(self) -> np.ndarray:
        """The training target distribution of every image: ``soft``, else one-hot labels."""
        if self.soft is not None:
            return self.soft
        return np.eye(len(self.label_names), dtype=np.float32)[self.labels]


def concat_splits(splits: Sequence[Split]) -> Split:
    """One split of several with the same label names and image size (training on more than
    one dataset)."""
    first = splits[0]
    for s in splits[1:]:
        if s.label_names != first.label_names or s.images.shape[1:] != first.images.shape[1:]:
            raise FerEdgeError(f"{s.source}: labels {s.label_names} / size "
                               f"{s.images.shape[1:]} differ from {first.source}'s")
    paths = [p for s in splits for p in (s.paths or [""] * len(s))]
    soft = np.concatenate([s.targets() for s in splits]) \
        if any(s.soft is not None for s in splits) else None
    return Split(np.concatenate([s.images for s in splits]),
                 np.concatenate([s.labels for s in splits]), first.label_names,
                 " + ".join(s.source for s in splits), paths, soft)


def default_cache_dir() -> Path:
    root = os.environ.get("FER_EDGE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "fer-edge" if root else Path.home() / ".cache" / "fer-edge"


# --------------------------------------------------------------------------- public readers

def load_split(
    path: str | os.PathLike,
    split: str = "train",
    labels: Sequence[str] = FER2013_LABELS,
    size: int = 48,
    skip_bad: bool = False,
    cache: bool = True,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group: str | None = None,
) -> Split:
    """Load ``split`` of a dataset: a Kaggle-layout folder (train/, test/), a challenge CSV,
    or a folder of class folders (CK+ style) / a CSV without Usage, which have no split: for
    those ``train``, ``val`` and ``test`` are the parts of :func:`auto_split` (``fractions``,
    ``seed``, ``group``) and ``all`` is every image."""
    whole = read_unsplit(path, labels, size, skip_bad, cache, split)
    if whole is None:
        return _read_predefined(Path(path), split, labels, size, skip_bad, cache)
    if split.lower() == "all":
        return whole
    part = PART_OF.get(split.lower())
    if part is None:
        raise FerEdgeError(f"{path}: has no split {split!r}; a dataset without a split is "
                           "divided into train, val and test (or 'all')")
    return auto_split(whole, fractions, seed, group)[0][part]


def read_unsplit(path: str | os.PathLike, labels: Sequence[str] = FER2013_LABELS,
                 size: int = 48, skip_bad: bool = False, cache: bool = True,
                 split: str = "train") -> Split | None:
    """Every image of a dataset that has no split of its own (class folders without train/ and
    test/, a CSV without Usage); None for one that has a split."""
    p = Path(path)
    if not p.exists():
        raise FerEdgeError(f"{p}: no such file or directory")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise FerEdgeError(f"{p}: expected a FER2013 .csv file or a dataset folder")
        return None if _csv_has_usage(p) else read_fer2013_csv(p, None, labels, size, cache)
    if any((p / name).is_dir() for name in FOLDER_SPLIT) \
            or (p / FOLDER_SPLIT.get(split.lower(), split)).is_dir():
        return None
    if any(class_name(d.name) in labels for d in p.iterdir() if d.is_dir()):
        return read_labelled_folder(p, labels, size, skip_bad, cache)
    return None


def auto_split(whole: Split, fractions: Sequence[float] = DEFAULT_FRACTIONS,
               seed: int = 0, group: str | None = None) -> tuple[dict[str, Split], dict]:
    """The train/val/test parts of a dataset without a split (stratified, seed-fixed, exact
    duplicates and files of one ``group`` on one side: :func:`fer_edge.edge.data.splits.plan_split`)
    and their record."""
    parts, dup = plan_split(whole.images, whole.labels, len(whole.label_names), fractions, seed,
                            whole.paths, group)
    root = whole.source.rsplit(":", 1)[0] if not whole.paths else whole.source
    record = split_record(parts, whole.paths, whole.labels, whole.label_names, root,
                          fractions, seed, dup, group)
    return {k: whole.subset(v) for k, v in parts.items()}, record


def split_info(path: str | os.PathLike, labels: Sequence[str] = FER2013_LABELS,
               size: int = 48, skip_bad: bool = False,
               fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
               group: str | None = None) -> dict | None:
    """The record of the automatic split of ``path`` (None when it has its own split), with
    its counts logged (and a warning for a class missing from val or test)."""
    whole = read_unsplit(path, labels, size, skip_bad)
    if whole is None:
        return None
    record = auto_split(whole, fractions, seed, group)[1]
    log.info("%s", counts_line(record))
    for part in ("val", "test"):
        absent = [n for n, k in record["per_class"][part].items() if not k]
        if absent and record["counts"][part]:
            log.warning("%s: the %s part has no image of %s", path, part, ", ".join(absent))
    return record


def dataset_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """``--labels auto``: the class folders of a dataset (of its train/ folder when it has
    one), synonyms folded (anger -> angry), other names kept (contempt), in sorted order."""
    p = Path(path)
    if p.is_file():
        return FER2013_LABELS
    if not p.is_dir():
        raise FerEdgeError(f"{p}: no such file or directory")
    root = next((p / n for n in ("train", "training") if (p / n).is_dir()), p)
    names = sorted({class_name(d.name) for d in os.scandir(root)
                    if d.is_dir() and not d.name.startswith(".")})
    if not names:
        raise FerEdgeError(f"{root}: no class folders for --labels auto")
    return tuple(names)


def resolve_labels(spec: str, data: str | os.PathLike) -> tuple[str, ...]:
    """``--labels``: ``fer2013`` (the seven FER2013 classes in their order), ``auto`` (the class
    folders of ``data``) or a comma-separated list of names (synonyms folded)."""
    text = str(spec).strip()
    if text.lower() == "fer2013":
        return FER2013_LABELS
    if text.lower() == "auto":
        return dataset_labels(data)
    names = tuple(class_name(n) for n in text.split(",") if n.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        raise FerEdgeError(f"--labels {spec!r}: expected fer2013, auto or a list of at least two "
                           "distinct class names such as angry,happy,neutral")
    return names


def _read_predefined(p: Path, split: str, labels: Sequence[str], size: int, skip_bad: bool,
                     cache: bool) -> Split:
    if p.is_file():
        usage = CSV_USAGE.get(split.lower())
        if usage is None:
            raise FerEdgeError(f"unknown split {split!r} for {p}; choose from {sorted(CSV_USAGE)}")
        return read_fer2013_csv(p, usage, labels, size, cache)
    sub = FOLDER_SPLIT.get(split.lower(), split)
    if (p / sub).is_dir():
        return read_labelled_folder(p / sub, labels, size, skip_bad, cache)
    if split.lower() in ("privatetest",):
        raise FerEdgeError(f"{p}: the folder layout has no PrivateTest split (it is held out)")
    raise FerEdgeError(f"{p}: no '{sub}/' split folder and no class folders inside")


def _csv_has_usage(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return True  # let the reader name the problem
    return "usage" in (h.strip().lower() for h in header)


def read_labelled_folder(
    root: str | os.PathLike,
    labels: Sequence[str] = FER2013_LABELS,
    size: int = 48,
    skip_bad: bool = False,
    cache: bool = True,
) -> Split:
    """Read ``root/<class>/*.<image>``; class names may be synonyms (anger, happiness, ...).

    Folders whose name maps to no label of ``labels`` are skipped with a warning naming them;
    so are files that are not images OpenCV reads (a class folder holding only such images,
    .gif say, is an error). An unreadable, truncated or tiny (< 8 px) image is an error naming
    it, or, with ``skip_bad``, skipped and listed.
    """
    root = Path(root)
    if not root.is_dir():
        raise FerEdgeError(f"{root}: not a directory")
    labels = tuple(labels)
    files: list[tuple[str, int, os.stat_result]] = []
    for d in sorted((e for e in os.scandir(root) if e.is_dir()), key=lambda e: e.name):
        name = class_name(d.name)
        if name not in labels:
            log.warning("%s: folder %r is not one of the labels %s; skipped",
                        root, d.name, ", ".join(labels))
            continue
        idx = labels.index(name)
        n_before, other = len(files), []
        for f in sorted(os.scandir(d.path), key=lambda e: e.name):
            if not f.is_file() or f.name.startswith("."):
                continue
            if f.name.lower().endswith(IMAGE_SUFFIXES):
                files.append((f.path, idx, f.stat()))
            else:
                other.append(Path(f.name).suffix.lower() or "(no suffix)")
        _report_other_files(d.path, other, images=len(files) - n_before)
    if not files:
        raise FerEdgeError(f"{root}: no images found in class folders ({', '.join(labels)})")
    key = _key(["folder", str(root.resolve()), size, labels, skip_bad]
               + [(p, i, s.st_size, s.st_mtime_ns) for p, i, s in files])

    def decode() -> Split:
        from tqdm import tqdm

        images = np.empty((len(files), size, size), np.uint8)
        ok = np.ones(len(files), bool)
        bad: list[str] = []
        for n, (fp, _, _) in enumerate(tqdm(files, desc=f"decode {root.name}", unit="img",
                                            leave=False, disable=len(files) < 2000)):
            try:
                img = read_image(fp, gray=True, min_side=MIN_SIDE)
            except BadImage as e:
                if not skip_bad:
                    raise BadImage(f"{e} (pass --skip-bad to skip such files)") from None
                ok[n] = False
                bad.append(fp)
                continue
            images[n] = img if img.shape == (size, size) else cv2.resize(
                img, (size, size), interpolation=cv2.INTER_AREA)
        if bad:
            log.warning("%s: skipped %d unreadable image(s): %s", root, len(bad), ", ".join(bad))
        if not ok.any():
            raise FerEdgeError(f"{root}: all {len(files)} images are unreadable or corrupt")
        lab = np.array([i for _, i, _ in files], np.int64)
        return Split(images[ok], lab[ok], labels, str(root),
                     [f for (f, _, _), k in zip(files, ok, strict=True) if k])

    return _cached(key, f"{root.parent.name}-{root.name}", decode, cache)


def read_fer2013_csv(
    path: str | os.PathLike,
    usage: str | None = "Training",
    labels: Sequence[str] = FER2013_LABELS,
    size: int = 48,
    cache: bool = True,
) -> Split:
    """Read the challenge CSV (``emotion,pixels,Usage``; ``icml_face_data.csv``'s leading-space
    headers too). ``usage`` is Training, PublicTest, PrivateTest or None for all rows."""
    path = Path(path)
    st = path.stat()
    key = _key(["csv", str(path.resolve()), st.st_size, st.st_mtime_ns, usage, size, tuple(labels)])

    def decode() -> Split:
        label_map = _fer_index_map(labels, path)
        images, labs = [], []
        reader = None
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM is fine
                reader = csv.reader(fh)
                for img, lab in _csv_rows(reader, path, usage, label_map, size):
                    images.append(img)
                    labs.append(lab)
        except UnicodeDecodeError as e:
            raise FerEdgeError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} near "
                               f"line {reader.line_num + 1 if reader else 1}): FER2013 CSVs "
                               "are plain ASCII; is this the right file?") from None
        except csv.Error as e:
            raise FerEdgeError(f"{path}, line {reader.line_num if reader else 1}: not a "
                               f"readable CSV ({e})") from None
        if not images:
            raise FerEdgeError(f"{path}: no rows for split {usage!r}")
        return Split(np.stack(images), np.array(labs, np.int64), tuple(labels),
                     f"{path}:{usage or 'all'}")

    return _cached(key, f"{path.stem}-{usage or 'all'}", decode, cache)


def _csv_rows(reader, path: Path, usage: str | None, label_map: np.ndarray, size: int):
    """(face, label index) of every selected row; any bad row is an error naming it."""
    header = [h.strip().lower() for h in next(reader, [])]
    missing = {"emotion", "pixels"} - set(header)
    if missing:
        raise FerEdgeError(f"{path}: CSV header {header} lacks column(s) "
                           f"{sorted(missing)}; expected emotion,pixels,Usage")
    ie, ip = header.index("emotion"), header.index("pixels")
    iu = header.index("usage") if "usage" in header else None
    if usage is not None and iu is None:
        raise FerEdgeError(f"{path}: no Usage column, cannot select the {usage} split")
    for row_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise FerEdgeError(f"{path}, row {row_no}: {len(row)} fields, expected "
                               f"{len(header)}")
        if iu is not None:
            row_usage = CSV_USAGE_VALUES.get(row[iu].strip().lower())
            if row_usage is None:
                raise FerEdgeError(f"{path}, row {row_no}: Usage {row[iu].strip()!r} is not "
                                   "one of Training, PublicTest, PrivateTest")
            if usage is not None and row_usage != usage:
                continue
        try:
            pix = np.array(row[ip].split(), dtype=np.int32)
            emo = int(row[ie])
        except ValueError:
            raise FerEdgeError(f"{path}, row {row_no}: non-numeric emotion or pixels") from None
        if pix.size != 48 * 48:
            raise FerEdgeError(f"{path}, row {row_no}: {pix.size} pixels, expected 2304")
        if emo not in range(len(FER2013_LABELS)) or pix.min() < 0 or pix.max() > 255:
            raise FerEdgeError(f"{path}, row {row_no}: emotion {emo} or pixel values "
                               "out of range")
        if label_map[emo] < 0:
            continue
        img = pix.astype(np.uint8).reshape(48, 48)
        if size != 48:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        yield img, int(label_map[emo])


# --------------------------------------------------------------------------- helpers

def _report_other_files(folder: str, suffixes: list[str], images: int) -> None:
    """Name the files of a class folder that are not read: a warning, or an error when the
    folder holds images of a kind OpenCV cannot read (.gif, .heic, ...) and nothing else."""
    if not suffixes:
        return
    counts: dict[str, int] = {}
    for suf in suffixes:
        counts[suf] = counts.get(suf, 0) + 1
    what = ", ".join(f"{n} {suf}" for suf, n in sorted(counts.items()))
    unsupported = sorted(set(counts) & set(UNSUPPORTED_SUFFIXES))
    if images == 0 and unsupported:
        raise FerEdgeError(f"{folder}: no images OpenCV can read, only {what} file(s); convert "
                           f"the {', '.join(unsupported)} images to JPEG or PNG")
    log.warning("%s: %s file(s) ignored (readable images: %s)%s", folder, what,
                ", ".join(IMAGE_SUFFIXES),
                f"; convert {', '.join(unsupported)} to JPEG or PNG" if unsupported else "")


def _fer_index_map(labels: Sequence[str], path: Path) -> np.ndarray:
    """FER2013's emotion index -> index in ``labels`` (-1 when the model lacks that class)."""
    out = np.full(len(FER2013_LABELS), -1, np.int64)
    for i, name in enumerate(FER2013_LABELS):
        if name in labels:
            out[i] = list(labels).index(name)
    if (out < 0).all():
        raise FerEdgeError(f"{path}: none of the labels {list(labels)} are FER2013 classes")
    return out


def _key(parts: Iterable) -> str:
    h = hashlib.sha256(repr(CACHE_VERSION).encode())
    for p in parts:
        h.update(repr(p).encode())
    return h.hexdigest()[:20]


def _cached(key: str, stem: str, decode, use_cache: bool) -> Split:
    cdir = default_cache_dir()
    cfile = cdir / f"{stem}-{key}.npz"
    if use_cache and cfile.is_file():
        try:
            with np.load(cfile, allow_pickle=False) as z:
                split = Split(z["images"], z["labels"], tuple(str(s) for s in z["label_names"]),
                              str(z["source"]), [str(s) for s in z["paths"]])
            if split.images.ndim != 3 or len(split.images) != len(split.labels):
                raise ValueError(f"arrays of shape {split.images.shape}, {split.labels.shape}")
            return split
        except Exception as e:  # noqa: BLE001  a cache: truncated zip, zero bytes, bad CRC ...
            log.warning("%s: unreadable dataset cache (%s: %s); rebuilding it", cfile,
                        type(e).__name__, str(e)[:120] or "no detail")
    split = decode()
    if use_cache:
        try:
            cdir.mkdir(parents=True, exist_ok=True)
            arrays = {"images": split.images, "labels": split.labels,
                      "label_names": np.array(split.label_names),
                      "source": np.array(split.source), "paths": np.array(split.paths, dtype=str)}
            atomic_write(cfile, lambda fh: np.savez(fh, **arrays))
        except OSError as e:  # a read-only home must not stop training
            log.warning("could not write dataset cache %s: %s", cfile, e)
    return split

