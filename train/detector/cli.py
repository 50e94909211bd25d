"""``fer-train-detector``: fit the face detector (boxes + five landmarks). torch is imported
only when it runs."""

from __future__ import annotations

import shlex
import sys

import click

from fer_edge.edge.cliutil import SEED, Finite, friendly_errors, setup_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "show_default": True})
@click.option("--data", required=True, type=click.Path(),
              help="Dataset folder built by 'python -m fer_edge.train.detector.dataset' "
                   "(train.jsonl, val_wider.jsonl, images/), or a train label file.")
@click.option("--val", type=click.Path(), default=None,
              help="Validation label file [DATA/val_wider.jsonl].")
@click.option("--width", type=Finite(0.25, 4), default=1.0,
              help="Channel multiplier (1.0: about 56 k parameters).")
@click.option("--img-size", type=click.IntRange(64), default=320,
              help="Training crop side, a multiple of 32.")
@click.option("--epochs", default=30, type=click.IntRange(1))
@click.option("--samples-per-epoch", default=2000, type=click.IntRange(1))
@click.option("--batch-size", default=16, type=click.IntRange(1))
@click.option("--lr", type=Finite(0, 10, min_open=True), default=2e-3)
@click.option("--lm-weight", type=Finite(0), default=0.5,
              help="Weight of the landmark loss.")
@click.option("--negatives", type=Finite(0, 1), default=0.15, show_default=True,
              help="Share of training crops cut where no face is (hard negatives).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch [all cores].")
@click.option("--seed", type=SEED, default=0)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use only the first N training images.")
@click.option("--val-limit", type=click.IntRange(1), default=None)
@click.option("--val-size", type=click.IntRange(64), default=320,
              help="Validation images are scaled so their longer side is this.")
@click.option("--out", default=None, type=click.Path(),
              help="Output folder [runs/train, runs/train2, ...; with --resume: the run's]. "
                   "One that holds a run is refused without --exist-ok.")
@click.option("--exist-ok", is_flag=True, help="Overwrite the run in --out.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue a run from its last.pt (a larger --epochs extends it).")
@click.option("--time-limit", type=Finite(0, 10080, min_open=True), default=None,
              metavar="MIN", help="Train for at most this many minutes in all (the epoch "
                                  "count is re-fitted after every epoch).")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(**o) -> None:
    """Train the face detector; writes best.pt, last.pt, metrics.json, curves.png and
    train.log to --out. Ctrl-C leaves a resumable last.pt."""
    setup_logging(o.pop("verbose"))
    if o["img_size"] % 32:
        raise click.BadParameter("must be a multiple of 32", param_hint="--img-size")
    from .training import DetTrainConfig, fit_detector

    cfg = DetTrainConfig(command=shlex.join(["fer-train-detector", *sys.argv[1:]]), **o)
    m = fit_detector(cfg)
    click.echo(f"best val AP50 {m['best_val_ap50']:.4f} at epoch {m['best_epoch']}; "
               f"outputs in {m['config']['out']}")


if __name__ == "__main__":
    main()
