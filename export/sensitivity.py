"""The INT8 sensitivity pass: keep the fewest, worst tensors in FP32 until ``--max-drop`` holds.

Two steps, both on onnxruntime's own tools:

1. **Rank** (:func:`rank_tensors`). ``onnxruntime.quantization.qdq_loss_debug`` runs the FP32
   model and the fully quantised QDQ model on a few calibration faces with every intermediate
   tensor as an extra output (``modify_model_output_intermediate_tensors``,
   ``collect_activations``), pairs each quantised activation before and after its
   QuantizeLinear/DequantizeLinear (``create_activation_matching``) and scores it
   (``compute_activation_error``) with :func:`channel_sqnr`: the signal-to-quantisation-noise
   ratio per channel, averaged over channels. onnxruntime's default SQNR is over the whole
   tensor, which hides the typical failure of depthwise/SiLU/SE networks: one channel with a
   huge range sets the tensor's single activation scale and every other channel is rounded to
   a few levels (or zero) while the tensor-wide SQNR still looks fine.
2. **Search** (:func:`search`). Keeping tensor *t* in FP32 means excluding its producer and its
   consumers from quantisation (``quantize_static``'s ``nodes_to_exclude``): QDQ quantises a
   tensor for any quantised node touching it. The *k* worst tensors are kept in FP32, the model
   is re-quantised and evaluated on the export gate's validation images; *k* doubles until the
   accuracy drop holds, then bisects to the smallest *k* that holds (after one trial with
   every candidate in FP32: if that does not hold, nothing will, and the pass stops).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

log = logging.getLogger("fer_edge.export")


@dataclass(frozen=True)
class Sensitive:
    """One quantised activation tensor and what keeping it in FP32 costs."""
    tensor: str
    sqnr_db: float  # mean per-channel SQNR of its own quantisation: lower is worse
    xmodel_sqnr_db: float | None  # tensor-wide SQNR of the QDQ model's value vs FP32's
    nodes: tuple[str, ...]  # its producer and consumers: excluded to keep it FP32


@dataclass
class SearchResult:
    k: int  # tensors kept in FP32 (the first k of the ranking)
    drop: float  # accuracy drop (points) with those in FP32
    holds: bool
    tried: dict[int, float] = field(default_factory=dict)  # k -> drop


def channel_sqnr(pre: Sequence[np.ndarray], post: Sequence[np.ndarray], channels: int = 1,
                 batch: int = 1) -> float:
    """SQNR in dB per channel (axis 1 of the tensor, given flat as qdq_loss_debug saves it, one
    array per batch of ``batch`` images), averaged over the channels that carry signal."""
    def per_channel(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        n = batch if a.size % (batch * channels) == 0 else 1
        c = channels if a.size % (n * channels) == 0 else 1
        return a.reshape(n, c, -1).transpose(1, 0, 2).reshape(c, -1)

    x = np.concatenate([per_channel(a) for a in pre], axis=1)
    y = np.concatenate([per_channel(a) for a in post], axis=1)
    signal = (x ** 2).sum(1)
    noise = ((x - y) ** 2).sum(1)
    live = signal > 0
    if not live.any():
        return 120.0  # the cap below: no signal, nothing lost
    db = 10 * np.log10(signal[live] / np.maximum(noise[live], signal[live] * 1e-12))
    return float(db.mean())


def _graph_index(model_path: Path) -> tuple[dict[str, str], dict[str, list[str]],
                                               dict[str, int]]:
    """producer node of each tensor, its consumer nodes, and its channel count (axis 1)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for t in node.output:
            producer[t] = node.name
        for t in node.input:
            consumers.setdefault(t, []).append(node.name)
    channels: dict[str, int] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) >= 2 and dims[1].dim_value > 0:
            channels[vi.name] = dims[1].dim_value
    return producer, consumers, channels


def rank_tensors(fp32: Path, qdq: Path, x: np.ndarray, input_name: str = "input",
                 quantized_nodes: set[str] | None = None) -> list[Sensitive]:
    """Every quantised activation of ``qdq`` (quantised from ``fp32``), worst first, scored on
    the faces ``x``. Only nodes in ``quantized_nodes`` (if given) are offered for exclusion."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from .quantize import FaceCalibrationReader

    producer, consumers, channels = _graph_index(fp32)
    reader = FaceCalibrationReader(x, input_name, batch=16)
    with tempfile.TemporaryDirectory(prefix="fer-sensitivity.") as tmp:
        acts = {}
        for name, model in (("fp32", fp32), ("qdq", qdq)):
            aug = Path(tmp) / f"{name}.onnx"
            modify_model_output_intermediate_tensors(str(model), str(aug))
            reader.rewind()
            acts[name] = collect_activations(str(aug), reader)
    matching = create_activation_matching(acts["qdq"], acts["fp32"])
    ranked = []
    for tensor, match in matching.items():
        if not match.get("pre_qdq") or not match.get("post_qdq"):
            continue
        nodes = [producer.get(tensor), *consumers.get(tensor, [])]
        nodes = tuple(dict.fromkeys(n for n in nodes if n and (
            quantized_nodes is None or n in quantized_nodes)))
        if not nodes:
            continue
        err = compute_activation_error({tensor: match}, partial(
            channel_sqnr, channels=channels.get(tensor, 1), batch=reader.batch))[tensor]
        xmodel = err.get("xmodel_err")
        ranked.append(Sensitive(tensor, round(float(err["qdq_err"]), 2),
                                None if xmodel is None else round(float(xmodel), 2), nodes))
    ranked.sort(key=lambda s: s.sqnr_db)
    return ranked


def excluded_nodes(ranked: Sequence[Sensitive], k: int) -> list[str]:
    """The nodes to keep in FP32 for the ``k`` worst tensors, in ranking order."""
    return list(dict.fromkeys(n for s in ranked[:k] for n in s.nodes))


def search(n: int, trial: Callable[[int], float], max_drop: float) -> SearchResult:
    """The smallest ``k`` in 1..n with ``trial(k) <= max_drop`` (``trial`` quantises with the
    ``k`` worst tensors in FP32 and returns the accuracy drop). ``k = n`` first: if even that
    does not hold, the pass gives up after one trial; else doubling from 1, then bisection."""
    tried: dict[int, float] = {}

    def drop(k: int) -> float:
        if k not in tried:
            tried[k] = trial(k)
            log.info("sensitivity: %d tensor(s) in FP32 -> drop %.2f points", k, tried[k])
        return tried[k]

    if drop(n) > max_drop:
        return SearchResult(n, tried[n], False, tried)
    lo, k = 0, 1
    while drop(k) > max_drop:
        lo, k = k, min(2 * k, n)
    hi = k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if drop(mid) <= max_drop:
            hi = mid
        else:
            lo = mid
    return SearchResult(hi, tried[hi], True, tried)


def record(ranked: Sequence[Sensitive], result: SearchResult, images: int,
           drop_before: float) -> dict:
    """The bundle.json record of a sensitivity pass."""
    return {"ranked_on_images": images, "metric": "mean per-channel SQNR (dB)",
            "drop_before": drop_before, "holds": result.holds, "drop_after": result.drop,
            "tried": {str(k): v for k, v in sorted(result.tried.items())},
            "fp32_tensors": [asdict(s) for s in ranked[:result.k]],
            "worst_quantized": [asdict(s) for s in ranked[result.k:result.k + 3]]}
