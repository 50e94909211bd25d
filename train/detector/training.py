"""``fit_detector``: the training run behind ``fer-train-detector`` (face boxes + five
landmarks). Same conventions as the classifier's ``fit``: a run folder that is never
clobbered, last.pt every epoch (Ctrl-C and SIGTERM leave it resumable, exit 130), --resume,
--time-limit (the epoch count re-fitted to the time left), progress, metrics.json, curves.png.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from fer_edge.edge.detection.metrics import DetectionScorer
from fer_edge.edge.detection.ours import decode, nms, priors
from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_text, writing

from ..checkpoint import load_checkpoint, save_checkpoint
from ..rundir import check_run_inputs, choose_out, run_folder
from ..trainer import _raise_on_sigterm, fit_epochs_to_time
from .data import DetSample, augment, build_targets, letterbox_faces, load_labels, read_image
from .model import FaceDetNet, count_params

log = logging.getLogger("fer_edge.train")
ARCH = "facedet"


@dataclass
class DetTrainConfig:
    data: str  # folder with train.jsonl (and val_wider.jsonl)
    val: str | None = None  # label file for validation [data/val_wider.jsonl]
    out: str | None = None
    exist_ok: bool = False
    width: float = 1.0
    img_size: int = 320
    epochs: int = 30
    samples_per_epoch: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    lm_weight: float = 0.5
    negatives: float = 0.0  # share of training crops that hold no face (hard negatives)
    threads: int | None = None
    seed: int = 0
    limit: int | None = None  # at most this many training images
    val_limit: int | None = None
    val_size: int = 320
    resume: str | None = None
    time_limit: float | None = None  # minutes in all; --epochs is then a maximum
    planned_epochs: int | None = None
    command: str = ""

    @property
    def schedule_epochs(self) -> int:
        return self.planned_epochs or self.epochs


def sigmoid_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                  gamma: float = 2.0) -> torch.Tensor:
    p = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    pt = p * target + (1 - p) * (1 - target)
    return ce * (1 - pt) ** gamma * (alpha * target + (1 - alpha) * (1 - target))


def giou_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of matching xyxy boxes ``[N, 4]``."""
    x0, y0 = torch.max(a[:, 0], b[:, 0]), torch.max(a[:, 1], b[:, 1])
    x1, y1 = torch.min(a[:, 2], b[:, 2]), torch.min(a[:, 3], b[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter + 1e-7
    cw = torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0])
    ch = torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1])
    enclose = cw * ch + 1e-7
    return 1 - (inter / union - (enclose - union) / enclose)


def detection_loss(raw: torch.Tensor, t: dict[str, torch.Tensor], pri: torch.Tensor,
                   lm_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal score loss (masked), GIoU box loss and smooth-L1 landmark loss (only faces with
    landmarks), each normalised by the number of positive cells."""
    pos = t["cls"] > 0
    npos = max(1.0, float(pos.sum()))
    l_cls = (sigmoid_focal(raw[..., 0], t["cls"]) * t["weight"]).sum() / npos
    l_box = raw.new_zeros(())
    l_lm = raw.new_zeros(())
    if pos.any():
        r = raw[pos]
        c = pri[None].expand(raw.shape[0], -1, -1)[pos]
        d = r[:, 1:5].clamp(-6, 6).exp() * c[:, 2:3]
        pred = torch.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2],
                            c[:, 1] + d[:, 3]], 1)
        l_box = giou_loss(pred, t["box"][pos]).sum() / npos
        m = t["has_lm"][pos] > 0
        if m.any():
            target = (t["lm"][pos][m].reshape(-1, 5, 2) - c[m, None, :2]) / c[m, None, 2:3]
            l_lm = torch.nn.functional.smooth_l1_loss(
                r[m, 5:15], target.reshape(-1, 10), reduction="sum", beta=1 / 9) / max(
                1.0, float(m.sum()))
    total = l_cls + 2.0 * l_box + lm_weight * l_lm
    return total, {"cls": float(l_cls.detach()), "box": float(l_box.detach()),
                   "lm": float(l_lm.detach())}


def source_weights(samples: list[DetSample]) -> np.ndarray:
    """Sampling probabilities that give every source folder (wider_train, net7876, ...) the
    same share of the training draws, whatever its size."""
    src = [smp.image.parent.name for smp in samples]
    names, inv, counts = np.unique(src, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


def collate(samples: list[DetSample], size: int, rng: np.random.Generator,
            negatives: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    imgs, targets = [], []
    for smp in samples:
        img, faces = augment(read_image(smp.image), smp.faces, size, rng, negatives)
        imgs.append(img.transpose(2, 0, 1))
        targets.append(build_targets(faces, size))
    x = torch.from_numpy(np.stack(imgs).astype(np.float32))
    t = {k: torch.from_numpy(np.stack([tt[k] for tt in targets])) for k in targets[0]}
    return x, t


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: list[DetSample], size: int = 320,
             score_threshold: float = 0.05, min_face: float | None = None) -> dict[str, float]:
    """AP50, recall at 0.1 false detections per image and landmark NME on ``samples``,
    each scaled so its longer side is ``size`` (faces under size/40 px are ignored)."""
    model.eval()
    scorer = DetectionScorer(min_face=size / 40 if min_face is None else min_face)
    pri = priors(size, size)
    for smp in samples:
        img, faces = letterbox_faces(read_image(smp.image), smp.faces, size)
        pred = model(torch.from_numpy(img.transpose(2, 0, 1)[None].copy()))[0].numpy()
        boxes, scores, lms = decode(pred, pri, score_threshold)
        keep = nms(boxes, scores, 0.4)
        gl = faces[:, 4:14].reshape(-1, 5, 2).copy()
        gl[faces[:, 14] == 0] = np.nan
        scorer.add(faces[:, :4], boxes[keep], scores[keep], gl, lms[keep])
    return scorer.result()


def _resolve(cfg: DetTrainConfig) -> tuple[DetTrainConfig, dict | None]:
    if not cfg.resume:
        return cfg, None
    ckpt = load_checkpoint(cfg.resume)
    if ckpt.get("arch") != ARCH or "optimizer" not in ckpt:
        raise FerEdgeError(f"--resume {cfg.resume}: not a face-detector last.pt")
    saved = DetTrainConfig(**{k: v for k, v in ckpt["config"].items()
                              if k in DetTrainConfig.__dataclass_fields__})
    saved.resume, saved.epochs = cfg.resume, max(cfg.epochs, saved.epochs)
    saved.time_limit = cfg.time_limit or saved.time_limit
    saved.out = cfg.out or str(Path(cfg.resume).parent)
    return saved, ckpt


def fit_detector(cfg: DetTrainConfig) -> dict[str, Any]:
    """Train; returns the metrics written to metrics.json."""
    cfg, ckpt = _resolve(cfg)
    data = Path(cfg.data)
    if not data.exists():
        raise FerEdgeError(f"--data {data}: not found (a dataset folder built by 'python -m "
                           "fer_edge.train.detector.dataset', or a train label file)")
    train = load_labels(data / "train.jsonl" if data.is_dir() else data)
    val = load_labels(cfg.val or (data / "val_wider.jsonl" if data.is_dir()
                                  else data.parent / "val_wider.jsonl"))
    for smp in train + val:
        if not smp.image.is_file():
            raise FerEdgeError(f"{smp.image}: image named in the labels is missing")
    if cfg.limit:
        train = train[:cfg.limit]
    if cfg.val_limit:
        val = val[:cfg.val_limit]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = choose_out(cfg.out, cfg.exist_ok, cfg.resume)
    check_run_inputs(out, [cfg.data, cfg.val])
    cfg.out = str(out)
    prev = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        with run_folder(out, create=True, exist_ok=cfg.exist_ok or bool(cfg.resume)):
            return _train(cfg, out, train, val, ckpt)
    finally:
        signal.signal(signal.SIGTERM, prev)


def _train(cfg: DetTrainConfig, out: Path, train: list[DetSample], val: list[DetSample],
           ckpt: dict | None) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    model = FaceDetNet(cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, cfg.samples_per_epoch // cfg.batch_size)

    def lr_at(step: int) -> float:
        total = cfg.schedule_epochs * steps
        warm = cfg.warmup_epochs * steps
        if step < warm:
            return (step + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm)
                                                                / max(1, total - warm))))

    start, best, history = 0, -1.0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start, best, history = ckpt["epoch"], ckpt["best"], list(ckpt["history"])
    meta = {"arch": ARCH, "arch_kwargs": {"width": cfg.width}, "labels": ["face"],
            "input": {"size": cfg.img_size, "format": "bgr255", "strides": [8, 16, 32]},
            "params": count_params(model)}

    def state(epoch: int) -> dict[str, Any]:
        return {**meta, "config": asdict(cfg), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "epoch": epoch, "best": best,
                "history": history}

    log.info("training the face detector (%d params) on %d images, validating on %d; "
             "%d epochs%s; writing to %s", meta["params"], len(train), len(val), cfg.epochs,
             f" at most, fitted to {cfg.time_limit:g} min" if cfg.time_limit else "", out)
    pri = torch.from_numpy(priors(cfg.img_size, cfg.img_size))
    weights = source_weights(train)
    epoch = start
    t0 = time.time()
    prior_s = history[-1]["time_s"] if history else 0.0
    try:
        if start == 0:
            save_checkpoint(state(0), out / "last.pt")
        while epoch < cfg.schedule_epochs:
            rng = np.random.default_rng(cfg.seed * 100_003 + epoch)
            model.train()
            sums = {"loss": 0.0, "cls": 0.0, "box": 0.0, "lm": 0.0}
            order = rng.choice(len(train), steps * cfg.batch_size, p=weights)
            t_ep = time.time()
            bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.schedule_epochs}",
                       leave=False, dynamic_ncols=True)
            for i in bar:
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_at(epoch * steps + i)
                x, t = collate([train[j] for j in order[i * cfg.batch_size:
                                                       (i + 1) * cfg.batch_size]],
                               cfg.img_size, rng, cfg.negatives)
                loss, parts = detection_loss(model(x, raw=True), t, pri, cfg.lm_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()
                sums["loss"] += float(loss.detach())
                for k, v in parts.items():
                    sums[k] += v
                bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.3f}")
            ips = steps * cfg.batch_size / max(1e-6, time.time() - t_ep)
            res = evaluate(model, val, cfg.val_size)
            row = {"epoch": epoch + 1, **{f"train_{k}": round(v / steps, 4)
                                          for k, v in sums.items()},
                   "val_ap50": res["ap50"], "val_recall_at_0.1fppi": res["recall_at_0.1fppi"],
                   "val_landmark_nme": res.get("landmark_nme"), "images_per_s": round(ips, 1),
                   "lr": opt.param_groups[0]["lr"],
                   "time_s": round(prior_s + time.time() - t0, 1)}
            history.append(row)
            if cfg.time_limit:
                cfg.planned_epochs = fit_epochs_to_time(epoch + 1, row["time_s"],
                                                        cfg.time_limit * 60, cfg.epochs)
            improved = row["val_ap50"] > best
            if improved:
                best = row["val_ap50"]
                save_checkpoint({**meta, "config": asdict(cfg), "model": model.state_dict(),
                                 "epoch": epoch + 1, "best": best, "history": history},
                                out / "best.pt")
            save_checkpoint(state(epoch + 1), out / "last.pt")
            msg = (f"epoch {epoch + 1:3d}/{cfg.schedule_epochs}  loss {row['train_loss']:.4f}"
                   f"  val AP50 {row['val_ap50']:.4f}  recall@0.1fppi "
                   f"{row['val_recall_at_0.1fppi']:.4f}  {ips:.0f} img/s"
                   + ("  *best*" if improved else ""))
            tqdm.write(msg)
            with writing(out / "train.log"), open(out / "train.log", "a") as fh:
                fh.write(msg + "\n")
            epoch += 1
    except KeyboardInterrupt:
        done = history[-1]["epoch"] if history else start
        tqdm.write(f"\ninterrupted during epoch {epoch + 1}; {out / 'last.pt'} holds the "
                   f"state after epoch {done}: continue with --resume {out / 'last.pt'}")
        raise
    return finish(cfg, out, val, history)


def finish(cfg: DetTrainConfig, out: Path, val: list[DetSample], history: list[dict]
           ) -> dict[str, Any]:
    best = load_checkpoint(out / "best.pt")
    model = FaceDetNet(**best.get("arch_kwargs", {}))
    model.load_state_dict(best["model"])
    final = {f"val_{size}": evaluate(model, val, size)  # faces under size/40 px ignored
             for size in sorted({cfg.val_size, 2 * cfg.val_size})}
    metrics = {"task": "detect", "best_epoch": best["epoch"], "best_val_ap50": best["best"],
               "params": count_params(model), **final, "history": history,
               "config": asdict(cfg)}
    with writing(out / "metrics.json"):
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    with writing(out / "curves.png"):
        plot_detector_curves(history, out / "curves.png")
    return metrics


def plot_detector_curves(history: list[dict], path: Path) -> None:
    from ..report import _plt, save_figure

    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in ("train_loss", "train_cls", "train_box", "train_lm"):
        a.plot(ep, [h[k] for h in history], label=k)
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["val_ap50"] for h in history], label="val AP50")
    b.plot(ep, [h["val_recall_at_0.1fppi"] for h in history], label="val recall @0.1 FPPI")
    b.set_xlabel("epoch")
    b.legend()
    save_figure(fig, path)
    plt.close(fig)
