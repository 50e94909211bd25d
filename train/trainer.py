"""``fit``: the training run behind ``fer-train`` (build model, data, then epoch by epoch)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fer_edge.edge.data import (
    Split,
    concat_splits,
    load_split,
    read_unsplit,
    resolve_labels,
    split_info,
)
from fer_edge.edge.data.soft_labels import Votes, read_votes, vote_distribution
from fer_edge.edge.data.splits import (
    DEFAULT_SPLIT,
    PART_OF,
    check_disjoint,
    check_group,
    parse_fractions,
    pixel_overlap,
)
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write, atomic_write_text, writing
from fer_edge.edge.inputs.images import BadImage
from fer_edge.edge.metrics import classification_report
from fer_edge.edge.preprocess import InputSpec

from .augment import AugmentConfig
from .checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from .distributed import barrier, check_batch, gather_rows, init_distributed, shutdown, sum_across
from .engine import Distiller, class_weights, epoch_order, predict_proba, train_one_epoch
from .models import classifier_keys, count_params, create_model
from .rundir import check_run_inputs, choose_out, run_folder

log = logging.getLogger("fer_edge.train")
now = time.monotonic  # the training clock (--time-limit); a test replaces it with a fake one


@dataclass
class TrainConfig:
    data: str
    out: str | None = None  # None: runs/train, runs/train2, ... (or the resumed run's folder)
    exist_ok: bool = False  # write into an --out that already holds a run
    arch: str = "fercnn_m"
    epochs: int = 30
    batch_size: int = 64
    lr: float | None = None  # sgd 0.05, adamw 1e-3
    optimizer: str = "sgd"
    weight_decay: float | None = None  # sgd 5e-4, adamw 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    balance: str = "none"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    img_size: int = 48
    in_chans: int = 1
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    amp: bool = True
    eval_flip: bool = True
    train_split: str = "train"
    val_split: str = "test"
    labels: str = "fer2013"  # fer2013, auto (the data's class folders) or a comma list
    split: str = DEFAULT_SPLIT  # train,val,test fractions for data without a split
    split_seed: int = 0  # the seed of that split (apart from --seed: the test set stays put)
    split_group: str | None = None  # regex on file names: files sharing its match stay together
    limit: int | None = None
    extra_data: list[str] = field(default_factory=list)  # more class folders to train on
    extra_cap: int = 1500  # at most this many extra images per class
    val_limit: int | None = None
    skip_bad: bool = False
    init: str | None = None
    init_partial: bool = False  # --init: load what fits even beyond the classifier head
    resume: str | None = None
    stop_after: int | None = None  # epochs to run in this invocation, then stop resumably
    time_limit: float | None = None  # minutes of training in all; --epochs is then a maximum
    planned_epochs: int | None = None  # epochs the schedule spans (fitted to time_limit)
    drop: float | None = None  # dropout before the classifier (fercnn_*; timm: drop_rate)
    sync_bn: bool = False  # DDP on GPUs: synchronise BatchNorm statistics across ranks
    teacher: str | None = None
    kd_alpha: float = 0.5
    soft_labels: str | None = None  # a FER+ vote file: train on the vote distributions
    soft_mix: float = 1.0  # target = mix * votes + (1 - mix) * the dataset's own label
    kd_temperature: float = 4.0
    command: str = ""

    @property
    def schedule_epochs(self) -> int:
        """The epochs the learning-rate schedule spans: fitted to --time-limit, else --epochs."""
        return self.planned_epochs or self.epochs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["augment"] = AugmentConfig(**d.get("augment", {}))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def pick_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against the devices present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index):
        raise FerEdgeError(f"--device {name!r}: not a device this tool can use; choose auto, "
                           "cpu, cuda or cuda:N")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise FerEdgeError(f"--device {name}: no CUDA device is available (use --device "
                               "cpu)")
        if dev.index is not None and dev.index >= n:
            raise FerEdgeError(f"--device {name}: there are only {n} CUDA device(s), "
                               f"cuda:0 to cuda:{n - 1}")
    return dev


def build_optimizer(cfg: TrainConfig, model: nn.Module, steps_per_epoch: int):
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    if cfg.optimizer == "sgd":
        lr, wd = cfg.lr or 0.05, 5e-4 if cfg.weight_decay is None else cfg.weight_decay
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0}]
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    elif cfg.optimizer == "adamw":
        lr, wd = cfg.lr or 1e-3, 0.05 if cfg.weight_decay is None else cfg.weight_decay
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0}]
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        raise FerEdgeError(f"unknown optimizer {cfg.optimizer!r}; choose sgd or adamw")
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "onecycle":
        if cfg.time_limit:
            raise FerEdgeError("--time-limit needs a schedule that can be re-fitted: cosine "
                               "or none, not onecycle")
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                    pct_start=0.25)
    elif cfg.schedule in ("cosine", "none"):
        warm = int(cfg.warmup_epochs * steps_per_epoch)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if cfg.schedule == "none":
                return 1.0
            total = cfg.schedule_epochs * steps_per_epoch  # read live: --time-limit re-fits it
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    else:
        raise FerEdgeError(f"unknown schedule {cfg.schedule!r}; choose cosine, onecycle or none")
    return opt, sched


def fit_epochs_to_time(done: int, elapsed_s: float, limit_s: float, max_epochs: int) -> int:
    """The epoch count that ends training within ``limit_s`` at the mean pace so far."""
    per_epoch = elapsed_s / max(1, done)
    return max(done, min(max_epochs, done + int((limit_s - elapsed_s) / per_epoch)))


def _raise_on_sigterm(signum, frame):  # SIGTERM behaves like Ctrl-C
    raise KeyboardInterrupt


def _arch_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    if cfg.drop is None:
        return {}
    return {"drop": cfg.drop} if cfg.arch.startswith("fercnn") else {"drop_rate": cfg.drop}


# Settings a resumed run takes from the command line; every other one defines the run and
# comes from the checkpoint (``epochs`` may grow: a larger --epochs extends the run).
FROM_NOW = ("data", "out", "exist_ok", "device", "threads", "resume", "command", "stop_after",
            "epochs", "planned_epochs")
AUGMENT_OPTIONS = tuple(f.name for f in fields(AugmentConfig))


def changed_options(cfg: TrainConfig) -> set[str]:
    """The settings of ``cfg`` that differ from TrainConfig's defaults (augmentation settings
    by their own names): what a caller of :func:`fit` asked for."""
    base, aug = TrainConfig(data=cfg.data), AugmentConfig()
    return ({f.name for f in fields(TrainConfig) if f.name != "augment"
             and getattr(cfg, f.name) != getattr(base, f.name)}
            | {k for k in AUGMENT_OPTIONS if getattr(cfg.augment, k) != getattr(aug, k)})


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown(value: Any) -> str:
    return "default" if value is None else str(value)


def _resolve_resume(cfg: TrainConfig, given: Collection[str]) -> tuple[TrainConfig, dict | None]:
    """The run to continue: its checkpoint and settings. A setting given now (``given``)
    that differs from the run's is refused, never silently dropped."""
    if not cfg.resume:
        if cfg.init_partial and not cfg.init:
            raise FerEdgeError("--init-partial needs --init CHECKPOINT")
        return cfg, None
    if cfg.init:
        raise FerEdgeError("--init and --resume exclude each other: --resume continues a run "
                           "with its own weights, --init starts a new one from other weights")
    ckpt = load_checkpoint(cfg.resume)
    if "optimizer" not in ckpt:
        raise FerEdgeError(f"{cfg.resume}: has no optimizer state; resume from last.pt "
                           "(best.pt holds weights only, use --init for it)")
    saved = TrainConfig.from_dict(ckpt["config"])
    differ = [f"{_option(k)} {_shown(getattr(cfg, k))} (run: {_shown(getattr(saved, k))})"
              for k in sorted(given)
              if k not in FROM_NOW and k in TrainConfig.__dataclass_fields__ and k != "augment"
              and getattr(cfg, k) != getattr(saved, k)]
    differ += [f"{_option(k)} {getattr(cfg.augment, k)} (run: {getattr(saved.augment, k)})"
               for k in AUGMENT_OPTIONS if k in given
               and getattr(cfg.augment, k) != getattr(saved.augment, k)]
    if "no_augment" in given and cfg.augment != saved.augment:
        differ.append(f"--no-augment (run: {saved.augment})")
    if differ:
        raise FerEdgeError(f"--resume {cfg.resume}: {'; '.join(differ)} differ from the run "
                           "being resumed; a resumed run keeps its settings: drop them, or start "
                           "a new run from its weights with --init")
    if "epochs" in given and cfg.epochs < saved.epochs:
        raise FerEdgeError(f"--resume {cfg.resume}: --epochs {cfg.epochs} is fewer than the "
                           f"run's {saved.epochs}; use --stop-after N to stop early")
    for k in FROM_NOW:
        if k != "epochs" and k != "planned_epochs":
            setattr(saved, k, getattr(cfg, k))
    saved.epochs = max(cfg.epochs, saved.epochs)
    return saved, ckpt


def _load_teacher(cfg: TrainConfig, labels: tuple[str, ...], spec: InputSpec,
                  device: torch.device) -> Distiller | None:
    if not cfg.teacher:
        return None
    tck = load_checkpoint(cfg.teacher)
    if tuple(tck["labels"]) != labels:
        raise FerEdgeError(f"{cfg.teacher}: teacher labels {tck['labels']} differ from the "
                           f"student's {list(labels)}")
    if InputSpec.from_dict(tck["input"]) != spec:
        raise FerEdgeError(f"{cfg.teacher}: teacher input {tck['input']} differs from the "
                           f"student's {spec.to_dict()}")
    teacher = build_from_checkpoint(tck, cfg.teacher).to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    d = Distiller(teacher, cfg.kd_alpha, cfg.kd_temperature)
    log.info("distilling from %s (%s), alpha %.2f, T %.1f", cfg.teacher, tck["arch"],
             d.alpha, d.temperature)
    return d


def _init_weights(model: nn.Module, cfg: TrainConfig, spec: InputSpec,
                  labels: tuple[str, ...]) -> None:
    """--init: load a checkpoint's weights. Only the classifier head may fail to fit (another
    label set); anything else is refused, naming the tensors, unless ``init_partial``."""
    ck = load_checkpoint(cfg.init)
    if tuple(ck["labels"]) != labels:
        log.info("--init %s: its labels (%s) differ from this run's (%s): the classifier head "
                 "starts anew", cfg.init, ", ".join(ck["labels"]), ", ".join(labels))
    theirs = InputSpec.from_dict(ck["input"])
    if (theirs.height, theirs.width) != (spec.height, spec.width) and not cfg.init_partial:
        raise FerEdgeError(f"--init {cfg.init}: trained on {theirs.width}x{theirs.height} "
                           f"inputs, but --img-size is {spec.height}: pass --img-size "
                           f"{theirs.height}, or --init-partial to fine-tune at another size")
    own = model.state_dict()
    fit_keys = {k: v for k, v in ck["model"].items() if k in own and own[k].shape == v.shape}
    missed = [k for k in own if k not in fit_keys]
    head = classifier_keys(model)
    if not cfg.init_partial and set(missed) - head:
        shown = [k for k in missed if k not in head]
        raise FerEdgeError(
            f"--init {cfg.init} ({ck['arch']}) does not fit --arch {cfg.arch}: {len(missed)} of "
            f"{len(own)} tensors would not load ({', '.join(shown[:6])}"
            f"{', ...' if len(shown) > 6 else ''}); only the classifier head may differ. Pass "
            "the checkpoint's --arch, or --init-partial to load just what fits")
    if tuple(ck["labels"]) != labels:  # same count, other classes: the old head means nothing
        fit_keys = {k: v for k, v in fit_keys.items() if k not in classifier_keys(model)}
        missed = [k for k in own if k not in fit_keys]
    model.load_state_dict(fit_keys, strict=False)
    log.info("--init %s: loaded %d/%d tensors%s", cfg.init, len(fit_keys), len(own),
             f"; not loaded (re-initialised): {', '.join(missed)}" if missed else "")


def _carry_run(resume: str, out: Path, resume_ckpt: dict, copy: bool) -> None:
    """A resumed run writing to another folder takes its best.pt and train.log along, so the
    new folder holds the whole run. ``copy`` False: only check that best.pt is there."""
    src = Path(resume).parent
    if resume_ckpt["epoch"] > 0 and not (src / "best.pt").is_file():
        raise FerEdgeError(f"{src / 'best.pt'}: missing; the resumed run's best weights so far "
                           "are needed beside its last.pt")
    if not copy or src.resolve() == out.resolve():
        return
    for name in ("best.pt", "train.log"):
        if (src / name).is_file():
            with writing(out / name, "copy the resumed run's file"), open(src / name, "rb") as fh:
                atomic_write(out / name, lambda dst, fh=fh: shutil.copyfileobj(fh, dst))
    log.info("continuing %s in %s (best.pt and train.log copied)", src, out)


def _load_data(cfg: TrainConfig, labels: tuple[str, ...], world: int
               ) -> tuple[Split, Split, Split | None, dict | None]:
    """train, val, test (None when the data has its own split) and the record of the split
    made for data without one. Training and validation data sharing an image is refused."""
    fractions = parse_fractions(cfg.split)
    check_group(cfg.split_group)
    record = split_info(cfg.data, labels, cfg.img_size, cfg.skip_bad, fractions,
                        cfg.split_seed, cfg.split_group)
    train_split, val_split = cfg.train_split, cfg.val_split
    if record is not None:  # parts of the split made here: train, val, and test at the end
        if PART_OF.get(train_split.lower()) != "train" or PART_OF.get(val_split.lower()) \
                not in ("val", "test"):
            raise FerEdgeError(f"--train-split {train_split} / --val-split {val_split}: {cfg.data} "
                               "has no split of its own; the split made for it trains on its "
                               "train part and validates on its val part (set the fractions "
                               "with --split)")
        train_split, val_split = "train", "val"

    def load(option: str, split: str, limit: int | None) -> Split:
        try:
            s = load_split(cfg.data, split, labels, cfg.img_size, cfg.skip_bad,
                           fractions=fractions, seed=cfg.split_seed, group=cfg.split_group)
        except BadImage:  # names its file
            raise
        except FerEdgeError as e:
            raise FerEdgeError(f"{e} ({option} {split})") from None
        return s.stratified(limit, cfg.seed)

    train = load("--train-split", train_split, cfg.limit)
    if cfg.extra_data:
        extras = [load_split(p, "all" if read_unsplit(p, labels, cfg.img_size, cfg.skip_bad)
                             is not None else "train", labels, cfg.img_size, cfg.skip_bad)
                  .capped(cfg.extra_cap, cfg.seed) for p in cfg.extra_data]
        for p, e in zip(cfg.extra_data, extras, strict=True):
            log.info("extra data %s: %d images (%s)", p, len(e), ", ".join(
                f"{n} {c}" for n, c in zip(labels, e.class_counts(), strict=True) if c))
        train = concat_splits([train, *extras])
    if len(train) < 2 * world:  # BatchNorm needs two images per batch and process
        raise FerEdgeError(f"{cfg.data} [{train_split}]: {len(train)} training image(s); "
                           f"at least {2 * world} are needed")
    val = load("--val-split", val_split, cfg.val_limit)
    if not len(val):
        raise FerEdgeError(f"--data {cfg.data}: the val part of the split is empty; the "
                           f"data has too few images per class for --split {cfg.split}")
    what = f"--data {cfg.data} --train-split {train_split} --val-split {val_split}"
    if not val.paths and val.source in train.source.split(" + "):
        raise FerEdgeError(f"{what}: both name the same images ({val.source}); validating on "
                           "training images measures nothing")
    check_disjoint(train.paths, val.paths, what)
    same = pixel_overlap(train.images, val.images)
    if same:
        log.warning("%d of the %d validation images are exact pixel copies of training "
                    "images (different files)", same, len(val))
    test = load("--split", "test", None) if record is not None and fractions[2] > 0 else None
    if cfg.batch_size > len(train):
        log.warning("--batch-size %d is larger than the %d training images: one step per "
                    "epoch", cfg.batch_size, len(train))
    return train, val, test, record


def _attach_votes(cfg: TrainConfig, train: Split, val: Split) -> tuple[Split, Votes | None]:
    """--soft-labels: the training split with its vote distributions as targets (images
    without one dropped, counted in the log), and the validation images' votes, for the FER+
    majority accuracy reported beside the dataset-label accuracy (None: val has no votes)."""
    if not cfg.soft_labels:
        return train, None
    table = read_votes(cfg.soft_labels)
    votes = vote_distribution(train.paths, train.label_names, table,
                              f"{cfg.data} [{cfg.train_split}]")
    soft = train.subset(votes.index)
    own = np.eye(len(train.label_names), dtype=np.float32)[soft.labels]
    soft.soft = (cfg.soft_mix * votes.dist + (1 - cfg.soft_mix) * own).astype(np.float32)
    log.info("--soft-labels %s: %d of %d training images get a vote distribution (mix %.2f); "
             "dropped: %d not a face, %d without a vote for our classes, %d not in the file",
             table.path, len(votes.index), len(train), cfg.soft_mix, votes.not_a_face,
             votes.no_vote, votes.missing)
    try:
        val_votes = vote_distribution(val.paths, val.label_names, table,
                                      f"{cfg.data} [{cfg.val_split}]")
    except FerEdgeError as e:
        log.warning("no FER+ majority accuracy on the validation split: %s", e)
        val_votes = None
    return soft, val_votes


def fit(cfg: TrainConfig, given: Collection[str] | None = None) -> dict[str, Any]:
    """Train, checkpointing every epoch; returns the metrics dict written to metrics.json.
    Under torchrun every rank calls this; rank 0 alone logs and writes files.

    ``given``: the settings the user chose (CLI: the options on the command line; default:
    those that differ from TrainConfig's defaults); with ``resume`` they must match the run.
    ``metrics["config"]["out"]`` names the folder written to. SIGTERM behaves like Ctrl-C
    throughout, so a failed or stopped run cleans up the same way."""
    cfg, resume_ckpt = _resolve_resume(cfg, changed_options(cfg) if given is None else given)
    device = pick_device(cfg.device)
    if not Path(cfg.data).exists():
        raise FerEdgeError(f"--data {cfg.data}: no such file or directory")
    out = choose_out(cfg.out, cfg.exist_ok, cfg.resume)
    check_run_inputs(out, [cfg.data, *cfg.extra_data, cfg.teacher, cfg.init])
    cfg.out = str(out)
    ctx, device = init_distributed(device)
    check_batch(cfg.batch_size, ctx)
    if not ctx.main:
        log.setLevel(logging.WARNING)
    prev = signal.signal(signal.SIGTERM, _raise_on_sigterm) \
        if hasattr(signal, "SIGTERM") else None
    try:
        with run_folder(out, create=ctx.main,
                        exist_ok=cfg.exist_ok or bool(cfg.resume)):
            if ctx.main:
                if resume_ckpt:
                    _carry_run(cfg.resume, out, resume_ckpt, copy=False)
                else:
                    (out / "train.log").unlink(missing_ok=True)  # --exist-ok: a new log
            return _train(cfg, out, device, ctx, resume_ckpt)
    finally:
        if prev is not None:
            signal.signal(signal.SIGTERM, prev)


def _train(cfg: TrainConfig, out: Path, device: torch.device, ctx, resume_ckpt: dict | None):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    spec = InputSpec(height=cfg.img_size, width=cfg.img_size, channels=cfg.in_chans)
    labels = tuple(resume_ckpt["labels"]) if resume_ckpt else resolve_labels(cfg.labels,
                                                                              cfg.data)
    model = create_model(cfg.arch, num_classes=len(labels), in_chans=cfg.in_chans,
                         **_arch_kwargs(cfg))
    if cfg.init and not resume_ckpt:
        _init_weights(model, cfg, spec, labels)
    if resume_ckpt:
        model.load_state_dict(resume_ckpt["model"])
    distiller = _load_teacher(cfg, labels, spec, device)
    train, val, test, split_record = _load_data(cfg, labels, ctx.world)
    train, val_votes = _attach_votes(cfg, train, val)
    if distiller is not None and not cfg.augment.enabled:  # inputs never change: run once
        probs = predict_proba(distiller.teacher, train, spec, device)  # probabilities ...
        distiller.cached = torch.from_numpy(np.log(np.maximum(probs, 1e-12)))  # log-probs
        log.info("teacher outputs cached")
    # channels_last: oneDNN convolutions train ~1.5x faster on CPU in this layout.
    model.to(device, memory_format=torch.channels_last)
    net: nn.Module = model
    if ctx.enabled:
        if cfg.sync_bn and device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    steps = math.ceil(len(train) / cfg.batch_size)
    opt, sched = build_optimizer(cfg, model, steps)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    weight = class_weights(train).to(device) if cfg.balance == "loss" else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    metric = "val_acc_flip" if cfg.eval_flip else "val_acc"

    start_epoch, best, history = 0, -1.0, []
    if resume_ckpt:
        opt.load_state_dict(resume_ckpt["optimizer"])
        sched.load_state_dict(resume_ckpt["scheduler"])
        if scaler is not None and resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        start_epoch, best, history = resume_ckpt["epoch"], resume_ckpt["best"], \
            list(resume_ckpt["history"])
        torch.set_rng_state(resume_ckpt["torch_rng"])

    meta = {"arch": cfg.arch, "arch_kwargs": _arch_kwargs(cfg), "labels": list(labels),
            "input": spec.to_dict(), "targets": _targets_record(cfg),
            "config": cfg.to_dict(), "params": count_params(model), "world_size": ctx.world}

    def state(epoch: int) -> dict[str, Any]:
        return {**meta, "config": cfg.to_dict(),  # planned_epochs may have been re-fitted
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler else {}, "epoch": epoch, "best": best,
                "history": history, "torch_rng": torch.get_rng_state()}

    log.info("training %s (%.2f M params) on %s%s: %d train / %d val images%s, %d epochs%s; "
             "writing to %s", cfg.arch, count_params(model) / 1e6, device,
             f" x {ctx.world} processes" if ctx.enabled else "", len(train), len(val),
             f" ({len(test)} test images scored at the end)" if test is not None else "",
             cfg.epochs, f" at most, fitted to {cfg.time_limit:g} min" if cfg.time_limit else "",
             out)
    if resume_ckpt and ctx.main:  # now that data and model are known to be fine
        _carry_run(cfg.resume, out, resume_ckpt, copy=True)
    t_start = now()
    epoch = start_epoch
    val_index = np.arange(ctx.rank, len(val), ctx.world)
    try:
        if start_epoch == 0 and ctx.main:  # so Ctrl-C in epoch 1 still leaves a resumable file
            save_checkpoint(state(0), out / "last.pt")
        stop_at = None if cfg.stop_after is None else start_epoch + cfg.stop_after
        prior_s = history[-1].get("time_s", 0.0) if history else 0.0
        while epoch < cfg.schedule_epochs and (stop_at is None or epoch < stop_at):
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7919 * ctx.rank)
            order = epoch_order(train, epoch, cfg.seed, cfg.balance)
            st = train_one_epoch(net, train, spec, order, cfg.batch_size, opt, sched, loss_fn,
                                 cfg.augment, gen, device, scaler,
                                 desc=f"epoch {epoch + 1}/{cfg.schedule_epochs}", ctx=ctx,
                                 distiller=distiller)
            row = {"epoch": epoch + 1, "train_loss": st.loss, "train_acc": st.accuracy,
                   "images_per_s": st.images_per_s, "lr": opt.param_groups[0]["lr"]}
            for key, flip in (("val_acc", False), ("val_acc_flip", True))[:1 + cfg.eval_flip]:
                p = gather_rows(val_index, predict_proba(model, val, spec, device, flip=flip,
                                                         index=val_index), len(val), ctx)
                row[key] = float((p.argmax(1) == val.labels).mean())
            if val_votes is not None:  # on the last of the above (flip-averaged when on)
                row["val_ferplus_acc"] = float(
                    val_votes.majority_correct(p[val_votes.index].argmax(1)).mean())
            row["time_s"] = round(prior_s + now() - t_start, 1)  # training time so far
            history.append(row)
            if cfg.time_limit:
                elapsed = sum_across([row["time_s"]], ctx, device)[0] / ctx.world  # ranks agree
                cfg.planned_epochs = fit_epochs_to_time(epoch + 1, elapsed,
                                                        cfg.time_limit * 60, cfg.epochs)
            improved = row[metric] > best
            if improved:
                best = row[metric]
            if ctx.main:
                if improved:
                    save_checkpoint({**meta, "model": model.state_dict(), "epoch": epoch + 1,
                                     "best": best, "history": history}, out / "best.pt")
                save_checkpoint(state(epoch + 1), out / "last.pt")
                msg = (f"epoch {epoch + 1:3d}/{cfg.schedule_epochs}  loss {st.loss:.4f}  "
                       f"train {st.accuracy:.4f}  val {row['val_acc']:.4f}"
                       + (f"  val_flip {row['val_acc_flip']:.4f}" if cfg.eval_flip else "")
                       + (f"  ferplus {row['val_ferplus_acc']:.4f}"
                          if "val_ferplus_acc" in row else "")
                       + f"  {st.images_per_s:.0f} img/s" + ("  *best*" if improved else ""))
                tqdm.write(msg)
                with writing(out / "train.log"), open(out / "train.log", "a") as fh:
                    fh.write(msg + "\n")
            barrier(ctx)
            epoch += 1
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start_epoch
        if ctx.main:
            tqdm.write(f"\ninterrupted during epoch {epoch + 1}; {out / 'last.pt'} holds the "
                       f"state after epoch {done}: continue with --resume {out / 'last.pt'}",
                       file=sys.stderr)
        raise
    if epoch < cfg.schedule_epochs and ctx.main:
        tqdm.write(f"stopped after epoch {epoch} of {cfg.schedule_epochs} (--stop-after); "
                   f"continue with --resume {out / 'last.pt'}")
    metrics = finish(cfg, out, val, spec, device, history, metric, now() - t_start,
                     test, split_record, val_votes) if ctx.main else {}
    barrier(ctx)
    shutdown(ctx)
    return metrics


def _targets_record(cfg: TrainConfig) -> dict[str, Any]:
    """What the model was trained to predict, for the checkpoint and the bundle."""
    if not cfg.soft_labels:
        return {"kind": "labels"}
    from fer_edge.edge.bundle import sha256_file

    return {"kind": "votes", "file": Path(cfg.soft_labels).name,
            "sha256": sha256_file(cfg.soft_labels), "mix": cfg.soft_mix}


def finish(cfg: TrainConfig, out: Path, val: Split, spec: InputSpec, device: torch.device,
           history: list[dict], metric: str, elapsed: float, test: Split | None = None,
           split_record: dict | None = None,
           val_votes: Votes | None = None) -> dict[str, Any]:
    """Evaluate the best checkpoint, write metrics.json, curves.png and confusion.png. The
    test part of a split made here is scored once, now, with the checkpoint val chose."""
    from .report import plot_confusion, plot_curves

    best_ckpt = load_checkpoint(out / "best.pt")
    model = build_from_checkpoint(best_ckpt, out / "best.pt").to(device)
    p = predict_proba(model, val, spec, device, flip=cfg.eval_flip)
    report = classification_report(val.labels, p.argmax(1), val.label_names)
    metrics = {
        "arch": cfg.arch, "params": count_params(model), "labels": list(val.label_names),
        "val_split": f"{cfg.data} [{cfg.val_split}]", "val_images": len(val),
        "selection_metric": metric, "best_epoch": best_ckpt["epoch"],
        "best_val_acc": best_ckpt["best"], "val_tta_flip": cfg.eval_flip,
        "val_report": report, "history": history,
        "train_seconds_this_run": round(elapsed, 1), "command": cfg.command,
        "targets": _targets_record(cfg),
        "config": cfg.to_dict(), "torch": torch.__version__,
    }
    if val_votes is not None:
        ok = val_votes.majority_correct(p[val_votes.index].argmax(1))
        metrics["val_ferplus"] = {
            "accuracy": float(ok.mean()), "images": int(len(ok)),
            "rule": "the prediction holds the largest FER+ vote share (ties: any of them)",
            "dropped": {"not_a_face": val_votes.not_a_face, "no_vote": val_votes.no_vote,
                        "not_in_file": val_votes.missing}}
    if split_record is not None:
        metrics["split"] = split_record
    if test is not None:
        pt = predict_proba(model, test, spec, device, flip=cfg.eval_flip)
        metrics["test_report"] = classification_report(test.labels, pt.argmax(1),
                                                       test.label_names)
        metrics["test_split"] = f"{cfg.data} [test part of the split made by fer-train]"
        metrics["test_images"] = len(test)
        metrics["test_acc"] = metrics["test_report"]["accuracy"]
    with writing(out / "metrics.json"):
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    with writing(out / "curves.png"):
        if history:
            plot_curves(history, out / "curves.png")
    with writing(out / "confusion.png"):
        plot_confusion(np.array(report["confusion"]), val.label_names, out / "confusion.png",
                       f"{cfg.arch} epoch {best_ckpt['epoch']}: val acc "
                       f"{report['accuracy']:.4f}")
    return metrics
