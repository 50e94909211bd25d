"""``fer-export``: turn a checkpoint into a model bundle."""

from __future__ import annotations

import logging

import click

from fer_edge.edge.cliutil import SEED, Finite, friendly_errors, setup_logging, sigterm_as_interrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "show_default": True})
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--exist-ok", is_flag=True,
              help="Replace a bundle already at --out (never anything that is not a bundle).")
@click.option("--int8", is_flag=True, help="Also write model.int8.onnx (QDQ, per-channel S8S8).")
@click.option("--calib-data", type=click.Path(), help="FER2013 folder/CSV to calibrate on.")
@click.option("--calib-split", default="train")
@click.option("--calib-images", type=click.IntRange(8), default=512,
              help="Class-stratified, seed-fixed calibration sample size.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile", "auto"]),
              default="percentile", help="auto tries all three, keeps the best on --val-data.")
@click.option("--val-data", type=click.Path(),
              help="Evaluate FP32 and INT8 on this dataset and record it in bundle.json.")
@click.option("--val-split", default="test", help="test = FER2013 PublicTest.")
@click.option("--max-drop", type=Finite(-100, 100), default=1.0,
              help="Refuse an INT8 model losing more accuracy points than this.")
@click.option("--force", is_flag=True, help="Keep the INT8 model even above --max-drop.")
@click.option("--int8-scheme", type=click.Choice(["both", "symmetric", "asymmetric"]),
              default="both", help="symmetric: model.int8.onnx (TensorRT, GPU providers); "
              "asymmetric: model.int8.cpu.onnx (onnxruntime-CPU); both: the two.")
@click.option("--int8-ops", type=click.Choice(["all", "conv", "conv-dense"]), default="all",
              help="What runs in INT8: all (plain CNNs), conv (convolutions and matrix "
                   "products only), conv-dense (no depthwise conv either): faster INT8 for "
                   "depthwise/SiLU/SE networks on onnxruntime-CPU.")
@click.option("--per-channel/--per-tensor", default=True,
              help="INT8 weight scales per output channel, or one per tensor.")
@click.option("--sensitivity/--no-sensitivity", default=True,
              help="Above --max-drop, keep the fewest, worst tensors in FP32 until it holds "
                   "(needs --val-data; docs/quantization.md).")
@click.option("--sensitivity-images", type=click.IntRange(1), default=64,
              help="Calibration faces the sensitivity pass ranks the tensors on.")
@click.option("--max-fp32-tensors", type=click.IntRange(1), default=32,
              help="The most tensors the sensitivity pass may keep in FP32.")
@click.option("--latency-check/--no-latency-check", default=True,
              help="Measure INT8 vs FP32 batch-1 latency (1 thread) into bundle.json.")
@click.option("--trt", type=click.Choice(["fp16", "int8"]), multiple=True,
              help="Build a TensorRT engine on this machine (repeatable).")
@click.option("--trt-batch", default="1,8,32", help="min,opt,max batch of the engine profile.")
@click.option("--opset", type=click.IntRange(13), default=18)
@click.option("--tta-flip", is_flag=True,
              help="Put horizontal-flip averaging inside the graph.")
@click.option("--crop-margin", type=Finite(0.0, 1.0), default=None,
              help="Face-box margin recorded in the bundle [the checkpoint's, else 0.075, "
                   "measured for Haar boxes on FER2013 by fer-edge calibrate-margin].")
@click.option("--name", default=None, help="Bundle name [the architecture].")
@click.option("--det-threshold", type=Finite(0, 1), default=0.5,
              help="Face detectors: the score threshold recorded in detector.json.")
@click.option("--seed", type=SEED, default=0)
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(checkpoints: tuple[str, ...], verbose: bool, trt: tuple[str, ...], trt_batch: str,
         **o) -> None:
    """Export CHECKPOINTS to a bundle: model.onnx (FP32), optionally model.int8.onnx and
    TensorRT engines, and bundle.json with hashes and accuracy. Several checkpoints become one
    ensemble graph averaging their probabilities.

    A face-detector checkpoint (fer-train-detector) becomes a detector bundle instead:
    detector_fp32.onnx, detector_int8.onnx (--int8 --calib-data DATASET), detector.json; with
    --val-data LABELS.jsonl the INT8 model's AP50 drop is gated by --max-drop (points);
    --calib-images defaults to 128 images there."""
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.errors import FerEdgeError

    note = opset_note(o["opset"])
    if note:
        logging.getLogger("fer_edge.export").warning(note)

    from .exporter import ExportOptions, export_bundle

    try:
        batch = tuple(int(b) for b in trt_batch.split(","))
        assert len(batch) == 3 and 1 <= batch[0] <= batch[1] <= batch[2]
    except (ValueError, AssertionError):
        raise FerEdgeError(f"--trt-batch {trt_batch!r}: expected min,opt,max like 1,8,32") \
            from None
    if len(checkpoints) == 1 and _is_detector(checkpoints[0]):
        _export_detector(checkpoints[0], trt, o)
        return
    o.pop("det_threshold")
    with sigterm_as_interrupt():  # kill cleans up the temporary folder like Ctrl-C
        meta = export_bundle(list(checkpoints), ExportOptions(out=Path(o.pop("out")), trt=trt,
                                                       trt_batch=batch, **o))
    m = meta["metrics"]
    summary = ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in m.items())
    notes = [f"{k} keeps {len(e['calibration']['fp32_nodes'])} node(s) in FP32"
             for k, e in meta["models"].items() if e.get("calibration", {}).get("fp32_nodes")]
    notes += [f"{k} batch-1 latency x{r:.2f} of fp32" for k, r in
              meta.get("latency", {}).get("ratio_vs_fp32", {}).items()]
    click.echo(f"wrote bundle {meta['name']!r}: "
               f"{', '.join(meta['models'])}" + (f"; accuracy {summary}" if summary else "")
               + "".join(f"; {n}" for n in notes))


# onnx-tensorrt's operators.md: TensorRT 10.0-10.3 (JetPack 6) document opsets 9-20
TENSORRT_10_3_MAX_OPSET = 20


def opset_note(opset: int) -> str | None:
    """A warning for an --opset newer than JetPack 6's TensorRT 10.3 documents."""
    if opset <= TENSORRT_10_3_MAX_OPSET:
        return None
    return (f"--opset {opset}: TensorRT 10.3 (JetPack 6) documents ONNX opsets 9-"
            f"{TENSORRT_10_3_MAX_OPSET}; its parser may fail on newer operators (the default "
            "18 is safe)")


def _given(name: str) -> bool:
    from click.core import ParameterSource

    return click.get_current_context().get_parameter_source(name) is not ParameterSource.DEFAULT


def _is_detector(checkpoint: str) -> bool:
    """Whether ``checkpoint`` is a face detector's; an unreadable one is left to the
    classifier export, which checks --out first and then names the file."""
    from fer_edge.edge.errors import FerEdgeError
    from fer_edge.train.checkpoint import load_checkpoint

    try:
        return load_checkpoint(checkpoint).get("arch") == "facedet"
    except FerEdgeError:
        return False


def _export_detector(checkpoint: str, trt: tuple[str, ...], o: dict) -> None:
    from pathlib import Path

    from fer_edge.edge.errors import FerEdgeError

    from .detector_export import DetectorExportOptions, export_detector

    unsupported = [f"--{k.replace('_', '-')}" for k in ("tta_flip", "crop_margin") if o[k]]
    if trt or o["calib_method"] not in ("percentile",):
        unsupported += ["--trt"] * bool(trt) + ["--calib-method"] * (o["calib_method"]
                                                                     != "percentile")
    if unsupported:
        raise FerEdgeError(f"{checkpoint}: a face-detector checkpoint; {', '.join(unsupported)} "
                           "apply to classifiers only")
    with sigterm_as_interrupt():
        meta = export_detector(checkpoint, DetectorExportOptions(
            out=Path(o["out"]), int8=o["int8"], calib_data=o["calib_data"],
            calib_images=o["calib_images"] if _given("calib_images") else 128,
            val_data=o["val_data"],
            max_drop=o["max_drop"], force=o["force"], exist_ok=o["exist_ok"],
            name=o["name"], seed=o["seed"], score_threshold=o["det_threshold"]))
    m = meta["metrics"]
    summary = ", ".join(f"{k} AP50 {v['ap50']:.4f}" for k, v in m.items())
    click.echo(f"wrote detector bundle {meta['name']!r}: {', '.join(meta['models'])}"
               + (f"; {summary}" if summary else ""))


if __name__ == "__main__":
    main()
