"""``export_bundle``: checkpoint -> verified model bundle (the work behind ``fer-export``)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_edge.edge.bundle import load_bundle, write_bundle_json
from fer_edge.edge.data import Split, load_split
from fer_edge.edge.data.splits import DEFAULT_SPLIT, parse_fractions
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inference.backend import OrtBackend, evaluate, open_backend
from fer_edge.edge.inputs.files import (
    check_not_inputs,
    check_writable_dir,
    folder_lock,
    sweep_stale,
    temp_prefix,
    umask_mode,
    user_cache_dir,
)
from fer_edge.edge.preprocess import FER2013_HAAR_MARGIN, LANDMARK_FRAMING, InputSpec, preprocess

log = logging.getLogger("fer_edge.export")

FP32_FILE, INT8_FILE, INT8_CPU_FILE = "model.onnx", "model.int8.onnx", "model.int8.cpu.onnx"


@dataclass
class ExportOptions:
    out: Path
    int8: bool = False
    calib_data: str | None = None
    calib_split: str = "train"
    calib_images: int = 512
    calib_method: str = "percentile"  # minmax | entropy | percentile | auto
    val_data: str | None = None
    val_split: str = "test"
    max_drop: float = 1.0
    force: bool = False
    exist_ok: bool = False
    trt: tuple[str, ...] = ()
    trt_batch: tuple[int, int, int] = (1, 8, 32)
    opset: int = 18
    tta_flip: bool = False
    crop_margin: float | None = None
    name: str | None = None
    seed: int = 0
    eval_threads: int | None = None
    per_channel: bool = True
    int8_ops: str = "all"  # quantize.INT8_OPS: all | conv | conv-dense
    int8_scheme: str = "both"  # both | symmetric | asymmetric (INT8_VARIANTS)
    sensitivity: bool = True  # keep the worst tensors in FP32 until max_drop holds
    sensitivity_images: int = 64  # calibration faces the tensors are ranked on
    max_fp32_tensors: int = 32  # the most tensors the sensitivity pass may keep in FP32
    latency_check: bool = True  # measure INT8 vs FP32 batch-1 latency into bundle.json


def _metric_entry(report: dict, opts: ExportOptions) -> dict:
    return {"dataset": str(opts.val_data), "split": opts.val_split, "n": report["n"],
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "per_class_recall": {k: v["recall"] for k, v in report["per_class"].items()}}


def _load_members(checkpoints: list[str]) -> tuple[list, list[dict]]:
    """Load every checkpoint; ensemble members must agree on labels and input."""
    from fer_edge.train.checkpoint import build_from_checkpoint, load_checkpoint

    models, ckpts = [], []
    for c in checkpoints:
        ck = load_checkpoint(c)
        if ckpts and (ck["labels"] != ckpts[0]["labels"] or ck["input"] != ckpts[0]["input"]):
            raise FerEdgeError(f"{c}: labels/input {ck['labels']} {ck['input']} differ from "
                               f"{checkpoints[0]}'s; ensemble members must match")
        models.append(build_from_checkpoint(ck, c))
        ckpts.append(ck)
    return models, ckpts


def export_bundle(checkpoints: str | os.PathLike | list, opts: ExportOptions) -> dict[str, Any]:
    """Write a bundle folder at ``opts.out``; returns its bundle.json content. Several
    checkpoints become one ensemble graph that averages their probabilities.

    ``opts.out`` is checked first, before any work: an existing bundle is replaced only with
    ``opts.exist_ok``, anything else that exists there (a file, a folder with other things) is
    never touched. Everything is built in a temporary folder beside ``out`` and renamed into
    place, so a failed or interrupted export never leaves a half-written bundle and never
    loses the previous one. TensorRT engines are built afterwards: if that fails, the ONNX
    bundle stays and the error is raised.
    """
    if opts.int8 and not opts.calib_data:
        raise FerEdgeError("--int8 needs --calib-data (training faces to calibrate on)")
    if opts.int8 and opts.calib_method == "auto" and not opts.val_data:
        raise FerEdgeError("--calib-method auto picks by validation accuracy: give --val-data")
    out = Path(opts.out)
    check_out(out, opts.exist_ok)
    check_bundle_inputs(out, [*([checkpoints] if isinstance(checkpoints, (str, os.PathLike))
                                else checkpoints), opts.calib_data, opts.val_data])
    check_writable_dir(out)
    with folder_lock(out, "--out"):
        return _export_locked(checkpoints, opts, out)


def _export_locked(checkpoints: str | os.PathLike | list, opts: ExportOptions,
                   out: Path) -> dict[str, Any]:
    check_out(out, opts.exist_ok)  # again, now that no other export can write there
    work = make_workdir(out)
    try:
        meta, spec = _build(checkpoints, opts, work)
        check_out(out, opts.exist_ok)  # again: something may have appeared meanwhile
        umask_mode(work)
        _install(work, out)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, FerEdgeError):
            raise FerEdgeError(_hide_workdir(str(e), work, out)) from None
        if isinstance(e, OSError):
            raise FerEdgeError(_os_error(e, work, out)) from None
        raise
    if opts.trt:
        _add_engines(out, meta, opts, spec)
    return meta


def make_workdir(out: Path) -> Path:
    """The hidden folder beside ``out`` a bundle is built in (named with this process's pid;
    those of killed exports to ``out`` are removed first)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for name in (out.name, f"{out.name}.old"):
            sweep_stale(out.parent, name)
        return Path(tempfile.mkdtemp(prefix=temp_prefix(out.name, hidden=True),
                                     dir=out.parent))
    except OSError as e:
        raise FerEdgeError(f"{out}: cannot create the bundle folder ({e.strerror or e})") \
            from None


def check_out(out: Path, exist_ok: bool = False, marker: str = "bundle.json") -> None:
    """Refuse an ``--out`` that would destroy something: a file, a folder that is not a bundle
    (never replaced; ``marker`` is the file that makes a folder a bundle), or a bundle unless
    ``exist_ok``. An empty folder is fine."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise FerEdgeError(f"{out}: exists and is not a folder; choose another --out")
    if (out / marker).is_file():
        if not exist_ok:
            raise FerEdgeError(f"{out}: a bundle is already there; pass --exist-ok to replace "
                               "it, or choose another --out")
        foreign = sorted(set(os.listdir(out)) - bundle_files(out, marker))
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                              if len(foreign) > 5 else "")
            raise FerEdgeError(f"{out}: also holds files that are not part of the bundle "
                               f"({shown}); --exist-ok replaces a bundle, never anything "
                               "else: move them out, or choose another --out")
    elif any(out.iterdir()):
        raise FerEdgeError(f"{out}: exists and is not a bundle; refusing to replace it "
                           "(choose another --out)")


def check_bundle_inputs(out: Path, inputs: list, marker: str = "bundle.json") -> None:
    """Refuse an ``--out`` whose bundle files (which --exist-ok replaces) are an input: a
    checkpoint or dataset file, linked or not."""
    if out.is_dir():
        check_not_inputs([("--out", out / n) for n in bundle_files(out, marker)], inputs)


def bundle_files(folder: Path, marker: str = "bundle.json") -> set[str]:
    """The names in ``folder`` that its bundle (or detector bundle) consists of: ``marker``,
    the model files it lists, its detector subfolder and the TensorRT cache."""
    import json

    names = {marker, "cache"}
    try:
        meta = json.loads((folder / marker).read_text())
        names |= {str(m["file"]) for m in meta.get("models", {}).values()
                  if isinstance(m, dict) and "file" in m}
        if isinstance(meta.get("detector"), str):
            names.add(meta["detector"])
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # an unreadable marker: only the marker counts, so anything else is kept
    return names


def _install(work: Path, out: Path) -> None:
    """Rename ``work`` to ``out``; a bundle already there is moved aside first and removed
    only once the new one is in place (restored if the rename fails)."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{out.name}.old", hidden=True),
                                    dir=out.parent))
        os.replace(out, old)
    try:
        os.replace(work, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _hide_workdir(message: str, work: Path, out: Path) -> str:
    """Errors from inside the temporary folder (deleted by now) name ``out`` instead."""
    prefix = str(work) + os.sep
    if prefix in message:
        return f"{out}: " + message.replace(prefix, "") + " (nothing written)"
    return message


def _os_error(e: OSError, work: Path, out: Path) -> str:
    """One line for an OSError while exporting (a full or read-only disk, usually)."""
    name = str(e.filename or "")
    if not name or name.startswith(str(work)) or name.startswith(str(out)):
        return f"{out}: cannot write the bundle ({e.strerror or e}); nothing written"
    return f"{name}: {e.strerror or e}"


def _build(checkpoints: str | os.PathLike | list, opts: ExportOptions,
           work: Path) -> tuple[dict[str, Any], InputSpec]:
    """Everything that goes into the bundle, written into ``work``: the models, their checks
    and evaluation, bundle.json last (re-read by the bundle reader)."""
    from .onnx_export import (
        Ensemble,
        FlipAverage,
        check_opset,
        count_macs,
        export_onnx,
        verify_onnx,
    )
    from .quantize import calibration_faces

    check_opset(opts.opset)
    paths = [str(c) for c in checkpoints] if isinstance(checkpoints, list | tuple) \
        else [str(checkpoints)]
    members, ckpts = _load_members(paths)
    ckpt, checkpoint = ckpts[0], paths[0]
    spec = InputSpec.from_dict(ckpt["input"])
    labels = tuple(ckpt["labels"])
    model = members[0] if len(members) == 1 else Ensemble(members).eval()
    arch = ckpt["arch"] if len(members) == 1 else \
        "ensemble(" + "+".join(c["arch"] for c in ckpts) + ")"
    if opts.tta_flip:
        model = FlipAverage(model).eval()

    trained_split = ckpt.get("config", {})  # data without a split: the parts fer-train made

    def read(path: str, split: str) -> Split:
        return load_split(path, split, labels, size=spec.height,
                          fractions=parse_fractions(trained_split.get("split", DEFAULT_SPLIT)),
                          seed=int(trained_split.get("split_seed", 0)),
                          group=trained_split.get("split_group"))

    val = read(opts.val_data, opts.val_split) if opts.val_data else None
    calib_split = read(opts.calib_data, opts.calib_split) if opts.calib_data else None
    x_val = preprocess(val.images, spec) if val is not None else None
    check = x_val[:256] if x_val is not None else (
        calibration_faces(calib_split, 256, spec, opts.seed) if calib_split is not None else None)
    if check is None:
        log.warning("no --val-data or --calib-data: verifying ONNX on random tensors only")
        check = np.random.default_rng(0).random((64, spec.channels, spec.height, spec.width),
                                                np.float32)

    meta: dict[str, Any] = {
        "name": opts.name or arch + ("-flip" if opts.tta_flip else ""),
        "arch": arch, "labels": list(labels), "input": spec.to_dict(),
        "crop": {"landmarks": dict(zip(("eye_distance", "eye_y"), LANDMARK_FRAMING,
                                       strict=True)),
                 "align": True, **ckpt.get("crop", {}), "square": True, "margin": float(
            opts.crop_margin if opts.crop_margin is not None
            else ckpt.get("crop", {}).get("margin", FER2013_HAAR_MARGIN))},
        "output": "logits", "tta": "flip" if opts.tta_flip else None,
        "params": sum(int(c.get("params", 0)) for c in ckpts), "opset": opts.opset,
        "training": {"checkpoint": Path(checkpoint).name, "epoch": ckpt.get("epoch"),
                     "val_acc": ckpt.get("best"),
                     "command": ckpt.get("config", {}).get("command"),
                     # what it learnt to predict: the dataset's labels or vote distributions
                     "targets": ckpt.get("targets", {"kind": "labels"}),
                     # fer-average-checkpoints: the checkpoints mixed and their weights
                     **({"average": ckpt["average"]} if ckpt.get("average") else {})},
        "members": [{"checkpoint": Path(p).name, "arch": c["arch"], "epoch": c.get("epoch"),
                     "val_acc": c.get("best")} for p, c in zip(paths, ckpts, strict=True)],
        "models": {}, "metrics": {},
    }
    export_onnx(model, spec, work / FP32_FILE, opts.opset)
    diff = verify_onnx(model, work / FP32_FILE, check)
    log.info("FP32 ONNX matches PyTorch: max |diff| %.2e on %d faces", diff, len(check))
    meta["models"]["fp32"] = {"file": FP32_FILE, "max_abs_diff_vs_torch": diff}
    meta["mmacs"] = round(count_macs(work / FP32_FILE) / 1e6, 2)  # per image, incl. TTA
    if val is not None:
        rep = evaluate(OrtBackend(work / FP32_FILE, opts.eval_threads), val, x_val)
        meta["metrics"]["fp32"] = _metric_entry(rep, opts)
        log.info("FP32 accuracy on %s [%s]: %.4f", opts.val_data, opts.val_split,
                 rep["accuracy"])
    _add_fp16(work, meta, opts, members, spec, x_val if x_val is not None else check, val)
    if opts.int8:
        calib = calibration_faces(calib_split, opts.calib_images, spec, opts.seed)
        _add_int8(work, meta, opts, calib, val, x_val)
    write_bundle_json(work, meta)
    bundle = load_bundle(work)  # the reader must accept what the writer wrote ...
    for precision in bundle.models:  # ... and every model must fit its bundle.json
        open_backend(bundle, precision, threads=1)
    return meta, spec


def _add_fp16(work: Path, meta: dict, opts: ExportOptions, members: list, spec: InputSpec,
              x_check: np.ndarray, val: Split | None) -> None:
    """model.fp16.onnx (FP16 body, FP32 I/O and tail): what FP16 TensorRT engines and the
    onnxruntime GPU providers run; checked against the FP32 model on onnxruntime-CPU."""
    from .fp16 import FP16_FILE, export_fp16

    record = export_fp16(members, opts.tta_flip, spec, work / FP32_FILE, work / FP16_FILE,
                         x_check, opts.opset)
    meta["models"]["fp16"] = record
    log.info("FP16 ONNX agrees with FP32 on %.2f %% of %d faces (max |diff| %.2e)",
             100 * record["argmax_agreement_vs_fp32"], record["checked_on"],
             record["max_abs_diff_vs_fp32"])
    if val is not None:
        rep = evaluate(OrtBackend(work / FP16_FILE, opts.eval_threads), val, x_check)
        meta["metrics"]["fp16"] = _metric_entry(rep, opts)


# The two INT8 models (measured on FER2013 PublicTest, docs/architecture.md "INT8"):
# model.int8.onnx is symmetric (every zero-point 0, FP32 biases, Relus kept): what TensorRT
# and the onnxruntime GPU providers accept. On onnxruntime-CPU the asymmetric model is ~15-20 %
# faster at equal accuracy, so it is written too, as model.int8.cpu.onnx (key int8_cpu).
INT8_VARIANTS = (("int8", INT8_FILE, True, "TensorRT, onnxruntime GPU providers (symmetric)"),
                 ("int8_cpu", INT8_CPU_FILE, False, "onnxruntime CPU (asymmetric; TensorRT "
                  "rejects it)"))


def _add_int8(work: Path, meta: dict, opts: ExportOptions, calib: np.ndarray,
              val: Split | None, x_val: np.ndarray | None) -> None:
    if opts.int8_scheme not in ("both", "symmetric", "asymmetric"):
        raise FerEdgeError(f"unknown INT8 scheme {opts.int8_scheme!r}; choose both, "
                           "symmetric, asymmetric")
    keys = []
    for key, file, symmetric, use in INT8_VARIANTS:
        if opts.int8_scheme != "both" and symmetric != (opts.int8_scheme == "symmetric"):
            continue
        _add_int8_variant(work, meta, opts, calib, val, x_val, key, file, symmetric)
        meta["models"][key]["use"] = use
        keys.append(key)
    if opts.latency_check:
        meta["latency"] = _int8_latency(work, meta, keys, calib[:1])


def _add_int8_variant(work: Path, meta: dict, opts: ExportOptions, calib: np.ndarray,
                      val: Split | None, x_val: np.ndarray | None, key: str, file: str,
                      symmetric: bool) -> None:
    """Quantise with each calibration method asked for, keep the most accurate as ``file``;
    above ``--max-drop``, the sensitivity pass keeps the worst tensors in FP32."""
    from .quantize import quantize_int8

    def quantize(method: str, dest: Path, exclude: list[str] | None = None) -> dict:
        return quantize_int8(work / FP32_FILE, dest, calib, method, symmetric=symmetric,
                             per_channel=opts.per_channel, nodes_to_exclude=exclude,
                             ops=opts.int8_ops)

    def accuracy(path: Path) -> dict | None:
        return evaluate(OrtBackend(path, opts.eval_threads), val, x_val) \
            if val is not None else None

    methods = ["minmax", "entropy", "percentile"] if opts.calib_method == "auto" \
        else [opts.calib_method]
    best: tuple[float, str, dict, dict | None] | None = None
    for method in methods:
        cand = work / f"{key}-{method}.onnx"
        record = quantize(method, cand)
        rep = accuracy(cand)
        acc = rep["accuracy"] if rep else 0.0
        if rep:
            log.info("%s (%s calibration) accuracy: %.4f", key, method, acc)
        if best is None or acc > best[0]:
            best = (acc, method, record, rep)
    _, method, record, rep = best
    for m in methods:
        if m != method:
            (work / f"{key}-{m}.onnx").unlink(missing_ok=True)
    if opts.calib_method == "auto":
        record["auto_tried"] = methods
    chosen = work / f"{key}-{method}.onnx"
    entry: dict[str, Any] = {"file": file, "calibration": record}
    if rep is not None:
        fp32_acc = meta["metrics"]["fp32"]["accuracy"]
        drop = 100.0 * (fp32_acc - rep["accuracy"])
        if drop > opts.max_drop and opts.sensitivity:
            log.info("%s accuracy drop %.2f points > --max-drop %s: sensitivity pass", key,
                     drop, opts.max_drop)
            reps: dict[Path, dict] = {}

            def drop_of(path: Path) -> float:
                reps[path] = accuracy(path)
                return 100.0 * (fp32_acc - reps[path]["accuracy"])

            found = _sensitivity_pass(work, opts, key, chosen, calib, drop,
                                      lambda dest, exclude: quantize(method, dest, exclude),
                                      drop_of)
            entry["sensitivity"] = found["record"]
            if found["path"] is not None:
                chosen, entry["calibration"] = found["path"], found["calibration"]
                entry["calibration"].update({k: v for k, v in record.items()
                                             if k == "auto_tried"})
                rep = reps[chosen]
                drop = 100.0 * (fp32_acc - rep["accuracy"])
        metric = _metric_entry(rep, opts)
        metric["drop_points"] = drop
        if drop > opts.max_drop and not opts.force:
            tried = " even with the sensitivity pass" if "sensitivity" in entry else ""
            raise FerEdgeError(f"{key} accuracy drop {drop:.2f} points exceeds --max-drop "
                               f"{opts.max_drop}{tried}; no INT8 model written (use --force to "
                               "keep it, or try --calib-method auto)")
        meta["metrics"][key] = metric
        log.info("%s accuracy drop vs FP32: %.2f points (%d node(s) in FP32)", key, drop,
                 len(entry["calibration"]["fp32_nodes"]))
    os.replace(chosen, work / file)
    meta["models"][key] = entry


def _sensitivity_pass(work: Path, opts: ExportOptions, key: str, qdq: Path,
                      calib: np.ndarray, drop: float, quantize, drop_of) -> dict:
    """Rank the quantised tensors of ``qdq`` and keep the fewest, worst in FP32 until
    ``opts.max_drop`` holds (export/sensitivity.py). Returns the bundle.json record and, if
    the pass improved on ``drop``, the model file and its calibration record."""
    import onnx

    from .quantize import INT8_OPS
    from .sensitivity import excluded_nodes, rank_tensors, search
    from .sensitivity import record as pass_record

    quantizable = {n.name for n in onnx.load(str(work / FP32_FILE)).graph.node
                   if n.op_type in INT8_OPS[opts.int8_ops] and n.name}
    x = calib[:opts.sensitivity_images]
    ranked = rank_tensors(work / FP32_FILE, qdq, x, quantized_nodes=quantizable)
    if ranked:
        log.info("%s: %d quantised tensors ranked on %d faces; worst %s (%.1f dB)", key,
                 len(ranked), len(x), ranked[0].tensor, ranked[0].sqnr_db)
    trials: dict[int, tuple[Path, dict]] = {}

    def trial(k: int) -> float:
        path = work / f"{key}-fp32x{k}.onnx"
        trials[k] = (path, quantize(path, excluded_nodes(ranked, k)))
        return drop_of(path)

    n = min(len(ranked), opts.max_fp32_tensors)
    if n == 0:
        return {"record": {"ranked_on_images": len(x), "holds": False,
                           "note": "no quantised tensor to keep in FP32"},
                "path": None, "calibration": None}
    result = search(n, trial, opts.max_drop)
    for k, (path, _) in trials.items():
        if k != result.k or result.drop >= drop:
            path.unlink(missing_ok=True)
    improved = result.drop < drop
    if improved:
        qdq.unlink(missing_ok=True)
    log.info("%s: sensitivity pass %s with %d tensor(s) in FP32: drop %.2f points", key,
             "holds" if result.holds else "does NOT hold", result.k, result.drop)
    return {"record": pass_record(ranked, result, len(x), drop),
            "path": trials[result.k][0] if improved else None,
            "calibration": trials[result.k][1] if improved else None}


def _int8_latency(work: Path, meta: dict, keys: list[str], face: np.ndarray) -> dict:
    """The rule "INT8 no slower than FP32", measured: batch-1 latency of each model on one
    onnxruntime-CPU thread, interleaved (benchmarks/measure.py) so machine noise hits all."""
    from fer_edge.benchmarks.measure import Timing, interleaved_latency

    names = ["fp32", *keys]
    fns = {}
    for k in names:
        backend = OrtBackend(work / meta["models"][k]["file"], threads=1, spin=False)
        fns[k] = lambda b=backend: b(face)
    ms = interleaved_latency(fns, Timing(warmup_s=0.3, min_runs=100, min_seconds=1.0))
    p50 = {k: round(float(np.percentile(v, 50)), 4) for k, v in ms.items()}
    ratio = {k: round(p50[k] / p50["fp32"], 3) for k in keys}
    for k in keys:
        if ratio[k] > LATENCY_TOLERANCE:
            log.warning("%s is slower than FP32 on this CPU: %.3f vs %.3f ms batch-1 (x%.2f)",
                        k, p50[k], p50["fp32"], ratio[k])
    return {"device": "onnxruntime CPU", "threads": 1, "batch": 1, "p50_ms": p50,
            "ratio_vs_fp32": ratio, "tolerance": LATENCY_TOLERANCE,
            "int8_no_slower": {k: ratio[k] <= LATENCY_TOLERANCE for k in keys}}


# "No slower" allows this much measurement noise (a shared CPU varies by a few per cent).
LATENCY_TOLERANCE = 1.05


def _add_engines(out: Path, meta: dict, opts: ExportOptions, spec: InputSpec) -> None:
    """``--trt``: the same build as ``fer-edge build-engine`` (edge.trt_build.add_engine)."""
    from fer_edge.edge.inference.tensorrt.build import add_engine

    for precision in opts.trt:
        try:  # the timing cache stays on this machine: it is no use on another TensorRT/GPU
            meta["models"][f"trt_{precision}"] = add_engine(
                load_bundle(out), precision, opts.trt_batch, force=True,
                cache_dir=user_cache_dir("tensorrt"))
        except FerEdgeError as e:
            raise FerEdgeError(f"--trt {precision}: {e} (the ONNX bundle {out} is kept)") \
                from None
