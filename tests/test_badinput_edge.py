"""Bad input to the live loop (``fer-edge run``, ``calibrate-margin``, the Pipeline API):
one clear line and a non-zero exit, or a documented, sensible result; never a traceback, a
hang or a silently wrong answer. Real files crafted here, real OpenCV and onnxruntime, a real
http server on 127.0.0.1, real (small) tmpfs mounts for full and read-only disks."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from badinput import check_cli
from procs import signal_after_lines

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.sources import LiveCapture, SourceSpec, VideoFile, open_source
from fer_edge.edge.pipeline import BadFrame, Pipeline

RUN = ("run", "--no-display")


def _png_claiming(w: int, h: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I",
                                                                       zlib.crc32(tag + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _first_frame(video: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


def _write_video(path: Path, n: int, size: tuple[int, int] = (64, 48)) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), (i * 9) % 256, np.uint8))
    w.release()


@pytest.fixture(scope="module")
def files(video, tmp_path_factory) -> Path:
    """Every bad (and a few good) input file, written once."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    (d / "random.avi").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (d / "zero.mp4").write_bytes(b"")
    (d / "text.avi").write_text("this is not a video\n")
    data = video.read_bytes()
    (d / "half.avi").write_bytes(data[:len(data) // 2])  # truncated: 36 of 71 frames decode
    face = _first_frame(video)
    cv2.imwrite(str(d / "face.png"), face)
    cv2.imwrite(str(d / "two_faces.png"), np.hstack([face, face]))
    cv2.imwrite(str(d / "blank.png"), np.full((20, 30, 3), 128, np.uint8))
    jpg = cv2.imencode(".jpg", face)[1].tobytes()
    (d / "truncated.jpg").write_bytes(jpg[:len(jpg) // 2])
    (d / "bomb.png").write_bytes(_png_claiming(100000, 100000))
    mixed = d / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), face)
    (mixed / "b_truncated.jpg").write_bytes(jpg[:len(jpg) // 2])
    (mixed / "c_bomb.png").write_bytes(_png_claiming(100000, 100000))
    cv2.imwrite(str(mixed / "d.jpg"), face)
    allbad = d / "allbad"
    allbad.mkdir()
    (allbad / "x.jpg").write_bytes(b"garbage")
    (allbad / "y.png").write_bytes(b"")
    (allbad / "z.gif").write_bytes(b"GIF89a" + bytes(20))
    videos = d / "videos"
    videos.mkdir()
    _write_video(videos / "clip.avi", 3)
    (d / "empty_dir").mkdir()
    sizes = d / "sizes"  # two images of different sizes
    sizes.mkdir()
    cv2.imwrite(str(sizes / "a.png"), face)
    cv2.imwrite(str(sizes / "b.png"), cv2.resize(face, (360, 240)))
    frames = d / "frames"  # six real faces: enough eye pairs for calibrate-margin
    frames.mkdir()
    cap = cv2.VideoCapture(str(video))
    for i in range(60):
        ok, img = cap.read()
        if i % 10 == 0:
            cv2.imwrite(str(frames / f"{i:02d}.png"), img)
    cap.release()
    return d


# (args, exit code, words in the message, files that must exist, files that must not)
# "{d}" is the folder of crafted files, "{video}" the shared face video.
ROWS = [
    # item 4: files OpenCV cannot open
    (["--source", "{d}/random.avi"], 1, ["random.avi", "cannot open"], [], []),
    (["--source", "{d}/zero.mp4"], 1, ["zero.mp4", "empty file"], [], []),
    (["--source", "{d}/text.avi"], 1, ["text.avi", "cannot open"], [], []),
    (["--source", "{d}/bomb.png"], 1, ["bomb.png", "100000x100000"], [], []),
    (["--source", "{d}/mixed", "--jsonl", "{d}/mixed.jsonl"], 0,
     ["skipped 2 unreadable", "b_truncated.jpg", "c_bomb.png"], ["{d}/mixed.jsonl"], []),
    # item 8: a half-truncated JPEG is corrupt, not a wrong label; all corrupt -> error
    (["--source", "{d}/truncated.jpg"], 1, ["truncated.jpg", "truncated"], [], []),
    (["--source", "{d}/allbad", "--jsonl", "{d}/allbad.jsonl"], 1,
     ["allbad", "none of the 3 images"], [], ["{d}/allbad.jsonl"]),
    # item 7: output paths checked before the loop
    (["--source", "{d}/face.png", "--jsonl", "{d}/missing/out.jsonl"], 1,
     ["--jsonl", "missing", "does not exist"], [], ["{d}/missing"]),
    (["--source", "{d}/face.png", "--jsonl", "{d}"], 1, ["--jsonl", "is a folder"], [], []),
    (["--source", "{d}/face.png", "--save-video", "{d}/out.txt"], 1,
     ["--save-video", "unsupported extension"], [], ["{d}/out.txt"]),
    (["--source", "{d}/face.png", "--save-video", "{d}/nodir/out.avi"], 1,
     ["--save-video", "does not exist"], [], []),
    (["--source", "{d}/face.png", "--jsonl", "{d}/face.png"], 1, ["source file"],
     ["{d}/face.png"], []),
    # item 11 and other live-loop mistakes
    (["--source", "csi://abc"], 1, ["csi://abc", "csi://N"], [], []),
    (["--source", "videotestsrc ! videoconvert"], 1, ["appsink"], [], []),
    (["--source", ""], 1, ["empty source"], [], []),
    (["--source", "{d}/empty_dir"], 1, ["empty_dir", "no images"], [], []),
    (["--source", "{d}/videos"], 1, ["no images", "clip.avi"], [], []),
    (["--camera", "97"], 1, ["cannot open camera", "97"], [], []),
    (["--camera", "front"], 1, ["--camera", "front"], [], []),
    (["--source", "{d}/face.png", "--detector", "yunet"], 1, ["--detector-model"], [], []),
    (["--source", "{d}/face.png", "--detector", "yunet", "--detector-model",
      "{d}/random.avi"], 1, ["random.avi", "yunet"], [], []),
    (["--source", "{d}/face.png", "--precision", "int4"], 1, ["int4", "int8"], [], []),
    (["--source", "{d}/face.png", "--providers", "bogus"], 1, ["bogus", "not available"],
     [], []),
    (["--source", "{d}/face.png", "--loop", "3"], 1, ["--loop", "image"], [], []),
    (["--source", "{d}/two_faces.png", "--max-faces", "1"], 0,
     ["1 face(s) not classified", "--max-faces"], [], []),
    (["--source", "{d}/blank.png"], 0, ["no face found"], [], []),
    (["--source", "{d}/face.png", "--detect-width", "10"], 1, ["--detect-width", "48"], [],
     []),
    (["--source", "{d}/sizes", "--save-video", "{d}/sizes.avi"], 0,
     ["resized", "frames 2 "], ["{d}/sizes.avi"], []),
    (["--source", "{d}/face.png", "--max-frames", "5"], 0, ["frames 1 "], [], []),
    (["--source", "{d}/half.avi", "-q"], 0, ["35 of 71 frames could not be decoded",
                                             "corrupt 35"], [], []),
]


@pytest.mark.parametrize("args, code, words, exist, absent", ROWS,
                         ids=[" ".join(r[0])[:60] for r in ROWS])
def test_run_bad_input(files, video, args, code, words, exist, absent):
    def fill(s: str) -> str:
        return s.format(d=files, video=video)

    check_cli("fer-edge", [*RUN, *map(fill, args)], code, words,
              exist=[Path(fill(p)) for p in exist], absent=[Path(fill(p)) for p in absent],
              timeout=120)


def test_folder_run_goes_on_past_bad_images(files, tmp_path):
    out = tmp_path / "o.jsonl"
    r = check_cli("fer-edge", [*RUN, "--source", files / "mixed", "--jsonl", out], 0,
                  ["corrupt 2"])
    assert "b_truncated.jpg: truncated image file" in r.stderr
    recs = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in recs] == ["a.png", "d.jpg"]
    assert all(len(r["faces"]) == 1 for r in recs)


def test_jsonl_of_a_failed_run_leaves_an_earlier_file_alone(files, tmp_path):
    out = tmp_path / "earlier.jsonl"
    out.write_text('{"frame": 0}\n')
    check_cli("fer-edge", [*RUN, "--source", files / "allbad", "--jsonl", out], 1,
              ["none of the 3 images"])
    assert out.read_text() == '{"frame": 0}\n'


@pytest.mark.parametrize("args, words", [
    (["--data", "/nonexistent", "--source", "{d}/random.avi"], ["random.avi", "cannot open"]),
    (["--data", "/nonexistent", "--source", "0"], ["not a live camera"]),
])
def test_calibrate_margin_bad_source(files, args, words):
    check_cli("fer-edge", ["calibrate-margin", *(a.format(d=files) for a in args)], 1, words)


def test_calibrate_margin_shows_progress(fer2013, files):
    r = check_cli("fer-edge", ["calibrate-margin", "--data", fer2013, "--source",
                               files / "frames", "--images", "100"], 0, ["crop margin"])
    assert "FER2013 eyes" in r.stderr and "100/100" in r.stderr
    assert "frames: 100%" in r.stderr and "6/6" in r.stderr


# --- item 8/11: the video corrupt count is frames that did not decode -----------------------

def test_video_corrupt_count_is_undecoded_frames(files, video, tmp_path):
    with VideoFile(SourceSpec("video", str(files / "half.avi"))) as src:
        n = sum(1 for _ in src)
    assert (n, src.corrupt, src.length) == (36, 35, 71)
    data = bytearray(video.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 40000] = bytes(40000)  # one damaged frame near the middle
    (tmp_path / "mid.avi").write_bytes(bytes(data))
    with VideoFile(SourceSpec("video", str(tmp_path / "mid.avi"))) as src:
        n = sum(1 for _ in src)
    assert n + src.corrupt == 71 and 1 <= src.corrupt <= 2
    with VideoFile(SourceSpec("video", str(video))) as src:
        assert sum(1 for _ in src) == 71 and src.corrupt == 0


# --- item 5: a finite video over http ends; a failing live stream gives up ------------------

@pytest.fixture(scope="module")
def http_video(tmp_path_factory):
    d = tmp_path_factory.mktemp("www")
    _write_video(d / "clip.avi", 20)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(Quiet, directory=str(d)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_finite_video_ends_with_every_frame(http_video, tmp_path):
    out = tmp_path / "o.jsonl"
    t0 = time.time()
    check_cli("fer-edge", [*RUN, "--source", f"{http_video}/clip.avi", "--jsonl", out, "-q"],
              0, ["frames 20 ", "dropped 0"], timeout=60)
    assert time.time() - t0 < 60
    assert [json.loads(ln)["frame"] for ln in out.read_text().splitlines()] == list(range(20))


def test_http_missing_video_is_one_error(http_video):
    check_cli("fer-edge", [*RUN, "--source", f"{http_video}/missing.avi"], 1,
              ["missing.avi", "cannot open this stream"], timeout=60)


def test_live_stream_that_keeps_failing_gives_up(http_video):
    """Served as a live stream, the file delivers frames then fails again and again: the
    reconnect budget is not refilled by those short runs of frames, so it runs out."""
    t0 = time.time()
    src = LiveCapture(SourceSpec("url", f"{http_video}/clip.avi"), max_retries=2,
                      read_timeout=0.5)
    got = 0
    with pytest.raises(FerEdgeError, match="no frames after 2 reconnect attempts"):
        for _ in src:
            got += 1
    src.close()
    assert src.reconnects == 2 and got >= 20
    assert time.time() - t0 < 30


def test_open_source_reads_a_finite_url_like_a_file(http_video):
    with open_source(f"{http_video}/clip.avi") as src:
        assert isinstance(src, VideoFile) and src.length == 20
        assert [f.index for f in src] == list(range(20))


# --- item 7: full and read-only disks ----------------------------------------------------

@contextlib.contextmanager
def _tmpfs(where: Path, size: str, ro: bool = False):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        if ro:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_outputs_on_a_read_only_disk(files, tmp_path):
    with _tmpfs(tmp_path / "ro", "1m", ro=True) as ro:
        check_cli("fer-edge", [*RUN, "--source", files / "face.png", "--jsonl", ro / "o.jsonl"],
                  1, ["--jsonl", "o.jsonl", "read-only"])
        check_cli("fer-edge", [*RUN, "--source", files / "face.png", "--save-video",
                               ro / "o.avi"], 1, ["--save-video", "o.avi", "read-only"])


def test_save_video_on_a_full_disk_fails_and_leaves_nothing(video, tmp_path):
    with _tmpfs(tmp_path / "full", "2m") as full:
        check_cli("fer-edge", [*RUN, "--source", video, "--save-video", full / "o.avi", "-q"],
                  1,
                  ["--save-video", "o.avi", "nothing was saved"])
        assert list(full.iterdir()) == []  # no truncated video, no partial temp file


def test_jsonl_on_a_full_disk_is_one_error(files, tmp_path):
    with _tmpfs(tmp_path / "full", "64k") as full:
        with contextlib.suppress(OSError):
            (full / "filler").write_bytes(bytes(1 << 20))
        check_cli("fer-edge", [*RUN, "--source", files / "mixed", "--jsonl", full / "o.jsonl"],
                  1, ["--jsonl", "o.jsonl", "no space left"])


def test_video_sink_refuses_a_file_that_lost_frames(video, tmp_path, monkeypatch):
    """With the free-space watch off, the read-back at close still catches the loss."""
    from fer_edge.edge.outputs import sinks

    monkeypatch.setattr(sinks, "MIN_FREE_BYTES", 0)
    frame = _first_frame(video)
    with _tmpfs(tmp_path / "full", "1m") as full:
        sink = sinks.VideoSink(str(full / "o.avi"), 25)
        for _ in range(71):
            sink.write(frame)
        with pytest.raises(FerEdgeError, match=r"o.avi: the written file holds \d+ of 71"):
            sink.close()
        assert list(full.iterdir()) == []


def test_save_video_written_completely_on_a_normal_disk(video, tmp_path):
    out = tmp_path / "o.mp4"
    check_cli("fer-edge", [*RUN, "--source", video, "--save-video", out, "-q",
                           "--max-frames", "10"], 0, ["frames 10 "])
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    assert [p.name for p in tmp_path.iterdir()] == ["o.mp4"]


# --- item 11: SIGTERM ends the run with 130 after closing the outputs ---------------------

def test_sigterm_exits_130_with_outputs_closed(video, tmp_path):
    jl, vid = tmp_path / "o.jsonl", tmp_path / "o.avi"
    code, err = signal_after_lines(["fer_edge.edge.cli", *RUN, "--source", str(video), "--loop",
                                    "200", "--jsonl", str(jl), "--save-video", str(vid), "-q"],
                                   jl, 10, signal.SIGTERM)
    assert code == 130, err
    assert "stopped by signal" in err and "Traceback" not in err
    n = len(jl.read_text().splitlines())
    cap = cv2.VideoCapture(str(vid))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n >= 10


# --- item 9: the Pipeline API validates and converts frames at its boundary ---------------

@pytest.fixture(scope="module")
def pipe_and_face(video):
    return Pipeline(smooth=None), _first_frame(video)


BAD_FRAMES = {
    "None": lambda f: None,
    "list": lambda f: f.tolist()[:2],
    "empty": lambda f: np.zeros((0, 0, 3), np.uint8),
    "zero-width": lambda f: f[:, :0],
    "bool": lambda f: f > 100,
    "1-D": lambda f: f.ravel()[:100],
    "4-D": lambda f: f[None],
    "5 channels": lambda f: np.zeros((40, 40, 5), np.uint8),
    "2 channels": lambda f: np.zeros((40, 40, 2), np.uint8),
    "NaN": lambda f: np.where(f > 100, np.nan, f.astype(np.float32)),
    "inf": lambda f: np.full((40, 40), np.inf, np.float64),
    "float over 255": lambda f: f.astype(np.float32) * 4,
    "negative int16": lambda f: -f.astype(np.int16),
    "complex": lambda f: np.zeros((40, 40), np.complex64),
    "object": lambda f: np.empty((40, 40), object),
}


@pytest.mark.parametrize("make", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_pipeline_refuses_bad_frames(pipe_and_face, make):
    pipe, face = pipe_and_face
    with pytest.raises(BadFrame) as e:
        pipe(make(face))
    assert isinstance(e.value, FerEdgeError) and isinstance(e.value, ValueError)
    assert "frame" in str(e.value) and ("expected" in str(e.value) or "must" in str(e.value)
                                        or "NaN" in str(e.value))


CONVERTIBLE = {
    "uint16 <<8": lambda f: f.astype(np.uint16) << 8,
    "uint16 *257": lambda f: f.astype(np.uint16) * 257,
    "float32 0..1": lambda f: f.astype(np.float32) / 255,
    "float64 0..255": lambda f: f.astype(np.float64),
    "float16 0..1": lambda f: (f.astype(np.float32) / 255).astype(np.float16),
    "int64": lambda f: f.astype(np.int64),
    "BGRA": lambda f: cv2.cvtColor(f, cv2.COLOR_BGR2BGRA),
    "RGB view reversed back": lambda f: f[:, :, ::-1][:, :, ::-1],
    "non-contiguous": lambda f: np.ascontiguousarray(np.repeat(f, 2, axis=1))[:, ::2],
}


@pytest.mark.parametrize("make", CONVERTIBLE.values(), ids=CONVERTIBLE.keys())
def test_pipeline_converts_frames_to_the_same_label(pipe_and_face, make):
    pipe, face = pipe_and_face
    pipe.reset()
    ref = pipe(face).faces[0]
    pipe.reset()
    got = pipe(make(face)).faces
    assert len(got) == 1 and got[0].label == ref.label
    assert np.abs(np.subtract(got[0].box, ref.box)).max() <= 2
    np.testing.assert_allclose(got[0].probs, ref.probs, atol=0.02)


def test_pipeline_grayscale_frames(pipe_and_face):
    pipe, face = pipe_and_face
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    for g in (gray, gray[:, :, None]):
        pipe.reset()
        (f,) = pipe(g).faces
        assert f.label in pipe.labels


def test_pipeline_frame_size_change_starts_afresh(pipe_and_face):
    """A tracked box from a big frame must not be cropped out of the next, smaller one."""
    pipe, face = pipe_and_face
    pipe.reset()
    assert len(pipe(face).faces) == 1
    assert pipe(np.zeros((2, 3, 3), np.uint8)).faces == []
    assert pipe(np.zeros((1, 1), np.uint8)).faces == []
    assert len(pipe(face).faces) == 1


@pytest.mark.parametrize("kw, words", [({"max_faces": 0}, "max_faces"),
                                        ({"smooth": 0.0}, "smooth"),
                                        ({"smooth": 1.5}, "smooth"),
                                        # issue 23, item 16: the Python API's settings
                                        ({"smooth": float("nan")}, "smooth"),
                                        ({"precision": None}, "precision"),
                                        ({"backend": 1}, "backend"),
                                        ({"detect_every": 2.5}, "detect_every"),
                                        ({"detect_every": 0}, "detect_every"),
                                        ({"full_detect_every": 0}, "full_detect_every"),
                                        ({"threads": 0}, "threads"),
                                        ({"threads": True}, "threads"),
                                        ({"max_faces": "8"}, "max_faces"),
                                        ({"providers": "cpu"}, "providers"),
                                        ({"reclassify_iou": float("nan")}, "reclassify_iou")])
def test_pipeline_refuses_bad_settings(kw, words):
    with pytest.raises(FerEdgeError, match=words):
        Pipeline(**kw)


def test_pipeline_counts_faces_over_max_faces(video):
    face = _first_frame(video)
    pipe = Pipeline(smooth=None, max_faces=1)
    r = pipe(np.hstack([face, face]))
    assert len(r.faces) == 1 and r.faces_over_limit == 1

