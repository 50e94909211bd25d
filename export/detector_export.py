"""``export_detector``: a fer-train-detector checkpoint -> a face-detector bundle folder
(``detector.json``, ``detector_fp32.onnx``, ``detector_int8.onnx``), the work behind
``fer-export`` when its checkpoint is a detector's.

The ONNX graph has a dynamic height and width (multiples of 32), decoding and NMS stay in
numpy (:mod:`fer_edge.edge.detection.ours`). INT8 is onnxruntime's static QDQ quantisation
(:func:`.quantize.quantize_int8`) of the convolutions, calibrated on training images; the
score/box/landmark tail stays FP32. The accuracy gate: the INT8 model's AP50 on the
validation labels may fall at most ``max_drop`` points below FP32's, else no INT8 model is
written (``force`` keeps it). Built in a temporary folder beside ``out``, renamed into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_edge.edge.detection.metrics import score_detector
from fer_edge.edge.detection.ours import DETECTOR_FORMAT, DETECTOR_JSON, STRIDES, OurDetector
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import (
    atomic_write_text,
    check_writable_dir,
    folder_lock,
    umask_mode,
)

log = logging.getLogger("fer_edge.export")
FP32_FILE, INT8_FILE = "detector_fp32.onnx", "detector_int8.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "pred"
# The tail (Sigmoid, Exp, Mul by the stride, Concat of scores with pixel distances) must stay
# FP32: one INT8 scale cannot hold a probability and a 300 px distance.
DETECTOR_INT8_OPS = ["Conv", "Relu", "Add", "Resize"]


@dataclass
class DetectorExportOptions:
    out: Path
    int8: bool = False
    calib_data: str | None = None  # a dataset folder (train.jsonl) or label file
    calib_images: int = 128
    val_data: str | None = None  # a label file (val_wider.jsonl) or dataset folder
    val_width: int = 320
    max_drop: float = 1.0  # AP50 points
    force: bool = False
    exist_ok: bool = False
    opset: int = 17
    score_threshold: float = 0.5
    name: str | None = None
    seed: int = 0


def _labels(path: str, default: str):
    from fer_edge.train.detector.data import load_labels

    p = Path(path)
    return load_labels(p / default if p.is_dir() else p)


def export_onnx_detector(model, path: Path, opset: int = 17, size: int = 320) -> None:
    """FP32 ONNX with dynamic height and width; checked against PyTorch."""
    import torch

    model = model.eval()
    x = torch.rand(1, 3, size, size) * 255
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = path.with_name(path.stem + ".raw.onnx")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(raw), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                            OUTPUT_NAME: {0: "batch", 1: "cells"}})
        quant_pre_process(str(raw), str(path), skip_symbolic_shape=True)
    finally:
        raw.unlink(missing_ok=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((size, size), (192, 256)):
        xx = torch.rand(1, 3, h, w) * 255
        with torch.no_grad():
            ref = model(xx).numpy()
        got = sess.run(None, {INPUT_NAME: xx.numpy()})[0]
        diff = float(np.abs(ref - got).max() / max(1.0, np.abs(ref).max()))
        if not np.isfinite(diff) or diff > 1e-3:
            raise FerEdgeError(f"{path}: onnxruntime differs from PyTorch by {diff:.2e} "
                               f"(relative) at {h}x{w}")


def calibration_images(samples, n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` seed-fixed training images, letterboxed to ``size`` square, [n, 3, size, size]."""
    from fer_edge.train.detector.data import letterbox_faces, read_image

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(samples), min(n, len(samples)), replace=False)
    return np.stack([letterbox_faces(read_image(samples[i].image), samples[i].faces, size)[0]
                     .transpose(2, 0, 1) for i in pick]).astype(np.float32)


def detector_ap(model_path: Path, samples, width: int) -> dict[str, Any]:
    """AP50 / recall at 0.1 FPPI / landmark NME of one ONNX model on labelled images."""
    from fer_edge.train.detector.data import read_image

    det = OurDetector(model_path, max_width=width, threads=1)
    items = ((read_image(s.image), s.faces) for s in samples)
    scorer = score_detector(lambda img: det.detect_raw(img, width, 0.05), items,
                            min_face=16.0)
    return scorer.result()


def export_detector(checkpoint: str, opts: DetectorExportOptions) -> dict[str, Any]:
    """Write the detector bundle at ``opts.out``; returns its detector.json content."""
    from fer_edge.train.checkpoint import load_checkpoint
    from fer_edge.train.detector.model import FaceDetNet

    from .exporter import _install, check_bundle_inputs, check_out, make_workdir

    if opts.int8 and not opts.calib_data:
        raise FerEdgeError("--int8 needs --calib-data (the detection dataset folder)")
    out = Path(opts.out)
    check_out(out, opts.exist_ok, marker=DETECTOR_JSON)  # before any work, as for bundles
    check_bundle_inputs(out, [checkpoint, opts.calib_data, opts.val_data], DETECTOR_JSON)
    check_writable_dir(out)
    ck = load_checkpoint(checkpoint)
    if ck.get("arch") != "facedet":
        raise FerEdgeError(f"{checkpoint}: not a face-detector checkpoint")
    model = FaceDetNet(**ck.get("arch_kwargs", {}))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise FerEdgeError(f"{checkpoint}: weights do not fit the detector "
                           f"({str(e).splitlines()[0][:160]})") from None
    val = _labels(opts.val_data, "val_wider.jsonl") if opts.val_data else None
    calib = _labels(opts.calib_data, "train.jsonl") if opts.int8 else None
    with folder_lock(out, "--out"):
        check_out(out, opts.exist_ok, marker=DETECTOR_JSON)
        work = make_workdir(out)
        try:
            meta = _build(model, ck, checkpoint, opts, work, val, calib)
            check_out(out, opts.exist_ok, marker=DETECTOR_JSON)
            umask_mode(work)
            _install(work, out)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return meta


def _build(model, ck: dict, checkpoint: str, opts: DetectorExportOptions, work: Path, val,
           calib) -> dict[str, Any]:
    from fer_edge.edge.bundle import sha256_file

    from .quantize import quantize_int8

    size = int(ck.get("input", {}).get("size", 320))
    export_onnx_detector(model, work / FP32_FILE, opts.opset, size)
    models: dict[str, dict[str, Any]] = {"fp32": {"file": FP32_FILE}}
    metrics: dict[str, Any] = {}
    if val is not None:
        metrics["fp32"] = detector_ap(work / FP32_FILE, val, opts.val_width)
        log.info("fp32 AP50 %.4f", metrics["fp32"]["ap50"])
    if calib is not None:
        x = calibration_images(calib, opts.calib_images, size, opts.seed)
        record = quantize_int8(work / FP32_FILE, work / INT8_FILE, x, "percentile",
                               input_name=INPUT_NAME, symmetric=False,
                               ops=DETECTOR_INT8_OPS)
        models["int8"] = {"file": INT8_FILE, "calibration": record}
        if val is not None:
            m = detector_ap(work / INT8_FILE, val, opts.val_width)
            drop = 100.0 * (metrics["fp32"]["ap50"] - m["ap50"])
            m["ap50_drop_points"] = round(drop, 2)
            metrics["int8"] = m
            log.info("int8 AP50 %.4f (drop %.2f points)", m["ap50"], drop)
            if drop > opts.max_drop and not opts.force:
                raise FerEdgeError(f"int8 AP50 drop {drop:.2f} points exceeds --max-drop "
                                   f"{opts.max_drop}; no bundle written (use --force to keep "
                                   "the INT8 model)")
    for e in models.values():
        e["sha256"] = sha256_file(work / e["file"])
        e["bytes"] = (work / e["file"]).stat().st_size
    meta = {"format": DETECTOR_FORMAT, "format_version": 1,
            "name": opts.name or Path(checkpoint).parent.name or "facedet",
            "arch": "facedet", "arch_kwargs": ck.get("arch_kwargs", {}),
            "params": int(ck.get("params", 0)), "strides": list(STRIDES),
            "input": {"format": "bgr255", "align": 32, "train_size": size},
            "output": {"name": OUTPUT_NAME, "layout": "score, ltrb distances, 5 landmark "
                       "offsets (x, y) from the cell centre; pixels"},
            "landmarks": ["left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth"],
            "score_threshold": opts.score_threshold, "nms_iou": 0.4,
            "models": models, "metrics": metrics,
            "validation": {"data": str(opts.val_data), "width": opts.val_width,
                           "min_face": 16} if val is not None else None,
            "source": {"checkpoint": str(checkpoint), "epoch": ck.get("epoch")}}
    atomic_write_text(work / DETECTOR_JSON, json.dumps(meta, indent=2) + "\n")
    return meta
