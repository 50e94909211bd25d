"""``fer-edge``: the live loop on a device. Heavy imports happen inside the commands."""

from __future__ import annotations

import sys

import click

from .cliutil import friendly_errors, setup_logging

CTX = {"help_option_names": ["-h", "--help"], "show_default": True}


@click.group(context_settings=CTX)
@click.version_option(package_name="fer-edge")
def main() -> None:
    """Facial emotion recognition on edge devices."""


def demo_image() -> str:
    """A public-domain portrait shipped by a dependency (matplotlib's Grace Hopper photo)."""
    from fer_edge.edge.errors import FerEdgeError

    try:
        from matplotlib import cbook
    except ImportError:
        raise FerEdgeError("--demo uses the sample photo shipped with matplotlib: "
                           "pip install 'fer-edge[demo]'") from None
    return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


@main.command(context_settings=CTX)
@click.option("--camera", type=str, default=None, help="Camera index or /dev/videoN.")
@click.option("--source", type=str, default=None,
              help="Video file, image, folder of images, rtsp/http URL, csi://N (Jetson) or a "
                   "GStreamer pipeline ending in appsink.")
@click.option("--demo", is_flag=True, help="Run on a public-domain sample portrait.")
@click.option("--model", type=click.Path(), default=None,
              help="Model bundle folder [the bundle shipped in the package].")
@click.option("--precision", default="int8", help="int8 | fp32 | trt (best TensorRT engine) "
              "| any model key of the bundle (trt_fp16, trt_int8).")
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort")
@click.option("--providers", default="cpu",
              help="onnxruntime execution providers in order: cpu,cuda,tensorrt.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Classifier threads [onnxruntime default].")
@click.option("--detector", type=click.Choice(["haar", "yunet", "ours"]), default="haar",
              help="ours: the fer-edge face detector with five landmarks (in the JSONL).")
@click.option("--detector-model", type=click.Path(), default=None,
              help="yunet: its .onnx file; ours: a detector bundle folder from fer-export "
                   "[the model bundle's 'detector' folder, when it has one].")
@click.option("--detect-every", type=click.IntRange(1), default=3,
              help="Run the detector every K frames; the tracker carries boxes in between.")
@click.option("--full-detect-every", type=click.IntRange(1), default=30,
              help="Search the whole frame for new faces every N frames (and whenever no face "
                   "is tracked); other detection frames only re-detect near known faces.")
@click.option("--detect-width", type=click.IntRange(0), default=None,
              help="Downscale frames to this width for detection (0: full size) [320 for "
                   "video and live sources, 640 for images and folders: a photo's faces are "
                   "often small, and a still can afford the time].")
@click.option("--min-face", type=click.IntRange(8), default=24,
              help="Haar: smallest face, in detection-image pixels.")
@click.option("--min-neighbors", type=click.IntRange(1), default=5, help="Haar minNeighbors.")
@click.option("--scale-factor", type=click.FloatRange(1.01, 2.0), default=1.1,
              help="Haar scaleFactor.")
@click.option("--max-faces", type=click.IntRange(1), default=8)
@click.option("--smooth", type=click.FloatRange(0.01, 1.0), default=0.3,
              help="EMA weight of the newest probabilities per track.")
@click.option("--no-smooth", is_flag=True, help="Raw per-frame probabilities.")
@click.option("--jsonl", type=str, default=None, help="Write one JSON object per frame ('-': "
              "stdout).")
@click.option("--save-video", type=click.Path(), default=None, help="Annotated video (.avi/.mp4).")
@click.option("--display/--no-display", default=None,
              help="Show a window [when a display exists]; q or Esc quits.")
@click.option("--max-frames", type=click.IntRange(1), default=None)
@click.option("--loop", type=click.IntRange(1), default=1,
              help="Replay a video file this many times (soak tests).")
@click.option("--reconnect", type=click.IntRange(0), default=5,
              help="Live sources: reconnects with backoff before giving up (the budget "
                   "refills after 10 s of uninterrupted frames). A URL to a video file is "
                   "read like a file and ends at its end.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-image lines.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def run(camera, source, demo, model, precision, backend, providers, threads, detector,
        detector_model, detect_every, full_detect_every, detect_width, min_face, min_neighbors,
        scale_factor, max_faces, smooth, no_smooth, jsonl, save_video, display, max_frames, loop,
        reconnect, quiet, verbose) -> None:
    """camera/video/images -> face detection -> crop -> classification -> tracking -> outputs.

    Ends at the end of a file, after --max-frames, on q/Esc in the window, or on Ctrl-C/SIGTERM
    (outputs are closed cleanly). Prints a summary with FPS and per-stage latency.
    """
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.bundle import load_bundle
    from fer_edge.edge.detect import make_detector
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.runner import run as run_loop
    from fer_edge.edge.sinks import (
        JsonlSink,
        VideoSink,
        Window,
        check_output,
        display_available,
    )
    from fer_edge.edge.sources import open_source, parse_source, quiet_opencv

    quiet_opencv(verbose)
    chosen = [x for x in (camera, source, demo_image() if demo else None) if x is not None]
    if len(chosen) != 1:
        raise FerEdgeError("give exactly one of --camera N, --source PATH_OR_URL or --demo")
    spec = parse_source(chosen[0])
    if camera is not None and spec.kind != "camera":
        raise FerEdgeError(f"--camera {camera!r}: expected an index or /dev/videoN")
    if loop > 1 and spec.kind != "video":
        raise FerEdgeError(f"--loop {loop}: only a video file can be replayed; the source is "
                           f"a {spec.kind}")
    for option, out in (("--jsonl", jsonl if jsonl != "-" else None),
                        ("--save-video", save_video)):
        if out is None:
            continue
        check_output(out, option)
        if spec.kind in ("video", "image") and Path(out).resolve() == \
                Path(str(spec.target)).resolve():
            raise FerEdgeError(f"{option} {out}: is the source file; it would be overwritten")
    if jsonl and save_video and jsonl != "-" and Path(jsonl).resolve() == \
            Path(save_video).resolve():
        raise FerEdgeError(f"--jsonl and --save-video both name {jsonl}")
    bundle = load_bundle(model)
    if precision == "trt":
        engines = [k for k in ("trt_int8", "trt_fp16") if k in bundle.models]
        if not engines:
            raise FerEdgeError(f"{bundle.path}: no TensorRT engine in this bundle; build one "
                               "with fer-export --trt fp16|int8 on this device")
        precision, backend = engines[0], "tensorrt"
    if detect_width is None:  # measured on sfew_frames: docs/realworld.md
        from fer_edge.edge.detect import default_detect_width

        detect_width = default_detect_width(spec.kind in ("image", "folder"))
    if detect_width and detect_width < 2 * min_face:
        raise FerEdgeError(f"--detect-width {detect_width}: too small to find faces of "
                           f"--min-face {min_face} px; use at least {2 * min_face} (or 0: "
                           "full size)")
    det_kw = {"min_size": min_face, "min_neighbors": min_neighbors,
              "scale_factor": scale_factor} if detector == "haar" else {}
    if detector == "ours" and detector_model is None and bundle.meta.get("detector"):
        sub = str(bundle.meta["detector"])
        if Path(sub).name != sub or sub in (".", ".."):
            raise FerEdgeError(f"{bundle.path}/bundle.json: 'detector' {sub!r} must name a "
                               "folder inside the bundle")
        detector_model = str(bundle.path / sub)
    det = make_detector(detector, detector_model, detect_width or None, **det_kw)
    pipe = Pipeline(bundle, precision, backend, threads, providers.split(","), det,
                    detect_every, full_detect_every, max_faces, None if no_smooth else smooth)
    available = display_available()
    if display and not available:
        raise FerEdgeError("--display: no display available (DISPLAY unset or OpenCV "
                           "built without GUI)")
    show = available if display is None else display
    src = open_source(spec, max_retries=reconnect) if spec.live else open_source(spec)
    if loop > 1:
        from fer_edge.edge.sources import LoopedVideo

        src = LoopedVideo(src, loop)
    try:  # outputs are opened before the loop: a bad path fails before any frame
        jsonl_sink = JsonlSink(jsonl, bundle.labels, str(spec.target)
                               if spec.kind == "folder" else None) if jsonl else None
        video_sink = VideoSink(save_video, src.fps) if save_video else None
    except BaseException:
        src.close()
        raise
    click.echo(f"fer-edge: {bundle.name} [{precision} on {pipe.classifier.name}], detector "
               f"{det.name}, source {spec.kind} {spec.target}", err=True)
    progress = None
    per_image = spec.kind in ("image", "folder") and not quiet and jsonl != "-"
    if not quiet and not per_image and jsonl != "-":
        from tqdm import tqdm

        total = src.length * loop or None
        progress = tqdm(total=min(total, max_frames) if total and max_frames else total,
                        unit="frame", desc="fer-edge", dynamic_ncols=True, file=sys.stderr)
    if per_image:
        jsonl_sink = _EchoSink(jsonl_sink)
    try:
        summary = run_loop(src, pipe, jsonl_sink, video_sink, Window() if show else None,
                           max_frames, independent_frames=spec.kind in ("image", "folder"),
                           progress=progress)
    finally:
        if progress is not None:
            progress.close()
    click.echo(summary.text(), err=True)
    if summary.stopped_by == "signal":
        click.echo("stopped by signal; outputs closed", err=True)
        sys.exit(130)
    if not summary.frames:
        raise FerEdgeError(f"{spec.target}: no frame was read")


class _EchoSink:
    """Prints one line per image (and forwards to a JSONL sink, if any)."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, r) -> None:
        faces = ", ".join(f"{f.label} {f.score:.2f} at {list(f.box)}" for f in r.faces)
        click.echo(f"{r.path}: {faces or 'no face found'}")
        if self.inner:
            self.inner.write(r)

    def close(self) -> None:
        if self.inner:
            self.inner.close()


@main.command("calibrate-margin", context_settings=CTX)
@click.option("--data", required=True, type=click.Path(), help="FER2013 folder or CSV.")
@click.option("--source", "sources", multiple=True, required=True, type=click.Path(),
              help="Video, image or folder with real faces at camera resolution (repeatable).")
@click.option("--demo", is_flag=True, help="Add the --demo portrait to the sources.")
@click.option("--images", type=click.IntRange(100), default=3000,
              help="FER2013 training faces to measure.")
@friendly_errors
def calibrate_margin(data, sources, demo, images) -> None:
    """Measure the crop margin that frames live Haar detections like FER2013's images
    (eye distance relative to the image vs. to the detector box)."""
    setup_logging(False)
    from fer_edge.edge.framing import estimate_crop_margin
    from fer_edge.edge.sources import quiet_opencv

    quiet_opencv()
    r = estimate_crop_margin(data, [*sources, *([demo_image()] if demo else [])],
                             images=images, progress=True)
    click.echo(f"FER2013: eye distance {r['r_fer']:.3f} of the image side "
               f"({r['fer_eye_pairs']}/{r['fer_images']} faces); live Haar boxes: "
               f"{r['r_box']:.3f} of the box width ({r['live_eye_pairs']}/{r['live_faces']} "
               f"faces) -> crop margin {r['margin']:.3f}")


# fer-edge build-engine (its own module: TensorRT engines are compiled on the device)
from .engine_build import build_engine_command  # noqa: E402

main.add_command(build_engine_command)


if __name__ == "__main__":
    main()
