"""Build the face-detection set (boxes + five landmarks) from public git snapshots.

The images are research-only and never enter the repo: this script rebuilds the set from the
snapshots that ``git clone`` (or the fetch tool) brings, into a folder of your choice::

    python -m fer_edge.train.detector.dataset --mirror-dir /work/.mirror --out /work/data-det

``--mirror-dir`` holds one bare git repository (or clone) per source, as
``owner+name/repo`` (the fetch tool's layout), ``owner+name`` or ``name``:

- WIDER FACE train subset (1,000 images, YOLO boxes) and 399 held WIDER val images:
  himanshuchopade97/Crowd-Counting @ 6c86209a, datasets/widerface/{images,labels}/{train,val}
- five landmarks for most of those train faces: ShiqiYu/libfacedetection.train @ 9d8553d3,
  data/WIDER_FACE_landmark/annotations (VOC XML with <lm>), joined to the YOLO boxes by IoU
- 7,876 single-face web photos with box + landmarks (optional): HansonSun/FaceLabelTools
  @ a816eda9 net_7876/; training: the ones AITTSMD/MTCNN-Tensorflow @ 3b3934d3
  prepare_data/trainImageList.txt names; held out (``val_net7876.jsonl``): the ones
  FaceLabelTools' testImageList.txt names
- FDDB (optional, evaluation): penolove/pyxml @ 38022d59 FDDB2007/ (VOC boxes from the
  ellipses, which cover the whole head: shrunk to a face box, see :func:`fddb_face_box`)

Output: ``images/<set>/*.jpg`` (longest side at most ``--max-side``) and one JSON-lines label
file per set (``train.jsonl``, ``val_wider.jsonl``, ``val_net7876.jsonl``,
``val_fddb.jsonl``): per image
``{"image": "images/...", "faces": [[x0, y0, x1, y1, lx1, ly1, ..., lx5, ly5, has_lm], ...]}``
in pixels of the stored image. Landmark order: left eye, right eye, nose tip, left mouth
corner, right mouth corner (left = image left); ``has_lm`` 0 means the ten values are unknown.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from fer_edge.edge.detection.metrics import iou
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_bytes, atomic_write_text

WIDER = ("himanshuchopade97/Crowd-Counting", "6c86209a36e71286d8d06f70809d038450ac608c")
LANDMARKS = ("ShiqiYu/libfacedetection.train", "9d8553d3c234873aad8d177218b6be1ed14f9250")
NET7876 = ("HansonSun/FaceLabelTools", "a816eda973a6758acdf384846a794a43c6b12c5e")
NET7876_LIST = ("AITTSMD/MTCNN-Tensorflow", "3b3934d38f8d34287cc933a581537a1acfd0bb60")
FDDB = ("penolove/pyxml", "38022d596e847522fc8ae5e10eae6a2ab52d69ee")


def find_git_dir(mirror_dir: Path, repo: str) -> Path | None:
    owner, name = repo.split("/")
    for cand in (mirror_dir / f"{owner}+{name}" / "repo", mirror_dir / f"{owner}+{name}",
                 mirror_dir / name):
        for g in (cand / ".git", cand):
            if (g / "objects").is_dir():
                return g
    return None


def _git_dir(mirror_dir: Path, repo: str, required: bool = True) -> Path | None:
    g = find_git_dir(mirror_dir, repo)
    if g is None and required:
        raise FerEdgeError(f"--mirror-dir {mirror_dir}: no snapshot of {repo} (expected "
                           f"{repo.replace('/', '+')}/repo or a clone named {repo.split('/')[1]})")
    return g


def read_tree(git_dir: Path, commit: str, subdir: str) -> dict[str, bytes]:
    """Every file under ``subdir`` at ``commit`` (``git archive commit:subdir``, which works
    where the snapshot omits large blobs elsewhere)."""
    r = subprocess.run(["git", "--git-dir", str(git_dir), "archive", f"{commit}:{subdir}"],
                       capture_output=True)
    if r.returncode != 0:
        why = r.stderr.decode(errors="replace").strip().splitlines()
        raise FerEdgeError(f"{git_dir}: cannot read {commit[:8]}:{subdir} "
                           f"({why[0] if why else 'git archive failed'})")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        for m in tar.getmembers():
            if m.isfile():
                out[m.name] = tar.extractfile(m).read()
    return out


def _store(img_bytes: bytes, name: str, out: Path, max_side: int) -> tuple[str, float] | None:
    img = cv2.imdecode(np.frombuffer(img_bytes, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    s = min(1.0, max_side / max(img.shape[:2]))
    if s < 1.0:
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                         interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    rel = f"images/{name}"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / rel, enc.tobytes())
    return rel, s


def parse_landmark_xml(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy [N,4], landmarks [N,10] with NaN where the face has none)."""
    root = ET.fromstring(data)
    boxes, lms = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
        lm = obj.find("lm")
        has = obj.findtext("has_lm", "0").strip() == "1" and lm is not None
        lms.append([float(lm.find(f"{c}{i}").text) for i in range(1, 6) for c in "xy"]
                   if has else [np.nan] * 10)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(lms, np.float32).reshape(-1, 10)


def yolo_boxes(text: str, w: int, h: int) -> np.ndarray:
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    b = np.array([[float(v) for v in r[1:5]] for r in rows], np.float32).reshape(-1, 4)
    cx, cy, bw, bh = b[:, 0] * w, b[:, 1] * h, b[:, 2] * w, b[:, 3] * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)


def _faces(boxes: np.ndarray, lms: np.ndarray, s: float) -> list[list[float]]:
    rows = []
    for b, lm in zip(boxes, lms, strict=True):
        has = not np.isnan(lm).any()
        rows.append([round(float(v) * s, 2) for v in b]
                    + [round(float(v) * s, 2) if has else 0.0 for v in lm] + [int(has)])
    return rows


def build_wider(g: Path, glm: Path | None, out: Path, max_side: int) -> dict[str, int]:
    commit = WIDER[1]
    xml = {}
    if glm is not None:
        for name, data in read_tree(glm, LANDMARKS[1],
                                    "data/WIDER_FACE_landmark/annotations").items():
            # 0--Parade_0_Parade_Parade_0_1014.xml is image 0_Parade_Parade_0_1014
            xml[name.split("_", 1)[1].rsplit(".", 1)[0]] = data
    counts = {}
    for split, label_file in (("train", "train.jsonl"), ("val", "val_wider.jsonl")):
        images = read_tree(g, commit, f"datasets/widerface/images/{split}")
        labels = read_tree(g, commit, f"datasets/widerface/labels/{split}")
        rows, n_faces, n_lm = [], 0, 0
        for name in sorted(images):
            stem = name.rsplit(".", 1)[0]
            if f"{stem}.txt" not in labels:
                print(f"skip {split}/{name}: no label file", file=sys.stderr)
                continue
            img = cv2.imdecode(np.frombuffer(images[name], np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                print(f"skip {split}/{name}: not a readable image", file=sys.stderr)
                continue
            h, w = img.shape[:2]
            boxes = yolo_boxes(labels[f"{stem}.txt"].decode(), w, h)
            lms = np.full((len(boxes), 10), np.nan, np.float32)
            if split == "train" and stem in xml:
                xb, xl = parse_landmark_xml(xml[stem])
                ov = iou(boxes, xb)
                for i in range(len(boxes)):
                    j = int(ov[i].argmax()) if ov.shape[1] else -1
                    if j >= 0 and ov[i, j] > 0.5:
                        lms[i] = xl[j]
            stored = _store(images[name], f"wider_{split}/{name}", out, max_side)
            if stored is None:
                continue
            rel, s = stored
            rows.append({"image": rel, "faces": _faces(boxes, lms, s)})
            n_faces += len(boxes)
            n_lm += int((~np.isnan(lms).any(1)).sum())
        atomic_write_text(out / label_file, "".join(json.dumps(r) + "\n" for r in rows))
        counts[f"wider_{split}_images"], counts[f"wider_{split}_faces"] = len(rows), n_faces
        counts[f"wider_{split}_landmarks"] = n_lm
    return counts


def build_net7876(g: Path, list_text: str, out: Path, max_side: int, folder: str
                  ) -> list[dict]:
    """The net_7876 photos named in an MTCNN image list (``path left right top bottom x1 y1
    ... x5 y5``, backslash or slash paths), stored under ``images/<folder>/``."""
    ann = {}
    for ln in list_text.splitlines():
        p = ln.split()
        if len(p) == 15 and p[0].replace("\\", "/").startswith("net_7876/"):
            ann[p[0].replace("\\", "/").split("/", 1)[1]] = [float(v) for v in p[1:]]
    images = read_tree(g, NET7876[1], "net_7876")
    rows = []
    for name in sorted(ann):
        if name not in images:
            continue
        left, right, top, bottom, *lm = ann[name]
        stored = _store(images[name], f"{folder}/{name}", out, max_side)
        if stored is None:
            continue
        rel, s = stored
        rows.append({"image": rel, "faces": _faces(np.array([[left, top, right, bottom]]),
                                                   np.array([lm], np.float32), s)})
    return rows


def _git_show(g: Path, commit: str, path: str) -> str:
    r = subprocess.run(["git", "--git-dir", str(g), "show", f"{commit}:{path}"],
                       capture_output=True)
    if r.returncode != 0:
        raise FerEdgeError(f"{g}: cannot read {commit[:8]}:{path}")
    return r.stdout.decode(errors="replace")


def fddb_face_box(b: np.ndarray) -> np.ndarray:
    """FDDB boxes bound the head ellipse (forehead to chin and ears, hair included): the
    WIDER-style face box is narrower and sits lower. Width x0.8, height x0.8, centre moved
    down by 0.1 of the height."""
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    w, h = (b[:, 2] - b[:, 0]) * 0.8, (b[:, 3] - b[:, 1]) * 0.8
    cy = cy + 0.1 * (b[:, 3] - b[:, 1])
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def build_fddb(g: Path, out: Path, max_side: int, limit: int | None) -> list[dict]:
    anns = read_tree(g, FDDB[1], "FDDB2007/Annotations")
    images = read_tree(g, FDDB[1], "FDDB2007/JPEGImages")
    rows = []
    for name in sorted(anns)[:limit]:
        stem = name.rsplit(".", 1)[0]
        if f"{stem}.jpg" not in images:
            continue
        root = ET.fromstring(anns[name])
        boxes = np.array([[float(o.find("bndbox").findtext(k)) for k in
                           ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")],
                         np.float32).reshape(-1, 4)
        stored = _store(images[f"{stem}.jpg"], f"fddb/{stem}.jpg", out, max_side)
        if stored is None:
            continue
        rel, s = stored
        rows.append({"image": rel, "faces": _faces(fddb_face_box(boxes),
                                                   np.full((len(boxes), 10), np.nan), s)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fer_edge.train.detector.dataset",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror-dir", required=True, type=Path,
                    help="folder with the git snapshots (owner+name/repo or name)")
    ap.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    ap.add_argument("--max-side", type=int, default=640, help="longest image side stored")
    ap.add_argument("--no-net7876", action="store_true", help="skip the 7,876 web photos")
    ap.add_argument("--fddb-limit", type=int, default=None,
                    help="evaluate on only the first N FDDB images")
    a = ap.parse_args(argv)
    try:
        a.out.mkdir(parents=True, exist_ok=True)
        counts = build_wider(_git_dir(a.mirror_dir, WIDER[0]),
                             _git_dir(a.mirror_dir, LANDMARKS[0], required=False), a.out,
                             a.max_side)
        train = [json.loads(ln) for ln in (a.out / "train.jsonl").read_text().splitlines()]
        g, gl = (_git_dir(a.mirror_dir, r, required=False) for r in (NET7876[0],
                                                                     NET7876_LIST[0]))
        if not a.no_net7876 and g and gl:
            net = build_net7876(g, _git_show(gl, NET7876_LIST[1],
                                             "prepare_data/trainImageList.txt"),
                                a.out, a.max_side, "net7876")
            counts["net7876_images"] = len(net)
            atomic_write_text(a.out / "train.jsonl",
                              "".join(json.dumps(r) + "\n" for r in train + net))
            # the photos the MTCNN test list names: held out, with landmarks
            held = build_net7876(g, _git_show(g, NET7876[1], "testImageList.txt"), a.out,
                                 a.max_side, "net7876_test")
            counts["net7876_test_images"] = len(held)
            atomic_write_text(a.out / "val_net7876.jsonl",
                              "".join(json.dumps(r) + "\n" for r in held))
        gf = _git_dir(a.mirror_dir, FDDB[0], required=False)
        if gf:
            fddb = build_fddb(gf, a.out, a.max_side, a.fddb_limit)
            counts["fddb_images"] = len(fddb)
            counts["fddb_faces"] = sum(len(r["faces"]) for r in fddb)
            atomic_write_text(a.out / "val_fddb.jsonl",
                              "".join(json.dumps(r) + "\n" for r in fddb))
        atomic_write_text(a.out / "counts.json", json.dumps(counts, indent=2) + "\n")
    except FerEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
