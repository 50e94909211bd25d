"""``fer-export``: turn a checkpoint into a model bundle."""

from __future__ import annotations

import click

from fer_edge.edge.cliutil import not_implemented


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Export a checkpoint to a model bundle (ONNX FP32, INT8, TensorRT)."""
    not_implemented("fer-export", "export issue")


if __name__ == "__main__":
    main()
