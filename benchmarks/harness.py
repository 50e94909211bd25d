"""``run_benchmark``: every bundle x precision x backend x threads, measured side by side."""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fer_edge.edge.bundle import Bundle, load_bundle
from fer_edge.edge.data import Split, load_split
from fer_edge.edge.data.splits import DEFAULT_SPLIT, parse_fractions
from fer_edge.edge.detection.choose import bundle_detector_model, source_detector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import evaluate, open_backend
from fer_edge.edge.inference.ort_providers import model_key
from fer_edge.edge.inputs.files import check_not_inputs, check_output_dir, folder_lock
from fer_edge.edge.photos.workers import StillsRecipe
from fer_edge.edge.pipeline import Pipeline
from fer_edge.edge.preprocess import preprocess

from .endtoend import LabelledFace, evaluate_end_to_end, read_labelled_images
from .environment import environment, peak_rss_mb
from .measure import Timing, check_video, interleaved_latency, pipeline_fps, soak, summarize
from .peers import MODEL_PEERS, check_peer, peer_model, run_peer, score_peer
from .report import report_files, write_all

log = logging.getLogger("fer_edge.bench")
SCHEMA = "fer-bench/1"


@dataclass
class BenchSettings:
    models: list[str | None]
    data: str | None = None
    split: str = "test"
    data_split: str = DEFAULT_SPLIT  # data without a split: fer-train's --split ...
    split_seed: int = 0  # ... and --split-seed, so "test" is the part fer-train held out
    split_group: str | None = None  # ... and --split-group
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    backends: list[str] = field(default_factory=lambda: ["ort"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    video: str | None = None
    video_loops: int = 10
    video_streams: list[int] = field(default_factory=lambda: [1, 2, 4])  # copies at once
    soak_seconds: float = 0.0  # > 0: RSS over a run of soak_streams looped copies of --video
    soak_streams: int = 4
    realworld: list[str] = field(default_factory=list)  # labelled uncropped photos
    detector: str = "haar"  # --realworld: the detector, as fer-edge run --detector
    detector_threshold: float | None = None  # ours: None is the stills threshold
    main_face: str = "score"  # a photo with one label: endtoend.MAIN_FACE_RULES
    workers: int = 1  # --realworld: processes, each with a single-thread Pipeline
    limit: int | None = None
    timing: Timing = field(default_factory=Timing)
    peers: list[str] = field(default_factory=list)  # "fer", "facex": measured in the same run
    peer_python: str | None = None  # their interpreter (they pin stacks of their own)


def _names(bundles: list[Bundle]) -> list[str]:
    names, seen = [], {}
    for b in bundles:
        n = b.name
        seen[n] = seen.get(n, 0) + 1
        names.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return names


def run_benchmark(s: BenchSettings, out: Path, command: str,
                  exist_ok: bool = False) -> tuple[dict, list[Path]]:
    """Measure, then write the reports to ``out``. Every input is checked before the first
    measurement: the output folder can be written (and holds no earlier report unless
    ``exist_ok``), the bundles read, the video decoded. Ctrl-C (or SIGTERM, from the CLI)
    stops early and writes what was measured. One run at a time writes into ``out`` (a
    second is refused), and no report file may be one of the inputs."""
    check_output_dir(out, ("results.json",), "a fer-bench report", exist_ok, option="--out")
    check_not_inputs([("--out", f) for f in report_files(out)],
                     [*s.models, s.data, s.video, *s.realworld])
    with folder_lock(out, "--out"):
        check_output_dir(out, ("results.json",), "a fer-bench report", exist_ok,
                         option="--out")  # again: another run may have finished meanwhile
        return _run_benchmark(s, out, command)


def _run_benchmark(s: BenchSettings, out: Path, command: str) -> tuple[dict, list[Path]]:
    bundles = [load_bundle(m) for m in s.models]
    check_batch_memory(max(s.batch_sizes), bundles)
    if s.video:
        check_video(s.video)
    photos = {p: read_labelled_images(p, bundles[0].labels) for p in s.realworld}
    for b in bundles if photos else ():  # a bad --detector choice fails before any work
        source_detector(True, s.detector, bundle_detector_model(b, s.detector, None),
                        score_threshold=s.detector_threshold)
    peer_python = {p: check_peer(p, s.peer_python) for p in s.peers}
    results: dict = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command, "environment": environment(),
        "settings": {**asdict(s), "models": [str(b.path) for b in bundles],
                     "ort_thread_spinning": False},
        "results": [], "skipped": [], "pipeline": [], "endtoend": [], "peers": [], "soak": None,
        "interrupted": False,
    }
    latencies: dict[str, np.ndarray] = {}
    try:
        splits = _measure(s, bundles, results, latencies)
        _pipelines(s, bundles, peer_python, results)
        _end_to_end(s, bundles, photos, results)
        b = bundles[0]
        split = splits[b.labels, b.input][0] if (b.labels, b.input) in splits else \
            _read_split(s, b) if s.data and peer_python else None
        _peers(s, b, split, peer_python, photos, results, latencies)
    except KeyboardInterrupt:
        results["interrupted"] = True
        log.warning("interrupted: writing the results measured so far")
    results["peak_rss_mb"] = peak_rss_mb()
    return results, write_all(results, out, latencies)


ACTIVATION_FACTOR = 256  # a CNN's activations per image, in multiples of its input tensor


def check_batch_memory(batch: int, bundles: list[Bundle]) -> None:
    """Refuse, before any measurement, a --batch-sizes whose largest batch would not fit in
    the memory available now (input tensor times a generous activation factor)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return
    for b in bundles:
        need = batch * b.input.channels * b.input.height * b.input.width * 4 * ACTIVATION_FACTOR
        if need > available:
            raise FerEdgeError(f"--batch-sizes {batch}: a batch of {batch} for {b.name} needs "
                               f"about {need / 1e9:.1f} GB, {available / 1e9:.1f} GB is free; "
                               "use smaller batches")


def _measure(s: BenchSettings, bundles: list[Bundle], results: dict,
             latencies: dict[str, np.ndarray]) -> dict[tuple, tuple[Split, np.ndarray]]:
    """Accuracy, latency and throughput rows; returns the accuracy split read (and its
    preprocessed tensor) per (labels, input), for the peers to get the same images."""
    # Every model is opened (and checked against its bundle.json) before the first
    # measurement, so a bad bundle fails in seconds, not after the others were measured.
    rows: list[tuple[dict, dict]] = []  # (row, {threads: backend})
    for b, name in zip(bundles, _names(bundles), strict=True):
        for precision in s.precisions:
            for backend in s.backends:
                key = precision if backend == "ort" else (
                    precision if precision.startswith("trt") else f"trt_{precision}")
                if key not in b.models:
                    results["skipped"].append(f"{name} {precision} {backend}: not in bundle")
                    continue
                try:
                    # Sessions are interleaved on shared cores: no busy-waiting thread pools.
                    engines = {t: open_backend(b, precision, backend, t, spin=False)
                               for t in s.threads}
                except FerEdgeError as e:
                    if backend == "ort":  # a bad bundle is the user's to know, not a skip
                        raise
                    # TensorRT missing here, or an engine built for another GPU/version
                    results["skipped"].append(f"{name} {precision} {backend}: {e}")
                    continue
                # the file that runs: CPU onnxruntime's int8 is the bundle's int8_cpu model
                file_key = model_key(b.models, key, None) if backend == "ort" else key
                rows.append(({"model": name, "bundle": str(b.path), "arch": b.arch,
                              "precision": precision, "backend": backend,
                              "params": int(b.meta.get("params", 0)), "labels": list(b.labels),
                              "file_bytes": b.model_path(file_key).stat().st_size}, engines))
    if not rows:
        raise FerEdgeError("nothing to measure: " + "; ".join(results["skipped"]))
    # Bundles usually share labels and input: read and preprocess the split once for them.
    data: dict[tuple, tuple[Split, np.ndarray]] = {}
    fp32_acc: dict[str, float] = {}
    by_path = {str(b.path): b for b in bundles}
    for row, engines in rows:
        if s.data:
            b = by_path[row["bundle"]]
            if (b.labels, b.input) not in data:
                sp = _read_split(s, b)
                data[b.labels, b.input] = (sp, preprocess(sp.images, b.input))
            split, x_val = data[b.labels, b.input]
            log.info("accuracy %s %s %s on %d images", row["model"], row["precision"],
                     row["backend"], len(split))
            rep = evaluate(engines[s.threads[0]], split, x_val)
            row.update(accuracy=rep["accuracy"], macro_f1=rep["macro_f1"],
                       per_class=rep["per_class"], confusion=rep["confusion"],
                       dataset=f"{s.data} [{s.split}]", images=rep["n"])
            if row["precision"] == "fp32":
                fp32_acc[row["bundle"]] = rep["accuracy"]
            base = fp32_acc.get(row["bundle"])
            row["drop_points"] = None if base is None else 100 * (base - rep["accuracy"])
        for t in s.threads:  # in the results now: Ctrl-C keeps the accuracy
            _row_for(results, row, t)
    for threads in s.threads:
        _latency(s, bundles, rows, threads, results, latencies)
    return data


def _pipelines(s: BenchSettings, bundles: list[Bundle], python: dict[str, str],
               results: dict) -> None:
    """The loop on --video: ours (default and naive settings), `fer`'s own loop right after
    ours when --peers fer is given, several copies of the video at once, and the soak."""
    if not s.video:
        return
    for b, name in zip(bundles, _names(bundles), strict=True):
        prec = "int8" if "int8" in b.models else "fp32"
        runs = [(False, 1), (True, 1)] + [(False, n) for n in s.video_streams if n != 1]
        for naive, streams in runs:
            log.info("pipeline %s on %s (%s, %d stream(s))", name, s.video,
                     "naive" if naive else prec, streams)
            p = pipeline_fps(b, prec, s.video, naive, threads=s.threads[0],
                             loops=s.video_loops, streams=streams)
            results["pipeline"].append({"model": name, "threads": s.threads[0], **p})
            if not naive and streams == 1 and b is bundles[0] and "fer" in python:
                log.info("fer's own loop on %s", s.video)
                out = run_peer("fer", python["fer"], "video", [s.video], s.threads[0],
                               s.video_loops)
                labels = [x for x in out["labels"] if x is not None]
                results["pipeline"].append({
                    "model": f"fer {out['version']}", "peer": True, "threads": s.threads[0],
                    "config": "fer's own loop: FER(mtcnn=False).detect_emotions per frame",
                    "precision": "peer's own", "streams": 1, "frames": out["frames"],
                    "loops": s.video_loops,
                    "frames_with_faces": sum(x is not None for x in out["labels"]),
                    "fps": out["frames"] / out["seconds"] if out["seconds"] else 0.0,
                    "seconds": out["seconds"], "stage_ms": {}, "last_labels": labels[-20:],
                    "ends": [labels[-1] if labels else None], "load_avg": os.getloadavg()[0]})
    if s.soak_seconds > 0:
        b = bundles[0]
        log.info("soak: %d looped copies of %s for %.0f s", s.soak_streams, s.video,
                 s.soak_seconds)
        results["soak"] = soak(b, "int8" if "int8" in b.models else "fp32", s.video,
                               s.soak_streams, s.soak_seconds, threads=s.threads[0])


def _end_to_end(s: BenchSettings, bundles: list[Bundle], photos: dict, results: dict) -> None:
    """Detect -> crop -> classify on labelled photos, as ``fer-edge run`` does on a folder."""
    for path, faces in photos.items():
        for b, name in zip(bundles, _names(bundles), strict=True):
            prec = "int8" if "int8" in b.models else "fp32"
            det = {"name": s.detector, "score_threshold": s.detector_threshold,
                   "model": bundle_detector_model(b, s.detector, None)}
            recipe = StillsRecipe(str(b.path), det, {"precision": prec})
            detector = source_detector(True, **det)
            pipe = None if s.workers > 1 else Pipeline(b, prec, threads=s.threads[0],
                                                       detector=detector)
            with tqdm(total=len({f.path for f in faces}), desc=f"end-to-end {name}",
                      unit="img", leave=False) as bar:
                r = evaluate_end_to_end(pipe, faces, bar, s.main_face, recipe, s.workers)
            log.info("end-to-end %s on %s: %.4f (face found %.1f %%)", name, path,
                     r["accuracy"], 100 * r["detection_recall"])
            results["endtoend"].append({"model": name, "precision": prec, "data": path,
                                        "threads": 1 if s.workers > 1 else s.threads[0],
                                        "detector": s.detector,
                                        "detector_threshold": getattr(
                                            detector, "score_threshold", None), **r})


def _peers(s: BenchSettings, b: Bundle, split: Split | None, python: dict[str, str],
           photos: dict, results: dict, latencies: dict[str, np.ndarray]) -> None:
    """The peer packages on the same images: the accuracy split as face crops (classifier
    only) and every --realworld set end to end with their own detector; a peer whose model
    file can be timed alone (fer) also gets a row in the results table (:func:`_peer_row`)."""
    crops = []
    if split is not None and python:  # the split our models were scored on (_measure)
        if split.paths:
            crops = [LabelledFace(p, b.labels[y]) for p, y in zip(split.paths, split.labels,
                                                                  strict=True)]
        else:
            results["skipped"].append(f"peers on {s.data}: a CSV split has no image files "
                                      "to give them")
    for peer, exe in python.items():
        jobs = ([("crops", f"{s.data} [{s.split}]", crops)] if crops else []) + \
            [("images", path, faces) for path, faces in photos.items()]
        for task, name, faces in jobs:
            with tqdm(total=len({f.path for f in faces}), desc=f"{peer} {task}", unit="img",
                      leave=False) as bar:
                r = score_peer(peer, exe, task, faces, b.labels, s.threads[0], bar)
            log.info("%s %s on %s: %.4f", peer, task, name, r["accuracy"])
            row = {"model": f"{peer} {r.pop('version')}", "precision": "peer's own",
                   "data": name, "threads": s.threads[0], **r}
            results["endtoend" if task == "images" else "peers"].append(row)
        if peer in MODEL_PEERS:
            _peer_row(s, b, peer, exe, crops, results, latencies)


def _peer_row(s: BenchSettings, b: Bundle, peer: str, exe: str, crops: list[LabelledFace],
              results: dict, latencies: dict[str, np.ndarray]) -> None:
    """The peer's model as a row beside ours (table, CSV, accuracy-vs-latency plot): its model
    file alone in its own runtime (peer_worker.py's ``model`` task), accuracy on the --data
    crops with its own preprocessing, batch-1 latency for each --threads (timed in the
    peer's process, after ours)."""
    for i, threads in enumerate(s.threads):
        faces = crops if i == 0 else crops[:1]  # accuracy once, latency per thread count
        with tqdm(total=len(faces), desc=f"{peer} model", unit="img", leave=False) as bar:
            out = peer_model(peer, exe, faces, b.labels, threads, s.timing, bar)
        if "skipped" in out:
            results["skipped"].append(f"{peer} model: {out['skipped']}")
            return
        samples = np.asarray(out["latency_ms"])
        name = f"{peer} {out['version']}"
        row = {"model": name, "bundle": f"peer:{peer}", "arch": f"{peer}: {out['model']}",
               "precision": "int8", "backend": out["runtime"], "params": None,
               "labels": list(b.labels), "file_bytes": out["file_bytes"], "threads": threads,
               "peer": True, "input": out["input"], "drop_points": None,
               "latency_ms": {"batch1": summarize(samples)}}
        if i == 0 and crops:
            sc = out["score"]
            row.update(accuracy=sc["accuracy"], macro_f1=sc["macro_f1_found"],
                       per_class_recall=sc["per_class_recall"], images=sc["faces"],
                       dataset=f"{s.data} [{s.split}]")
        elif crops:
            first = next(r for r in results["results"] if r["bundle"] == row["bundle"])
            row.update({k: first[k] for k in ("accuracy", "macro_f1", "per_class_recall",
                                              "images", "dataset")})
        results["results"].append(row)
        latencies[f"{name} int8 t{threads}"] = samples


def _read_split(s: BenchSettings, b: Bundle) -> Split:
    split = load_split(s.data, s.split, b.labels, size=b.input.height,
                       fractions=parse_fractions(s.data_split, "--data-split"),
                       seed=s.split_seed, group=s.split_group)
    if s.limit is not None and s.limit > len(split):
        log.warning("--limit %d is more than the %d images of %s [%s]: using all of them",
                    s.limit, len(split), s.data, s.split)
    return split.stratified(s.limit)


def _latency(s: BenchSettings, bundles, rows, threads: int, results: dict,
             latencies: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    inputs = {str(b.path): preprocess(rng.integers(0, 256, (max(s.batch_sizes), b.input.height,
                                                            b.input.width), np.uint8), b.input)
              for b in bundles}
    for bs in s.batch_sizes:
        fns = {}
        for row, engines in rows:
            x = inputs[row["bundle"]][:bs]
            fns[f"{row['model']} {row['precision']} {row['backend']}"] = \
                (lambda e=engines[threads], x=x: e(x))
        timing = s.timing if bs == 1 else Timing(s.timing.warmup_s / 2,
                                                  max(20, s.timing.min_runs // 4),
                                                  s.timing.min_seconds / 2)
        bar = tqdm(desc=f"latency batch {bs}, {threads} thread(s)", unit="round", leave=False)
        ms = interleaved_latency(fns, timing, on_round=lambda b=bar: b.update(1))
        bar.close()
        for (row, _), (label, samples) in zip(rows, ms.items(), strict=True):
            out = _row_for(results, row, threads)
            if bs == 1:
                out["latency_ms"] = {"batch1": summarize(samples)}
                latencies[f"{label} t{threads}"] = samples
            else:
                out.setdefault("throughput_ips", {})[str(bs)] = \
                    bs / (float(np.median(samples)) / 1e3)


def _row_for(results: dict, row: dict, threads: int) -> dict:
    for r in results["results"]:
        if r["bundle"] == row["bundle"] and r["precision"] == row["precision"] \
                and r["backend"] == row["backend"] and r["threads"] == threads:
            return r
    r = {**row, "threads": threads}
    results["results"].append(r)
    return r
