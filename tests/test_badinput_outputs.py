"""Data loss and stuck outputs (issue 23, items 1-4 and 17): an output that is an input (the
same file by device and inode: a path, a symlink or a hard link) is refused; ``--exist-ok``
replaces a bundle, never a user's other files; one run at a time writes into an output folder
(two real processes); a killed writer's temporaries are removed by the next writer to the same
place; a FIFO as an output or as the report's input is refused instead of blocking; a report
on a disk that fills up fails with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import check_cli, tmpfs
from test_badinput_edge import _first_frame

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import (
    atomic_write_bytes,
    check_not_inputs,
    folder_lock,
    sweep_stale,
    temp_prefix,
)

RUN = ("run", "--no-display", "-q")


@pytest.fixture()
def folder(video, tmp_path) -> Path:
    """A folder source with two images."""
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), _first_frame(video))
    cv2.imwrite(str(d / "b.jpg"), _first_frame(video))
    return d


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- item 1: an output is never an input ------------------------------------------------------

def test_jsonl_naming_an_image_of_the_folder_source_is_refused(folder):
    before = (folder / "b.jpg").read_bytes()
    check_cli("fer-edge", [*RUN, "--source", folder, "--jsonl", folder / "b.jpg"], 1,
              ["--jsonl", "b.jpg", "same file"])
    assert (folder / "b.jpg").read_bytes() == before


def test_hard_link_to_an_input_image_is_refused(folder, tmp_path):
    link = tmp_path / "out.jsonl"
    os.link(folder / "a.jpg", link)
    before = (folder / "a.jpg").read_bytes()
    check_cli("fer-edge", [*RUN, "--source", folder, "--jsonl", link], 1,
              ["--jsonl", "out.jsonl", "same file"])
    assert (folder / "a.jpg").read_bytes() == before


def test_symlink_to_the_video_source_as_save_video_is_refused(video, tmp_path):
    link = tmp_path / "out.avi"
    link.symlink_to(video)
    size = video.stat().st_size
    check_cli("fer-edge", [*RUN, "--source", video, "--save-video", link], 1,
              ["--save-video", "out.avi", "same file"])
    assert video.stat().st_size == size


def test_report_file_that_is_the_run_jsonl_is_refused(tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text('{"frame": 0}\n')
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "summary.md").symlink_to(run)
    check_cli("fer-edge", ["report", run, "--out", tmp_path / "rep", "--exist-ok"], 1,
              ["--out", "summary.md", "same file"])
    assert run.read_text() == '{"frame": 0}\n'


def test_bench_out_file_hard_linked_to_the_data_is_refused(tmp_path):
    data = tmp_path / "fer2013.csv"
    data.write_text("emotion,pixels,Usage\n")
    (tmp_path / "b").mkdir()
    os.link(data, tmp_path / "b" / "results.csv")
    check_cli("fer-bench", ["--data", data, "--out", tmp_path / "b", "--exist-ok"], 1,
              ["--out", "results.csv", "same file"], timeout=120)
    assert data.read_text() == "emotion,pixels,Usage\n"


def test_train_out_holding_the_init_checkpoint_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"weights")
    check_cli("fer-train", ["--data", tmp_path, "--init", run / "best.pt", "--out", run,
                            "--exist-ok"], 1, ["--out", "best.pt", "same file"], timeout=120)
    assert (run / "best.pt").read_bytes() == b"weights"


def test_export_over_a_bundle_holding_the_checkpoint_is_refused(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "bundle.json").write_text(json.dumps({"models": {"fp32": {"file": "model.onnx"}}}))
    os.link(b / "bundle.json", tmp_path / "ck.pt")  # the checkpoint is a link into the bundle
    check_cli("fer-export", [tmp_path / "ck.pt", "--out", b, "--exist-ok"], 1,
              ["--out", "bundle.json", "same file"], timeout=120)
    assert (b / "bundle.json").exists()


def test_check_not_inputs_ignores_new_files_and_urls(folder, tmp_path):
    check_not_inputs([("--jsonl", folder / "new.jsonl"), ("--x", tmp_path / "none")],
                     [folder, "rtsp://camera/1", None])
    with pytest.raises(FerEdgeError, match="--x .*a.jpg.*same file"):
        check_not_inputs([("--x", folder / "a.jpg")], [folder])


# -- item 2: --exist-ok replaces a bundle, nothing else -----------------------------------------

def test_export_exist_ok_keeps_a_folder_with_the_users_files(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "bundle.json").write_text(json.dumps({"models": {"fp32": {"file": "model.onnx"}}}))
    (b / "model.onnx").write_bytes(b"x")
    (b / "NOTES-mine.txt").write_text("mine")
    check_cli("fer-export", [tmp_path / "missing.pt", "--out", b, "--exist-ok"], 1,
              [str(b), "NOTES-mine.txt", "not part of the bundle"], timeout=120)
    assert (b / "NOTES-mine.txt").read_text() == "mine" and (b / "model.onnx").exists()


# -- item 3: one run per output folder, with two real processes ----------------------------------

HOLD = ("import sys\nfrom fer_edge.edge.inputs.files import folder_lock\n"
        "with folder_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture()
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out (released when its stdin closes)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    yield p
    p.stdin.close()
    p.wait(30)


@pytest.mark.parametrize("command, args", [
    ("fer-train", ["--data", "{tmp}", "--out", "{out}"]),
    ("fer-train-detector", ["--data", "{tmp}", "--out", "{out}"]),
    ("fer-export", ["{tmp}/missing.pt", "--out", "{out}"]),
    ("fer-bench", ["--out", "{out}"]),
    ("fer-edge", ["report", "{tmp}/run.jsonl", "--out", "{out}"]),
    ("fer-edge", [*RUN, "--source", "{video}", "--report", "{out}"]),
], ids=["train", "train-detector", "export", "bench", "report", "run-report"])
def test_a_second_run_into_a_locked_folder_is_refused(holder, video, tmp_path, command, args):
    (tmp_path / "run.jsonl").write_text('{"frame": 0}\n')
    cv2.imwrite(str(tmp_path / "i.jpg"), np.zeros((64, 64, 3), np.uint8))
    row = json.dumps({"image": "i.jpg", "faces": [[8, 8, 40, 40] + [20] * 10 + [1]]}) + "\n"
    for name in ("train.jsonl", "val_wider.jsonl"):  # a detection dataset for the detector
        (tmp_path / name).write_text(row)
    args = [a.format(tmp=tmp_path, out=tmp_path / "out", video=video) for a in args]
    check_cli(command, args, 1, [str(tmp_path / "out"), f"pid {holder.pid}", "another run"],
              timeout=300)
    assert not (tmp_path / "out").exists()


def test_two_real_runs_into_one_report_folder(video, tmp_path):
    """Two real fer-edge processes: while a run with --report holds the folder (paused with
    SIGSTOP once it has started, so the order is fixed), fer-edge report into the same folder
    is refused naming the first's pid; the first then finishes its report and frees the
    folder."""
    out = tmp_path / "rep"
    first = subprocess.Popen([sys.executable, "-m", "fer_edge.edge.cli", *RUN, "--source",
                              str(video), "--loop", "5", "--max-frames", "150", "--report",
                              str(out)], stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # printed once every source and output is open
            if line.startswith("fer-edge:"):
                break
        else:
            pytest.fail(f"fer-edge run ended early (exit {first.wait()})")
        first.send_signal(signal.SIGSTOP)
        (tmp_path / "other.jsonl").write_text('{"frame": 0}\n')
        check_cli("fer-edge", ["report", tmp_path / "other.jsonl", "--out", out, "--exist-ok"],
                  1, ["--out", str(out), f"pid {first.pid}", "another run"])
    finally:
        first.send_signal(signal.SIGCONT)
    err = first.stderr.read()
    assert first.wait(300) == 0, err[-2000:]
    assert (out / "summary.md").exists() and (out / "run.jsonl").exists()
    assert not (tmp_path / ".rep.lock").exists()  # released and removed at the end


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    with pytest.raises(FerEdgeError, match=f"pid {p.pid}"), folder_lock(tmp_path / "out"):
        pass
    p.kill()
    p.wait(30)
    with folder_lock(tmp_path / "out"):  # the kernel released it
        assert (tmp_path / ".out.lock").read_text().strip() == str(os.getpid())
    assert not (tmp_path / ".out.lock").exists()


# -- item 4: a killed writer's temporaries go, a live one's stay ---------------------------------

def test_stale_temporaries_of_dead_writers_are_swept(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        stale = [tmp_path / f"last.pt.pid{dead}.abc.tmp",
                 tmp_path / f".out.avi.pid{dead}.x1.partial.avi"]
        for p in stale:
            p.write_bytes(b"x" * 1000)
        stale_dir = tmp_path / f".bundle.pid{dead}.q2"
        stale_dir.mkdir()
        (stale_dir / "model.onnx").write_bytes(b"x")
        kept = [tmp_path / f"last.pt.pid{live.pid}.abc.tmp",  # a writer still running
                tmp_path / f"other.pt.pid{dead}.abc.tmp",  # another target's
                tmp_path / "last.pt.notes.tmp"]  # not a temporary of ours
        for p in kept:
            p.write_bytes(b"y")
        atomic_write_bytes(tmp_path / "last.pt", b"new")
        assert (tmp_path / "last.pt").read_bytes() == b"new"
        assert not stale[0].exists() and stale[1].exists() and stale_dir.exists()
        assert sweep_stale(tmp_path, "out.avi") == [stale[1]]
        assert sweep_stale(tmp_path, "bundle") == [stale_dir]
        assert all(p.exists() for p in kept)
        assert temp_prefix("x", hidden=True) == f".x.pid{os.getpid()}."
    finally:
        live.stdin.close()
        live.wait(30)


def test_export_removes_a_killed_exports_hidden_folders(tmp_path):
    from fer_edge.export.exporter import make_workdir

    dead = _dead_pid()
    for name in (f".b.pid{dead}.w1", f".b.old.pid{dead}.w2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"x" * 1000)
    work = make_workdir(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == [work.name]
    assert work.name.startswith(f".b.pid{os.getpid()}.")


def test_save_video_removes_a_killed_runs_partial_video(video, tmp_path):
    stale = tmp_path / f".out.avi.pid{_dead_pid()}.k9.partial.avi"
    stale.write_bytes(b"x" * 100_000)
    check_cli("fer-edge", [*RUN, "--source", video, "--max-frames", "3", "--save-video",
                           tmp_path / "out.avi"], 0, [])
    assert not stale.exists() and (tmp_path / "out.avi").exists()


def test_report_on_a_disk_that_fills_up_is_one_error(video, tmp_path):
    with tmpfs(tmp_path / "mnt", "40k") as mnt:
        check_cli("fer-edge", [*RUN, "--source", video, "--report", mnt / "r"], 1,
                  [str(mnt / "r"), "cannot write the report", "no space left"])
        assert not [p for p in (mnt / "r").iterdir() if p.name.endswith(".tmp")]


# -- item 17: FIFOs -------------------------------------------------------------------------------

def test_fifo_as_jsonl_is_refused(folder, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    check_cli("fer-edge", [*RUN, "--source", folder, "--jsonl", fifo], 1,
              ["--jsonl", "pipe", "FIFO"], timeout=60)


def test_fifo_as_a_report_file_or_input_is_refused(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    check_cli("fer-edge", ["report", fifo, "--out", tmp_path / "rep"], 1,
              ["pipe.jsonl", "FIFO"], timeout=60)
    run = tmp_path / "run.jsonl"
    run.write_text('{"frame": 0}\n')
    (tmp_path / "rep2").mkdir()
    os.mkfifo(tmp_path / "rep2" / "frames.csv")
    check_cli("fer-edge", ["report", run, "--out", tmp_path / "rep2", "--exist-ok"], 1,
              ["frames.csv", "FIFO"], timeout=60)
