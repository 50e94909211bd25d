"""``fer-bench``: latency / throughput / accuracy-drop report."""

from __future__ import annotations

import click

from fer_edge.edge.cliutil import not_implemented


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmark model bundles: accuracy, accuracy drop, latency, throughput, pipeline FPS."""
    not_implemented("fer-bench", "benchmark harness issue")


if __name__ == "__main__":
    main()
