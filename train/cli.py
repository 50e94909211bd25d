"""``fer-train``: fit an emotion classifier on FER2013. torch is imported only when it runs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from fer_edge.edge.cliutil import SEED, Finite, friendly_errors, setup_logging
from fer_edge.edge.errors import FerEdgeError


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "show_default": True})
@click.option("--data", required=True, type=click.Path(),
              help="FER2013 folder (train/, test/ class folders), fer2013.csv, or a folder of "
                   "class folders (CK+ style; split with --split).")
@click.option("--arch", default="fercnn_m",
              help="fercnn_s|fercnn_m|fercnn_l, or any timm model name (resnet18, vgg16, "
                   "efficientnet_b0, tf_efficientnetv2_b0, ...).")
@click.option("--epochs", default=30, type=click.IntRange(1))
@click.option("--batch-size", default=64, type=click.IntRange(2))
@click.option("--lr", type=Finite(0, 10, min_open=True), default=None,
              help="Peak learning rate [sgd 0.05, adamw 1e-3].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd")
@click.option("--weight-decay", type=Finite(0), default=None,
              help="[sgd 5e-4, adamw 0.05]")
@click.option("--schedule", type=click.Choice(["cosine", "onecycle", "none"]), default="cosine")
@click.option("--warmup-epochs", type=Finite(0), default=1.0,
              help="Linear warm-up (cosine/none).")
@click.option("--label-smoothing", type=Finite(0, 0.5), default=0.1)
@click.option("--balance", type=click.Choice(["none", "loss", "sampler"]), default="none",
              help="Counter class imbalance (disgust: 436 images) by 1/sqrt(count) loss "
                   "weights or sampling.")
@click.option("--augment-preset", type=click.Choice(["default", "realworld"]),
              default="default",
              help="realworld: detector framing (scale +-15 %, shift +-10 %, rotation +-15 deg) "
                   "and camera conditions (low resolution, blur, JPEG, gamma) for faces in real "
                   "photos and videos. The options below override single values.")
@click.option("--flip/--no-flip", default=None, help="Random horizontal flip [on].")
@click.option("--rotate", type=Finite(0, 90), default=None,
              help="Random rotation, +- degrees [default 10, realworld 15].")
@click.option("--scale", type=Finite(0, 0.9), default=None,
              help="Random zoom, +- fraction [0.1, 0.15].")
@click.option("--translate", type=Finite(0, 0.5), default=None,
              help="Random shift, +- fraction [0.1].")
@click.option("--jitter", type=Finite(0, 1), default=None,
              help="Brightness/contrast jitter [0.2, 0.3].")
@click.option("--erase", type=Finite(0, 1), default=None,
              help="Random-erasing (occlusion) probability [0.25, 0.3].")
@click.option("--lowres", type=Finite(0, 1), default=None,
              help="Probability of down-then-up sampling to 12-36 px [0, 0.3].")
@click.option("--blur", type=Finite(0, 1), default=None,
              help="Probability of a Gaussian blur [0, 0.25].")
@click.option("--jpeg", type=Finite(0, 1), default=None,
              help="Probability of JPEG re-encoding at quality 15-75 [0, 0.3].")
@click.option("--gamma", type=Finite(0, 2), default=None,
              help="Exposure: gamma within [1/(1+g), 1+g] [0, 0.4].")
@click.option("--no-augment", is_flag=True, help="Turn every augmentation off.")
@click.option("--extra-data", multiple=True, type=click.Path(),
              help="Extra labelled training faces (a folder of class folders, e.g. "
                   "lfw_expressions; repeatable), mixed into the training split.")
@click.option("--extra-cap", type=click.IntRange(1), default=1500,
              help="At most this many extra images per class (seed-fixed sample), so a set "
                   "that is mostly neutral and happy does not swamp the rest.")
@click.option("--img-size", type=click.IntRange(16), default=48)
@click.option("--in-chans", type=click.Choice(["1", "3"]), default="1")
@click.option("--device", default="auto", help="auto|cpu|cuda|cuda:N")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch [all cores].")
@click.option("--seed", type=SEED, default=0)
@click.option("--amp/--no-amp", default=True, help="Mixed precision (CUDA only).")
@click.option("--eval-flip/--no-eval-flip", default=True,
              help="Also score validation with flip test-time averaging and select on it.")
@click.option("--train-split", default="train")
@click.option("--val-split", default="test", help="Validation split: test = PublicTest. "
              "Data without a split of its own validates on the val part of --split.")
@click.option("--split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
              help="Data without train/ and test/ (a folder of class folders, a CSV without "
                   "Usage): a stratified, seed-fixed split; val selects the model, test is "
                   "scored once at the end. Recorded in metrics.json.")
@click.option("--split-seed", type=SEED, default=0,
              help="Seed of that split (apart from --seed, so the test images stay put).")
@click.option("--split-group", default=None, metavar="REGEX",
              help="Keep files whose names share this regular expression's match on one side "
                   "of that split: a person or a video, e.g. '^S[0-9]+' for CK+ subjects.")
@click.option("--labels", default="fer2013",
              help="fer2013 (the seven classes), auto (the data's class folders, sorted, "
                   "synonyms folded: anger -> angry; contempt kept), or a comma list.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use a class-stratified subset of this many training images.")
@click.option("--val-limit", type=click.IntRange(1), default=None)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images with a warning.")
@click.option("--out", default=None, type=click.Path(),
              help="Output folder [runs/train, or runs/train2, runs/train3 ... when taken; "
                   "with --resume: the resumed run's folder]. One that holds a run is refused "
                   "without --exist-ok.")
@click.option("--exist-ok", is_flag=True,
              help="Write into an --out that already holds a run, overwriting it.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue a run from its last.pt exactly (a larger --epochs extends it); "
                   "options given must match the run's.")
@click.option("--stop-after", type=click.IntRange(1), default=None,
              help="Run at most this many epochs now, then stop resumably (fits a run into "
                   "sessions; the schedule still spans --epochs).")
@click.option("--time-limit", type=Finite(0, 10080, min_open=True), default=None,
              metavar="MIN",
              help="Train for at most this many minutes in all: after every epoch the epoch "
                   "count is re-fitted to the time left (--epochs is then the maximum), so the "
                   "learning-rate schedule still runs to its end.")
@click.option("--drop", type=Finite(0, 0.9), default=None,
              help="Dropout before the classifier [architecture default].")
@click.option("--sync-bn", is_flag=True, help="torchrun on GPUs: synchronised BatchNorm.")
@click.option("--teacher", type=click.Path(), default=None,
              help="Distil from this checkpoint's soft targets.")
@click.option("--kd-alpha", type=Finite(0, 1), default=0.5,
              help="Weight of the distillation loss.")
@click.option("--kd-temperature", type=Finite(0.1, 100), default=4.0)
@click.option("--soft-labels", type=click.Path(), default=None,
              help="A FER+ vote file (file,neutral,happiness,...,unknown,NF): train on each "
                   "image's vote distribution (not-a-face rows dropped, unknown left out) and "
                   "report the FER+ majority accuracy beside the dataset-label accuracy.")
@click.option("--soft-mix", type=Finite(0, 1), default=1.0, show_default=True,
              help="With --soft-labels: target = MIX x votes + (1 - MIX) x the dataset's "
                   "own label.")
@click.option("--init", type=click.Path(), default=None,
              help="Start from the weights of a local checkpoint of the same --arch (only "
                   "the classifier head may differ).")
@click.option("--init-partial", is_flag=True,
              help="With --init: load whichever tensors fit (another architecture or input "
                   "size), listing those that do not.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(**o) -> None:
    """Train an emotion classifier; writes best.pt, last.pt, metrics.json, curves.png and
    confusion.png to --out. Ctrl-C leaves a resumable last.pt.

    Runs unchanged under torchrun (--batch-size is then the global batch):
    torchrun --nproc_per_node 4 -m fer_edge.train.cli --data ... """
    setup_logging(o.pop("verbose"))
    ctx = click.get_current_context()
    given = {k for k in o if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}
    from .augment import AugmentConfig, preset
    from .trainer import TrainConfig, fit

    no_aug = o.pop("no_augment")
    set_aug = {k: o.pop(k) for k in ("flip", "rotate", "scale", "translate", "jitter",
                                     "erase", "lowres", "blur", "jpeg", "gamma")}
    aug = preset(o.pop("augment_preset"), **{k: v for k, v in set_aug.items() if v is not None})
    if no_aug:
        aug = AugmentConfig(False, 0, 0, 0, 0, 0)
    o["extra_data"] = list(o["extra_data"])
    o["in_chans"] = int(o["in_chans"])
    cfg = TrainConfig(augment=aug, command=shlex.join(["fer-train", *sys.argv[1:]]), **o)
    if "soft_mix" in given and not cfg.soft_labels:
        raise click.UsageError("--soft-mix needs --soft-labels FILE")
    m = fit(cfg, given)
    if not m:  # a torchrun rank other than 0
        return
    ferplus = m.get("val_ferplus")
    test = (f"; test acc {m['test_acc']:.4f} on {m['test_images']} held-out images"
            if "test_acc" in m else "")
    click.echo(f"best {m['selection_metric']} {m['best_val_acc']:.4f} at epoch "
               f"{m['best_epoch']}"
               + (f" (FER+ majority {ferplus['accuracy']:.4f} on {ferplus['images']} "
                  "images)" if ferplus else "")
               + f"{test}; outputs in {m['config']['out']}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path())
@click.option("--weights", default=None,
              help="Comma list, one per checkpoint (normalised to sum 1) [equal].")
@click.option("--out", required=True, type=click.Path(), help="Checkpoint to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def average_main(checkpoints: tuple[str, ...], weights: str | None, out: str, force: bool,
                 verbose: bool) -> None:
    """Average classifier CHECKPOINTS of one network (WiSE-FT, model soups) into --out."""
    setup_logging(verbose)
    if len(checkpoints) < 2:
        raise FerEdgeError("give two checkpoints or more")
    if Path(out).exists() and not force:
        raise FerEdgeError(f"--out {out}: exists (--force replaces it)")
    if any(Path(out).resolve() == Path(c).resolve() for c in checkpoints if Path(c).exists()):
        raise FerEdgeError(f"--out {out}: is one of the inputs")
    from .average import average_checkpoints, parse_weights
    from .checkpoint import save_checkpoint

    state = average_checkpoints(list(checkpoints), parse_weights(weights, len(checkpoints)),
                                shlex.join(["fer-average-checkpoints", *sys.argv[1:]]))
    save_checkpoint(state, out)
    click.echo(f"wrote {out}: " + ", ".join(f"{a['weight']:g} x {a['checkpoint']}"
                                            for a in state["average"]))


if __name__ == "__main__":
    main()
