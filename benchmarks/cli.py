"""``fer-bench``: accuracy, accuracy drop, latency, throughput and pipeline FPS per model,
backend and precision."""

from __future__ import annotations

import shlex
import sys

import click

from fer_edge.edge.cliutil import SEED, Finite, friendly_errors, setup_logging, sigterm_as_interrupt

PRECISIONS = ("fp32", "int8", "fp16", "trt_fp16", "trt_int8")
BACKENDS = ("ort", "tensorrt")
PEERS = ("fer", "facex")  # benchmarks/peers.py knows how to run them


def _csv_list(value: str, option: str, choices: tuple[str, ...]) -> list[str]:
    """A comma list of names from ``choices``; anything else is one error naming ``option``."""
    from fer_edge.edge.errors import FerEdgeError

    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in choices]
    if bad or not items:
        raise FerEdgeError(f"{option} {value!r}: expected a comma list of "
                           f"{', '.join(choices)}")
    return items


MAX_BATCH = 1024  # throughput stops growing long before; more only costs memory
MAX_COUNT = 256  # threads, streams


def _positive_ints(value: str, option: str, most: int = MAX_COUNT) -> list[int]:
    """A comma list of whole numbers from 1 to ``most`` (batch sizes, thread counts)."""
    from fer_edge.edge.errors import FerEdgeError

    try:
        items = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        items = []
    if not items or min(items) < 1:
        raise FerEdgeError(f"{option} {value!r}: expected a comma list of whole numbers >= 1, "
                           "like 1,8,32")
    if max(items) > most:
        raise FerEdgeError(f"{option} {value!r}: at most {most} (a measurement needs no more)")
    return items


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "show_default": True})
@click.option("--model", "models", multiple=True, type=click.Path(),
              help="Bundle folder (repeatable) [the shipped default bundle].")
@click.option("--data", type=click.Path(), default=None,
              help="Labelled split for accuracy: FER2013 folder/CSV or CK+ style folder.")
@click.option("--split", default="test",
              help="test = FER2013 PublicTest; for data without a split of its own (class "
                   "folders, a CSV without Usage): train, val or test = the parts fer-train "
                   "made (same --data-split and --split-seed), or all.")
@click.option("--data-split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
              help="fer-train's --split for data without a split (its metrics.json 'split').")
@click.option("--split-seed", type=SEED, default=0, help="fer-train's --split-seed.")
@click.option("--split-group", default=None, metavar="REGEX", help="fer-train's --split-group.")
@click.option("--precision", default="fp32,int8", help="Comma list; missing ones are skipped.")
@click.option("--backend", default="ort", help="Comma list of ort,tensorrt.")
@click.option("--batch-sizes", default="1,8,32", help="Batch 1 gives latency, others "
              "throughput.")
@click.option("--threads", default="1,2", help="Comma list of intra-op thread counts.")
@click.option("--video", type=click.Path(), default=None,
              help="Also measure the edge loop on this video (and the naive loop).")
@click.option("--video-loops", type=click.IntRange(1), default=10)
@click.option("--video-streams", default="1,2,4",
              help="Also run this many copies of --video at once in one loop (comma list; FPS "
                   "per stream). With --peers fer, fer's own loop is measured on --video too.")
@click.option("--soak-seconds", type=Finite(0, 86400), default=0.0,
              help="Also run --soak-streams looped copies of --video this long, sampling RSS "
                   "(memory flat over a long run; 600 for the 10-minute check).")
@click.option("--soak-streams", type=click.IntRange(1, 64), default=4)
@click.option("--realworld", multiple=True, type=click.Path(),
              help="Labelled uncropped photos, end to end (repeatable): a folder of class "
                   "folders (the largest face per image) or a CSV image,x1,y1,x2,y2,label "
                   "(several faces; matched at IoU 0.3). Same detector settings as fer-edge run "
                   "on a folder.")
@click.option("--detector", type=click.Choice(["haar", "ours", "centerface"]), default="haar",
              help="--realworld: the face detector, with fer-edge run's settings for stills "
                   "(ours: the bundle's detector folder).")
@click.option("--detector-threshold", type=Finite(0, 1), default=None,
              help="--realworld, ours: the detection score a face needs [the stills "
                   "threshold].")
@click.option("--main-face", type=click.Choice(["largest", "score"]), default="score",
              help="--realworld, a photo with one label: its face is the largest detection, "
                   "or the largest weighted by the detector's score.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="--realworld: processes, each with its own single-thread Pipeline, results "
                   "in input order [every core].")
@click.option("--peers", default="", help="Also measure these peer packages on the same "
              "images: comma list of fer,facex (--data as face crops, --realworld end to end "
              "with their own detector).")
@click.option("--peer-python", type=click.Path(), default=None,
              help="Python of the environment the peers are installed in [this one]; they pin "
                   "TensorFlow and opencv-contrib, so a separate venv is usual.")
@click.option("--warmup-s", type=Finite(0, 600), default=1.0)
@click.option("--min-runs", type=click.IntRange(1), default=200)
@click.option("--min-seconds", type=Finite(0, 3600), default=2.0)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate accuracy on at most this many images (stratified).")
@click.option("--out", type=click.Path(), default="bench", help="Output folder.")
@click.option("--exist-ok", is_flag=True, help="Replace the report already in --out.")
@click.option("--compare-to", type=click.Path(), default=None,
              help="Earlier results.json: print changes, exit 1 on a regression.")
@click.option("--max-acc-drop", type=Finite(-100, 100), default=0.5, help="Gate: accuracy points.")
@click.option("--max-latency-rise", type=Finite(-1), default=0.10,
              help="Gate: fractional rise of batch-1 p50.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(models, data, split, data_split, split_seed, split_group, precision, backend,
         batch_sizes, threads, video, video_loops, video_streams, soak_seconds, soak_streams,
         realworld, detector, detector_threshold, main_face, workers, peers, peer_python,
         warmup_s, min_runs, min_seconds, limit, out, exist_ok, compare_to, max_acc_drop,
         max_latency_rise, verbose) -> None:
    """Benchmark model bundles side by side; writes results.json, results.csv, report.md and
    plots to --out. Ctrl-C writes what was measured so far."""
    setup_logging(verbose)
    from pathlib import Path

    from fer_edge.edge.data.splits import check_group, parse_fractions
    from fer_edge.edge.photos.workers import check_workers

    from .compare import compare, load_results
    from .harness import BenchSettings, run_benchmark
    from .measure import Timing

    parse_fractions(data_split, "--data-split")  # before any work
    check_group(split_group)
    settings = BenchSettings(
        models=list(models) or [None], data=data, split=split, data_split=data_split,
        split_seed=split_seed, split_group=split_group,
        precisions=_csv_list(precision, "--precision", PRECISIONS),
        backends=_csv_list(backend, "--backend", BACKENDS),
        batch_sizes=_positive_ints(batch_sizes, "--batch-sizes", MAX_BATCH),
        threads=_positive_ints(threads, "--threads"),
        video=video, video_loops=video_loops,
        video_streams=_positive_ints(video_streams, "--video-streams"),
        soak_seconds=soak_seconds, soak_streams=soak_streams, realworld=list(realworld),
        detector=detector, detector_threshold=detector_threshold, main_face=main_face,
        workers=check_workers(workers),
        limit=limit,
        peers=_csv_list(peers, "--peers", PEERS) if peers else [], peer_python=peer_python,
        timing=Timing(warmup_s, min_runs, min_seconds))
    old = load_results(compare_to) if compare_to else None  # fail early on a bad file
    command = shlex.join(["fer-bench", *sys.argv[1:]])
    with sigterm_as_interrupt():  # kill writes the partial results like Ctrl-C
        results, files = run_benchmark(settings, Path(out), command, exist_ok)
    click.echo((Path(out) / "report.md").read_text())
    click.echo("wrote " + ", ".join(str(f) for f in files), err=True)
    if results.get("interrupted"):
        sys.exit(130)
    if old is not None:
        lines, bad = compare(results, old, max_acc_drop, max_latency_rise)
        click.echo("\n".join(["compared with " + str(compare_to), *lines]))
        if bad:
            click.echo("REGRESSION:\n" + "\n".join(bad), err=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
