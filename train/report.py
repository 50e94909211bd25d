"""Training figures: loss/accuracy curves and the confusion matrix (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fer_edge.edge.inputs.files import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format=path.suffix.lstrip("."), dpi=110,
                                              bbox_inches="tight"))


def plot_curves(history: Sequence[dict], path: Path) -> None:
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["train_loss"] for h in history], label="train loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train acc (augmented)")
    b.plot(ep, [h["val_acc"] for h in history], label="val acc")
    if "val_acc_flip" in history[0]:
        b.plot(ep, [h["val_acc_flip"] for h in history], label="val acc (flip TTA)")
    b.set_xlabel("epoch")
    b.set_ylabel("accuracy")
    b.legend()
    b.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: Path, title: str = "") -> None:
    plt = _plt()
    cm = np.asarray(cm, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion (row-normalised)")
    save_figure(fig, path)
    plt.close(fig)
