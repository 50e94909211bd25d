"""fer-train given bad input (issue 10, items 2, 3, 7, 8, 10, 11): one table, one row per case.

Each row names a setup that crafts real files in a temp folder (a tiny 7-class dataset,
truncated JPEGs, .gif-only class folders, BOM and latin-1 CSVs, a corrupt dataset cache, a
finished run to resume or overwrite), the arguments, the exit code, the words the message
must hold and the files that must or must not exist afterwards. Full and read-only disks are
small tmpfs mounts; rows that need one skip, saying why, where mounting is not allowed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import check_cli
from conftest import run_cli, write_faces

pytest.importorskip("torch", reason="the [train] extra is not installed")

from fer_edge.edge.labels import FER2013_LABELS

TINY = ["--arch", "fercnn_s", "--epochs", "1", "--batch-size", "8", "--threads", "1",
        "--seed", "0"]


def _dataset(root: Path) -> Path:
    write_faces(root / "train", dict.fromkeys(FER2013_LABELS, 4))
    write_faces(root / "test", dict.fromkeys(FER2013_LABELS, 2), seed=1)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset and a finished 1-of-2-epoch run (resumable) trained on it."""
    root = tmp_path_factory.mktemp("base")
    ds = _dataset(root / "ds")
    r = run_cli("fer_edge.train.cli", "--data", str(ds), *TINY, "--epochs", "2",
                "--stop-after", "1", "--out", str(root / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    return {"ds": ds, "run": root / "run"}


def _csv(path: Path, usages: list[str], encoding: str = "utf-8", bom: bool = False,
         extra: str = "") -> Path:
    rng = np.random.default_rng(0)
    rows = [f"{i % 7},{' '.join(map(str, rng.integers(0, 256, 2304)))},{u}"
            for i, u in enumerate(usages)]
    text = "emotion,pixels,Usage\n" + "\n".join(rows) + "\n" + extra
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode(encoding))
    return path


def _mount_tmpfs(where: Path, size: str, read_only: bool = False) -> None:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not permitted'}): "
                    "full/read-only disk rows need one")


# --------------------------------------------------------------------- setups: (tmp, base) -> {}

def s_none(tmp: Path, base: dict) -> dict:
    return {}


def s_run_copy(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["run"], tmp / "old")
    return {"old": tmp / "old"}


def s_truncated_jpeg(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["ds"], tmp / "ds")
    jpg = tmp / "ds" / "train" / "sad" / "001.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    return {"ds": tmp / "ds"}


def s_tiny_image(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["ds"], tmp / "ds")
    cv2.imwrite(str(tmp / "ds" / "train" / "fear" / "dot.png"), np.full((1, 1), 99, np.uint8))
    return {"ds": tmp / "ds"}


def s_gif_only_class(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["ds"], tmp / "ds")
    happy = tmp / "ds" / "train" / "happy"
    for f in happy.iterdir():
        f.unlink()
    for i in range(3):
        (happy / f"{i}.gif").write_bytes(b"GIF89a" + bytes(64))
    return {"ds": tmp / "ds"}


def s_gif_beside_jpegs(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["ds"], tmp / "ds")
    (tmp / "ds" / "train" / "happy" / "extra.gif").write_bytes(b"GIF89a" + bytes(64))
    return {"ds": tmp / "ds"}


def s_no_val_split(tmp: Path, base: dict) -> dict:
    shutil.copytree(base["ds"] / "train", tmp / "ds" / "train")
    return {"ds": tmp / "ds"}


def s_one_image(tmp: Path, base: dict) -> dict:
    write_faces(tmp / "ds", {"happy": 1})
    return {"ds": tmp / "ds"}


def s_no_classes(tmp: Path, base: dict) -> dict:
    (tmp / "ds" / "pictures").mkdir(parents=True)
    return {"ds": tmp / "ds"}


def s_csv_unknown_usage(tmp: Path, base: dict) -> dict:
    return {"csv": _csv(tmp / "fer.csv", ["Training"] * 14 + ["Train"] + ["PublicTest"] * 7)}


def s_csv_latin1(tmp: Path, base: dict) -> dict:
    return {"csv": _csv(tmp / "fer.csv", ["Training"] * 14 + ["PublicTest"] * 7,
                        encoding="latin-1", extra="# \xe9t\xe9\n")}


def s_csv_bom(tmp: Path, base: dict) -> dict:
    return {"csv": _csv(tmp / "fer.csv", ["Training"] * 14 + ["PublicTest"] * 7, bom=True)}


def s_not_csv(tmp: Path, base: dict) -> dict:
    (tmp / "fer.txt").write_text("emotion,pixels,Usage\n")
    return {"csv": tmp / "fer.txt"}


def s_other_teacher(tmp: Path, base: dict) -> dict:
    from fer_edge.train.checkpoint import save_checkpoint
    from fer_edge.train.models import create_model

    model = create_model("fercnn_s", num_classes=6)
    save_checkpoint({"arch": "fercnn_s", "labels": list(FER2013_LABELS[:6]),
                     "input": {"height": 48, "width": 48, "channels": 1},
                     "model": model.state_dict()}, tmp / "teacher6.pt")
    return {"teacher": tmp / "teacher6.pt"}


def s_full_disk(tmp: Path, base: dict) -> dict:
    _mount_tmpfs(tmp / "mnt", "64k")
    return {"mnt": tmp / "mnt"}


def s_small_disk(tmp: Path, base: dict) -> dict:
    """Room for the probe, the epoch-0 last.pt and best.pt (1.2 MB each), not for the
    epoch-1 last.pt (2.4 MB with the optimizer's momentum) beside them."""
    _mount_tmpfs(tmp / "mnt", "3m")
    return {"mnt": tmp / "mnt"}


def s_read_only_disk(tmp: Path, base: dict) -> dict:
    _mount_tmpfs(tmp / "mnt", "1m", read_only=True)
    return {"mnt": tmp / "mnt"}


def s_out_is_file(tmp: Path, base: dict) -> dict:
    (tmp / "taken").write_text("not a folder")
    return {}


# ------------------------------------------------------------------------------------ the table
# id, setup, args ({name} = a path from base or the setup; {tmp} = the test's folder), exit
# code, words of the message, files that must exist, files that must not exist afterwards.
ROWS = [
    # item 2: never overwrite a run without being told to
    ("out-holds-run", s_run_copy, ["--data", "{ds}", *TINY, "--out", "{old}"], 1,
     ["--out", "already holds a run", "--exist-ok"], [], []),
    ("out-holds-run-exist-ok", s_run_copy,
     ["--data", "{ds}", *TINY, "--out", "{old}", "--exist-ok"], 0,
     ["writing to"], ["{old}/metrics.json"], []),
    ("out-is-a-file", s_out_is_file, ["--data", "{ds}", *TINY, "--out", "{tmp}/taken"], 1,
     ["taken", "is a file"], ["{tmp}/taken"], []),
    ("out-under-a-file", s_out_is_file,
     ["--data", "{ds}", *TINY, "--out", "{tmp}/taken/run"], 1, ["taken", "is a file"], [], []),
    # item 3: resume and init
    ("resume-into-new-folder", s_none,
     ["--data", "{ds}", *TINY, "--epochs", "2", "--resume", "{run}/last.pt", "--out",
      "{tmp}/new"], 0, ["outputs in"],
     ["{tmp}/new/metrics.json", "{tmp}/new/best.pt", "{tmp}/new/last.pt"], []),
    ("resume-into-new-folder-bad-data", s_none,
     ["--data", "{tmp}/nowhere", "--resume", "{run}/last.pt", "--out", "{tmp}/new"], 1,
     ["nowhere"], [], ["{tmp}/new"]),
    ("resume-other-arch", s_none,
     ["--data", "{ds}", "--resume", "{run}/last.pt", "--arch", "fercnn_m", "--out",
      "{tmp}/new"], 1, ["--arch fercnn_m", "fercnn_s", "differ"], [], ["{tmp}/new"]),
    ("resume-other-augment", s_none,
     ["--data", "{ds}", "--resume", "{run}/last.pt", "--no-flip", "--out", "{tmp}/new"], 1,
     ["--flip", "differ"], [], ["{tmp}/new"]),
    ("resume-fewer-epochs", s_none,
     ["--data", "{ds}", "--resume", "{run}/last.pt", "--epochs", "1", "--out", "{tmp}/new"], 1,
     ["--epochs 1", "--stop-after"], [], ["{tmp}/new"]),
    ("resume-and-init", s_none,
     ["--data", "{ds}", "--resume", "{run}/last.pt", "--init", "{run}/best.pt"], 1,
     ["--init", "--resume"], [], []),
    ("resume-best-pt", s_none,
     ["--data", "{ds}", "--resume", "{run}/best.pt", "--out", "{tmp}/new"], 1,
     ["best.pt", "optimizer"], [], ["{tmp}/new"]),
    ("resume-into-other-run", s_run_copy,
     ["--data", "{ds}", "--epochs", "2", "--resume", "{run}/last.pt", "--out", "{old}"], 1,
     ["already holds a run", "--exist-ok"], [], []),
    ("init-other-arch", s_none,
     ["--data", "{ds}", *TINY, "--arch", "fercnn_m", "--init", "{run}/best.pt", "--out",
      "{tmp}/new"], 1, ["--init", "features.0.weight", "--init-partial", "classifier head"],
     [], ["{tmp}/new"]),
    ("init-other-arch-partial", s_none,
     ["--data", "{ds}", *TINY, "--arch", "fercnn_m", "--init", "{run}/best.pt",
      "--init-partial", "--out", "{tmp}/new"], 0, ["loaded 9/50", "features.0.weight"],
     ["{tmp}/new/best.pt"], []),
    ("init-other-img-size", s_none,
     ["--data", "{ds}", *TINY, "--img-size", "64", "--init", "{run}/best.pt", "--out",
      "{tmp}/new"], 1, ["48x48", "--img-size", "64"], [], ["{tmp}/new"]),
    ("init-partial-without-init", s_none,
     ["--data", "{ds}", *TINY, "--init-partial", "--out", "{tmp}/new"], 1, ["--init"], [],
     ["{tmp}/new"]),
    # item 7: output disks and paths, checked before training; no empty folder left behind
    ("out-full-disk", s_full_disk, ["--data", "{ds}", *TINY, "--out", "{mnt}/run"], 1,
     ["--out", "no space left", "disk full"], [], ["{mnt}/run"]),
    ("out-read-only-disk", s_read_only_disk, ["--data", "{ds}", *TINY, "--out", "{mnt}/run"],
     1, ["--out", "read-only file system"], [], ["{mnt}/run"]),
    ("disk-fills-mid-run", s_small_disk, ["--data", "{ds}", *TINY, "--out", "{mnt}/run"], 1,
     ["last.pt", "no space left", "unchanged"], ["{mnt}/run/last.pt", "{mnt}/run/best.pt"],
     []),
    # item 8: silently wrong data
    ("truncated-jpeg", s_truncated_jpeg, ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1,
     ["001.jpg", "truncated", "--skip-bad"], [], ["{tmp}/new"]),
    ("truncated-jpeg-skip-bad", s_truncated_jpeg,
     ["--data", "{ds}", *TINY, "--skip-bad", "--out", "{tmp}/new"], 0,
     ["skipped 1 unreadable", "001.jpg"], ["{tmp}/new/metrics.json"], []),
    ("one-pixel-image", s_tiny_image, ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1,
     ["dot.png", "1x1", "too small"], [], ["{tmp}/new"]),
    ("gif-only-class-folder", s_gif_only_class,
     ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1, ["happy", "3 .gif", "JPEG"], [],
     ["{tmp}/new"]),
    ("gif-beside-jpegs-warns", s_gif_beside_jpegs,
     ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 0, ["happy", "1 .gif", "ignored"],
     ["{tmp}/new/metrics.json"], []),
    ("csv-unknown-usage", s_csv_unknown_usage,
     ["--data", "{csv}", *TINY, "--out", "{tmp}/new"], 1, ["fer.csv", "row 16", "'Train'"],
     [], ["{tmp}/new"]),
    # item 11: smaller ones
    ("csv-latin-1", s_csv_latin1, ["--data", "{csv}", *TINY, "--out", "{tmp}/new"], 1,
     ["fer.csv", "not UTF-8", "0xe9"], [], ["{tmp}/new"]),
    ("csv-with-bom-accepted", s_csv_bom, ["--data", "{csv}", *TINY, "--out", "{tmp}/new"], 0,
     ["outputs in"], ["{tmp}/new/metrics.json"], []),
    ("device-tpu", s_none, ["--data", "{ds}", *TINY, "--device", "tpu", "--out", "{tmp}/new"],
     1, ["--device", "tpu", "cuda:N"], [], ["{tmp}/new"]),
    # other combinations a demanding user tries
    ("data-not-csv", s_not_csv, ["--data", "{csv}", *TINY, "--out", "{tmp}/new"], 1,
     ["fer.txt", ".csv"], [], ["{tmp}/new"]),
    ("data-without-classes", s_no_classes, ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1,
     ["no 'train/'", "class folders"], [], ["{tmp}/new"]),
    ("val-split-missing", s_no_val_split, ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1,
     ["(--val-split test)", "no 'test/'"], [], ["{tmp}/new"]),
    ("one-training-image", s_one_image,
     ["--data", "{ds}", *TINY, "--out", "{tmp}/new"], 1,
     ["1 training image", "at least 2"], [], ["{tmp}/new"]),
    ("batch-larger-than-data", s_none,
     ["--data", "{ds}", *TINY, "--batch-size", "500", "--out", "{tmp}/new"], 0,
     ["--batch-size 500", "larger than the 28"], ["{tmp}/new/metrics.json"], []),
    ("teacher-other-labels", s_other_teacher,
     ["--data", "{ds}", *TINY, "--teacher", "{teacher}", "--out", "{tmp}/new"], 1,
     ["teacher6.pt", "teacher labels"], [], ["{tmp}/new"]),
    ("missing-data-no-folder-left", s_none,
     ["--data", "{tmp}/nowhere", *TINY, "--out", "{tmp}/a/b/new"], 1, ["nowhere"], [],
     ["{tmp}/a"]),
]


def _fill(s: str, names: dict) -> str:
    return s.format(**{k: str(v) for k, v in names.items()})


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_fer_train_bad_input(row, base, tmp_path, monkeypatch):
    _, setup, args, code, words, exist, absent = row
    names = {**base, "tmp": tmp_path, **setup(tmp_path, base)}
    old = names.get("old")
    before = {p: p.read_bytes() for p in old.glob("*.pt")} if old else {}
    try:
        check_cli("fer-train", [_fill(a, names) for a in args], code, words,
                  [_fill(p, names) for p in exist], [_fill(p, names) for p in absent])
        if code != 0:  # a refused run changed nothing it found
            for p, data in before.items():
                assert p.read_bytes() == data, f"{p} was modified"
        if "mnt" in names and (names["mnt"] / "run" / "last.pt").exists():
            from fer_edge.train.checkpoint import load_checkpoint

            assert load_checkpoint(names["mnt"] / "run" / "last.pt")["epoch"] == 0
            assert not list((names["mnt"] / "run").glob("*.tmp"))
    finally:
        if "mnt" in names:
            subprocess.run(["umount", str(names["mnt"])], check=False)


@pytest.mark.parametrize("args", [["--lr", "-1"], ["--lr", "0"], ["--weight-decay", "-0.1"],
                                  ["--rotate", "-5"], ["--warmup-epochs", "-1"]],
                         ids=lambda a: " ".join(a))
def test_out_of_range_options_are_usage_errors(args, tmp_path):
    """click refuses them before anything runs: exit 2 naming the option, no traceback."""
    r = run_cli("fer_edge.train.cli", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"Invalid value for '{args[0]}'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_default_out_is_numbered_and_resume_stays_in_its_folder(base, tmp_path):
    """runs/train, then runs/train2 (like ultralytics); --resume writes to the run's folder."""
    common = ["--data", str(base["ds"]), *TINY]
    for expected in ("train", "train2"):
        r = check_cli("fer-train", common, 0, [f"outputs in {Path('runs') / expected}"],
                      [tmp_path / "runs" / expected / "best.pt"], cwd=tmp_path)
    r = check_cli("fer-train", [*common, "--epochs", "2", "--resume", "runs/train/last.pt"], 0,
                  [f"outputs in {Path('runs') / 'train'}"], [], [tmp_path / "runs" / "train3"],
                  cwd=tmp_path)
    m = json.loads((tmp_path / "runs" / "train" / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2], r.stderr[-500:]


@pytest.mark.parametrize("damage", ["zero-bytes", "truncated"])
def test_corrupt_dataset_cache_is_rebuilt(base, tmp_path, monkeypatch, damage):
    """Item 10: an unreadable .npz in the cache is rebuilt with a warning, never a crash."""
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    args = ["--data", str(base["ds"]), *TINY, "--out", str(tmp_path / "a")]
    check_cli("fer-train", args, 0, [])
    caches = list((tmp_path / "cache" / "fer-edge").glob("*.npz"))
    assert len(caches) == 2  # train and test
    for c in caches:
        c.write_bytes(b"" if damage == "zero-bytes" else c.read_bytes()[:300])
    args[-1] = str(tmp_path / "b")
    check_cli("fer-train", args, 0, ["unreadable dataset cache", "rebuilding"])
    for c in caches:  # rebuilt, readable again
        with np.load(c) as z:
            assert len(z["images"]) > 0


def test_read_only_folder_without_root(base, tmp_path):
    """Item 7 where no tmpfs can be mounted: a folder without write permission."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores permissions; the read-only tmpfs row covers this")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    check_cli("fer-train", ["--data", base["ds"], *TINY, "--out", ro / "run"], 1,
              ["--out", "permission denied"], [], [ro / "run"])


def test_write_failure_names_the_file():
    """A real ENOSPC from /dev/full through the one wrapper every fer-train write uses."""
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.inputs.files import writing

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(FerEdgeError, match=r"/dev/full: cannot write \(No space left"), \
            writing("/dev/full"), open("/dev/full", "wb", buffering=0) as fh:
        fh.write(b"x")


def test_resume_settings_from_the_python_api(base, tmp_path):
    """fit() without the CLI: settings changed from TrainConfig's defaults count as given."""
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.train.trainer import TrainConfig, changed_options, fit

    cfg = TrainConfig(data=str(base["ds"]), resume=str(base["run"] / "last.pt"),
                      arch="fercnn_l", out=str(tmp_path / "x"))
    assert {"arch", "resume", "out"} <= changed_options(cfg)
    with pytest.raises(FerEdgeError, match="--arch fercnn_l"):
        fit(cfg)
    assert not (tmp_path / "x").exists()
