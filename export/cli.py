"""``fer-export``: turn a checkpoint into a model bundle."""

from __future__ import annotations

import click

from fer_edge.edge.cliutil import friendly_errors, setup_logging, sigterm_as_interrupt


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
@click.option("--max-drop", type=float, default=1.0,
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
@click.option("--crop-margin", type=float, default=None,
              help="Face-box margin recorded in the bundle [the checkpoint's, else 0.075, "
                   "measured for Haar boxes on FER2013 by fer-edge calibrate-margin].")
@click.option("--name", default=None, help="Bundle name [the architecture].")
@click.option("--seed", type=int, default=0)
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(checkpoints: tuple[str, ...], verbose: bool, trt: tuple[str, ...], trt_batch: str,
         **o) -> None:
    """Export CHECKPOINTS to a bundle: model.onnx (FP32), optionally model.int8.onnx and
    TensorRT engines, and bundle.json with hashes and accuracy. Several checkpoints become one
    ensemble graph averaging their probabilities."""
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.errors import FerEdgeError

    from .exporter import ExportOptions, export_bundle

    try:
        batch = tuple(int(b) for b in trt_batch.split(","))
        assert len(batch) == 3 and 1 <= batch[0] <= batch[1] <= batch[2]
    except (ValueError, AssertionError):
        raise FerEdgeError(f"--trt-batch {trt_batch!r}: expected min,opt,max like 1,8,32") \
            from None
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


if __name__ == "__main__":
    main()
