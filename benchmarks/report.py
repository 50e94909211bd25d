"""Writers for results.json, results.csv, report.md and the plots."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np

from fer_edge.edge.errors import FerEdgeError
from fer_edge.edge.inputs.files import atomic_write_text

log = logging.getLogger("fer_edge.bench")

CSV_COLUMNS = ["model", "arch", "precision", "backend", "threads", "params", "file_mb",
               "accuracy", "macro_f1", "drop_points", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
               "runs", "throughput"]


def csv_rows(results: dict) -> list[dict]:
    rows = []
    for r in results["results"]:
        lat = r.get("latency_ms", {}).get("batch1", {})
        rows.append({
            "model": r["model"], "arch": r["arch"], "precision": r["precision"],
            "backend": r["backend"], "threads": r["threads"], "params": r["params"],
            "file_mb": round(r["file_bytes"] / 1e6, 3), "accuracy": r.get("accuracy"),
            "macro_f1": r.get("macro_f1"), "drop_points": r.get("drop_points"),
            "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
            "mean_ms": lat.get("mean"), "runs": lat.get("runs"),
            "throughput": json.dumps(r.get("throughput_ips", {})),
        })
    return rows


def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def markdown(results: dict) -> str:
    env = results["environment"]
    out = [f"# fer-bench report\n\n`{results['command']}`\n",
           f"Machine: {env['cpu']} ({env['cores']} cores; {', '.join(env['cpu_flags'])}), "
           f"onnxruntime {env['onnxruntime']}, OpenCV {env['opencv']}, TensorRT "
           f"{env['tensorrt'] or '–'}, GPU {env['gpu'] or '–'}. "
           f"Accuracy on {results['settings']['data']} [{results['settings']['split']}].\n",
           "| model | precision | backend | threads | size MB | accuracy | drop (pt) | macro-F1 "
           "| p50 ms | p90 ms | p99 ms | throughput img/s |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in csv_rows(results):
        tp = ", ".join(f"b{k}: {v:.0f}" for k, v in json.loads(r["throughput"]).items())
        out.append(f"| {r['model']} | {r['precision']} | {r['backend']} | {r['threads']} | "
                   f"{r['file_mb']:.2f} | {_f(r['accuracy'], '.4f')} | "
                   f"{_f(r['drop_points'], '+.2f')} | {_f(r['macro_f1'], '.4f')} | "
                   f"{_f(r['p50_ms'], '.3f')} | {_f(r['p90_ms'], '.3f')} | "
                   f"{_f(r['p99_ms'], '.3f')} | {tp} |")
    if any(r.get("peer") for r in results["results"]):
        out += ["", "A peer's row (fer): its own model file in its own runtime with its own "
                "preprocessing (fer: TFLite, gray 64x64 in [-1, 1]) on the same face crops, "
                "batch 1, timed in its own process after ours (not interleaved with them). The "
                "peer-package table below runs the same crops through the package's API (fer "
                "adds its own padding around the box)."]
    if results.get("peers"):
        out += ["", "Peer packages on the same images, each image given as one face (classifier "
                "only):", "", "| peer | data | images | accuracy | macro-F1 | img/s | "
                "per-class recall |", "|---|---|---:|---:|---:|---:|---|"]
        for e in results["peers"]:
            rec = ", ".join(f"{k} {v:.2f}" for k, v in e["per_class_recall"].items())
            out.append(f"| {e['model']} | {e['data']} | {e['faces']} | "
                       f"{e['accuracy']:.4f} | {e['macro_f1_found']:.4f} | "
                       f"{e['images_per_s']:.1f} | {rec} |")
    if results.get("pipeline"):
        out += ["", *pipeline_table(results)]
    if results.get("soak"):
        sk = results["soak"]
        trend = ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in sk["rss_mb"])
        out += ["", f"Soak: {sk['streams']} looped streams for {sk['seconds']:.0f} s, "
                f"{min(sk['fps_per_stream']):.1f}-{max(sk['fps_per_stream']):.1f} FPS per "
                f"stream, load {sk['load_avg']:.1f}: RSS MB {trend}; drift "
                f"{sk['drift_pct']:+.1f} % (after the first sample)."]
    if results.get("endtoend"):
        out += ["", "End to end on labelled photos (detect -> crop -> classify; a face not "
                "found counts as wrong):", "",
                "| model | precision | data | detector | main face | faces | face found | "
                "accuracy | on found faces | false det./image | img/s per worker | workers | "
                "photos/s | per-class recall |",
                "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for e in results["endtoend"]:
            rec = ", ".join(f"{k} {v:.2f}" for k, v in e["per_class_recall"].items())
            out.append(f"| {e['model']} | {e['precision']} | {e['data']} | "
                       f"{e.get('detector', 'haar')} | {e.get('main_face', 'largest')} | "
                       f"{e['faces']} | "
                       f"{100 * e['detection_recall']:.1f}% | {100 * e['accuracy']:.2f}% | "
                       f"{100 * e['accuracy_found']:.2f}% | "
                       f"{e['false_detections_per_image']:.2f} | {e['images_per_s']:.1f} | "
                       f"{e.get('workers', 1)} | "
                       f"{e.get('wall_images_per_s', e['images_per_s']):.1f} | "
                       f"{rec} |")
    out.append(f"\nPeak RSS {results['peak_rss_mb']:.0f} MB."
               + (" **Interrupted: partial results.**" if results.get("interrupted") else ""))
    return "\n".join(out) + "\n"


def pipeline_table(results: dict) -> list[str]:
    """The loop on --video: ours next to `fer`'s own loop (when measured), FPS per stream."""
    rows = results["pipeline"]
    peer = next((p for p in rows if p.get("peer")), None)
    lines = [f"Pipeline on {results['settings']['video']} (FPS per stream; x fer: our FPS per "
             "stream over fer's own loop; load: 1-min load average when the row ended; stage "
             "times: mean ms per frame, decode on the reader thread, classify the batched call "
             "a frame took part in):", "",
             "| model | config | streams | frames | faces found | FPS | x fer | ends | load "
             "| decode | wait | detect | crop | classify | track |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in rows:
        st = p["stage_ms"]
        cells = " | ".join(_f(st.get(s, {}).get("mean"), ".3f")
                           for s in ("decode", "wait", "detect", "crop", "classify", "track"))
        fps = p.get("fps_per_stream") or [p["fps"]]
        fps_txt = f"{min(fps):.1f}" if len(fps) == 1 else f"{min(fps):.1f}-{max(fps):.1f}"
        ratio = f"{min(fps) / peer['fps']:.1f}x" if peer and peer["fps"] and p is not peer \
            else "–"
        ends = ", ".join(str(e) for e in p.get("ends", [])) or "–"
        load = p.get("load_avg")
        lines.append(f"| {p['model']} | {p['config']} | {p.get('streams', 1)} | {p['frames']} "
                     f"| {100 * p['frames_with_faces'] / max(1, p['frames']):.1f}% | "
                     f"{fps_txt} | {ratio} | {ends} | {_f(load, '.1f')} | {cells} |")
    if peer is None:
        lines += ["", "`fer`'s own loop was not measured (give --peers fer and --peer-python "
                  "of an environment with the fer package)."]
    return lines


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher accuracy."""
    keep = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
                   for j, (l2, a2) in enumerate(points) if j != i):
            keep.append(i)
    return keep


def plots(results: dict, out: Path, latencies: dict[str, np.ndarray]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_edge.train.report import plot_confusion, save_figure

    written = []
    rows = [r for r in results["results"] if r.get("accuracy") is not None
            and r.get("latency_ms")]
    if rows:
        th = min(r["threads"] for r in rows)
        sel = [r for r in rows if r["threads"] == th]
        pts = [(r["latency_ms"]["batch1"]["p50"], 100 * r["accuracy"]) for r in sel]
        front = set(pareto(pts))
        # Colour per model, shape per precision, Pareto points ringed; log latency axis.
        # Points far below the best (a collapsed INT8 model) sit on the bottom edge as "v".
        best = max(y for _, y in pts)
        ylo = max(min(y for _, y in pts) - 1, best - 12)
        models = list(dict.fromkeys(r["model"] for r in sel))
        colour = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
        shape = {"fp32": "o", "fp16": "D", "int8": "s"}
        fig, ax = plt.subplots(figsize=(9, 4.8))
        for i, (r, (x, y)) in enumerate(zip(sel, pts, strict=True)):
            below = y < ylo
            ax.scatter(x, max(y, ylo + 0.3), s=55, color=colour[r["model"]],
                       marker="v" if below else "*" if r.get("peer") else
                       shape.get(r["precision"], "^"),
                       label=f"{r['model']} {r['precision']}" + (" (peer)" if r.get("peer")
                                                                 else "")
                       + (f" ({y:.1f} %)" if below else ""),
                       edgecolors="black" if i in front else "none", linewidths=1.2, zorder=3)
        fr = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in fr], [p[1] for p in fr], "k--", lw=0.8, label="Pareto front")
        ax.set_xscale("log")
        ax.set_ylim(ylo, best + 1)
        ax.set_xlabel(f"batch-1 latency p50 (ms, log scale, {th} thread{'s' if th > 1 else ''})")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save_figure(fig, out / "accuracy_vs_latency.png")
        plt.close(fig)
        written.append(out / "accuracy_vs_latency.png")

        acc_rows = {(r["model"], r["precision"]): r["accuracy"] for r in rows}
        fig, ax = plt.subplots(figsize=(max(5, len(acc_rows) * 0.9), 4))
        names = [f"{m}\n{p}" for m, p in acc_rows]
        ax.bar(names, [100 * a for a in acc_rows.values()], color="tab:green")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(max(0, 100 * min(acc_rows.values()) - 10), 100 * max(acc_rows.values()) + 3)
        for i, a in enumerate(acc_rows.values()):
            ax.text(i, 100 * a + 0.3, f"{100 * a:.1f}", ha="center", fontsize=8)
        save_figure(fig, out / "accuracy.png")
        plt.close(fig)
        written.append(out / "accuracy.png")
    if latencies:
        fig, ax = plt.subplots(figsize=(max(6, len(latencies) * 1.1), 4))
        ax.boxplot(list(latencies.values()), showfliers=False)
        ax.set_xticks(range(1, len(latencies) + 1), list(latencies), rotation=30, ha="right",
                      fontsize=8)
        ax.set_ylabel("batch-1 latency (ms)")
        ax.grid(alpha=0.3, axis="y")
        save_figure(fig, out / "latency.png")
        plt.close(fig)
        written.append(out / "latency.png")
    seen = set()
    for r in results["results"]:
        key = (r["model"], r["precision"])
        if r.get("confusion") and key not in seen:
            seen.add(key)
            p = out / f"confusion_{r['model']}_{r['precision']}.png"
            plot_confusion(np.array(r["confusion"]), r["labels"], p,
                           f"{r['model']} {r['precision']}: {100 * r['accuracy']:.2f}%")
            written.append(p)
    return written


FIXED_FILES = ("results.json", "results.csv", "report.md", "accuracy_vs_latency.png",
               "accuracy.png", "latency.png")


def report_files(out: Path) -> list[Path]:
    """Every file a report in ``out`` writes or replaces (the fixed ones and the confusion
    matrices already there)."""
    return [out / n for n in FIXED_FILES] + sorted(out.glob("confusion_*.png"))


def write_all(results: dict, out: Path, latencies: dict[str, np.ndarray]) -> list[Path]:
    """results.json, results.csv, report.md and (with matplotlib) the plots; a disk that
    fails meanwhile is one FerEdgeError naming the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(csv_rows(results))
        atomic_write_text(out / "results.csv", buf.getvalue())
        atomic_write_text(out / "report.md", markdown(results))
        written = [out / "results.json", out / "results.csv", out / "report.md"]
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            log.warning("matplotlib is not installed: no plots (pip install 'fer-edge[bench]')")
            return written
        return written + plots(results, out, latencies)
    except OSError as e:
        raise FerEdgeError(f"{out}: cannot write the benchmark reports ({e.strerror or e})") \
            from None
