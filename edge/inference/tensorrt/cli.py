"""``fer-edge build-engine``: compile a bundle's ONNX model into a TensorRT engine on this
device (no torch needed; the work is :func:`fer_edge.edge.inference.tensorrt.build.add_engine`)."""

from __future__ import annotations

import click

from ...cliutil import friendly_errors, setup_logging


@click.command("build-engine", context_settings={"help_option_names": ["-h", "--help"],
                                                 "show_default": True})
@click.argument("bundle", type=click.Path())
@click.option("--precision", type=click.Choice(["fp16", "int8"]), required=True,
              help="fp16: from model.fp16.onnx; int8: from the symmetric QDQ model.int8.onnx.")
@click.option("--batch", default="1,8,32",
              help="min,opt,max batch (faces per call) of the engine's profile.")
@click.option("--force", is_flag=True, help="Replace an engine of this precision.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def build_engine_command(bundle: str, precision: str, batch: str, force: bool,
                         verbose: bool) -> None:
    """Build BUNDLE/model.PRECISION.engine with this machine's TensorRT (>= 10) and record
    it, with the TensorRT version and GPU, in BUNDLE/bundle.json (as trt_PRECISION)."""
    setup_logging(verbose)
    from ...bundle import load_bundle
    from .build import add_engine, parse_batch

    record = add_engine(load_bundle(bundle), precision, parse_batch(batch), force=force)
    click.echo(f"wrote {record['file']}: TensorRT {record['tensorrt']}, {record['gpu']} "
               f"(compute capability {record['compute_capability']}), batch "
               f"{record['batch']['min']}..{record['batch']['max']}")
