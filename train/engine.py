"""One epoch of training and one pass of evaluation (single process or one DDP rank)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from fer_edge.edge.data import Split
from fer_edge.edge.preprocess import InputSpec, preprocess

from .augment import AugmentConfig, augment
from .distributed import DistContext, shard, sum_across


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images_per_s: float


def epoch_order(split: Split, epoch: int, seed: int, balance: str) -> np.ndarray:
    """The sample order of one epoch; a function of (seed, epoch) only, so resume is exact
    and every DDP rank computes the same order."""
    rng = np.random.default_rng([seed, epoch])
    if balance == "sampler":
        counts = split.class_counts().astype(float)
        w = (1.0 / np.sqrt(np.maximum(counts, 1)))[split.labels]
        return rng.choice(len(split), size=len(split), replace=True, p=w / w.sum())
    return rng.permutation(len(split))


def class_weights(split: Split) -> torch.Tensor:
    """Softened inverse-frequency weights (1/sqrt(count)), mean 1: helps disgust (436 images)
    without wrecking the frequent classes."""
    counts = split.class_counts().astype(float)
    w = 1.0 / np.sqrt(np.maximum(counts, 1))
    return torch.tensor(w / (w * counts).sum() * counts.sum(), dtype=torch.float32)


def to_tensor(split: Split, index: np.ndarray, spec: InputSpec, device: torch.device):
    x = torch.from_numpy(preprocess(split.images[index], spec)).to(device, non_blocking=True)
    y = torch.from_numpy(split.labels[index]).to(device, non_blocking=True)
    return x, y


def task_target(split: Split, index: np.ndarray, y: torch.Tensor) -> torch.Tensor:
    """What the task loss compares the logits with: the split's label distributions
    (``Split.soft``, e.g. FER+ votes; cross-entropy against a distribution) when it has them,
    else the class indices ``y``."""
    if split.soft is None:
        return y
    return torch.from_numpy(split.soft[index]).to(y.device, non_blocking=True)


@dataclass
class Distiller:
    """Knowledge distillation: (1 - alpha) * task loss + alpha * T^2 * KL(teacher || student)
    on temperature-softened outputs. ``cached`` holds teacher logits for the whole training
    split when augmentation is off (the inputs never change, so the teacher runs once)."""

    teacher: nn.Module
    alpha: float = 0.5
    temperature: float = 4.0
    cached: torch.Tensor | None = None

    def teacher_logits(self, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[torch.from_numpy(idx)].to(x.device)
        with torch.no_grad():
            return self.teacher(x).float()

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, task: torch.Tensor):
        t = self.temperature
        kd = F.kl_div(F.log_softmax(student.float() / t, -1), F.log_softmax(teacher / t, -1),
                      reduction="batchmean", log_target=True) * t * t
        return (1 - self.alpha) * task + self.alpha * kd


def train_one_epoch(
    model: nn.Module, split: Split, spec: InputSpec, order: np.ndarray, batch_size: int,
    optimizer: torch.optim.Optimizer, scheduler, loss_fn: Callable, aug: AugmentConfig,
    gen: torch.Generator, device: torch.device, scaler: torch.amp.GradScaler | None,
    desc: str = "train", ctx: DistContext = DistContext(), distiller: Distiller | None = None,
) -> EpochStats:
    """``batch_size`` is the global batch; under DDP each rank trains on its slice."""
    model.train()
    # Sums stay on the device: reading them every step would stall a GPU on each batch.
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, t0 = 0, time.perf_counter()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2 * ctx.world:  # BatchNorm needs 2 per rank
        batches.pop()
    bar = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=not ctx.main)
    for step, global_idx in enumerate(bar):
        idx = shard(global_idx, ctx)
        x, y = to_tensor(split, idx, spec, device)
        x = augment(x, aug, gen, spec)
        with torch.autocast(device.type, enabled=scaler is not None):
            logits = model(x)
            loss = loss_fn(logits, task_target(split, idx, y))
            if distiller is not None:
                loss = distiller.loss(logits, distiller.teacher_logits(x, idx), loss)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(idx)
        total_loss += loss.detach() * n
        correct += (logits.argmax(1) == y).sum()
        seen += n
        if step % 25 == 0 or step == len(batches) - 1:
            bar.set_postfix(loss=f"{float(total_loss) / seen:.3f}",
                            acc=f"{int(correct) / seen:.3f}",
                            img_s=f"{seen * ctx.world / (time.perf_counter() - t0):.0f}")
    total_loss, correct, seen = sum_across([float(total_loss), int(correct), seen], ctx, device)
    return EpochStats(total_loss / max(1, seen), correct / max(1, seen),
                      seen / (time.perf_counter() - t0))


@torch.no_grad()
def predict_proba(model: nn.Module, split: Split, spec: InputSpec, device: torch.device,
                  batch_size: int = 256, flip: bool = False,
                  index: np.ndarray | None = None) -> np.ndarray:
    """Softmax probabilities for ``index`` (default: every image of ``split``); ``flip``
    averages with the mirror image."""
    model.eval()
    index = np.arange(len(split)) if index is None else index
    out = []
    for i in range(0, len(index), batch_size):
        x, _ = to_tensor(split, index[i:i + batch_size], spec, device)
        p = model(x).float().softmax(1)
        if flip:
            p = (p + model(x.flip(3)).float().softmax(1)) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(split.label_names)), np.float32)
