"""Emotion timelines from a run's JSONL: ``fer-edge report RUN.jsonl --out DIR`` (and
``fer-edge run ... --report DIR``).

Writes into DIR, each file to a temporary name then renamed:

- ``frames.csv``   one row per frame and face: time, track, label, score, the probabilities, box
- ``summary.csv``  per track: first/last seen, frames, dominant emotion, share of time per
                   emotion, label changes (the same events MQTT publishes: ``events.py``)
- ``summary.md``   the same as a Markdown table, plus each track's label segments
- ``timeline.png`` per track, the smoothed probabilities over time (stacked) with the label
                   as a colour band (matplotlib, the ``report`` extra; imported here only)

A line that is not JSON or not a frame row is one error naming the file and line number.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FerEdgeError
from ..inputs.files import atomic_write_text, check_output_dir, check_regular_file, writing
from ..labels import FER2013_LABELS
from .events import SCHEMA, TrackEvents

OUTPUTS = ("frames.csv", "summary.csv", "summary.md", "timeline.png")
MAX_TRACKS_PLOTTED = 8  # the longest-seen tracks; the others are in the CSVs
MAX_POINTS = 2000  # per track in the plot: longer tracks are averaged into this many bins


@dataclass
class Face:
    track_id: int
    label: str
    score: float
    box: list[int]
    probs: dict[str, float]


@dataclass
class Row:
    frame: int
    timestamp: float
    faces: list[Face]
    stream: int = 0  # the source, in a run of several (track ids are per stream)


@dataclass
class TrackSummary:
    track_id: int
    first: float
    last: float
    stream: int = 0
    name: str = ""  # "3", or "1:3" (stream 1's track 3) in a run of several streams
    frames: int = 0
    labels: Counter = field(default_factory=Counter)
    changes: int = 0
    segments: list[tuple[float, str]] = field(default_factory=list)  # (start, label)

    @property
    def dominant(self) -> str:
        return self.labels.most_common(1)[0][0]

    def share(self, label: str) -> float:
        return self.labels[label] / self.frames if self.frames else 0.0


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _face(d: object, where: str) -> Face:
    if not isinstance(d, dict):
        raise FerEdgeError(f"{where}: a face is not an object")
    missing = [k for k in ("track_id", "label", "score", "box", "probs") if k not in d]
    if missing:
        raise FerEdgeError(f"{where}: a face has no {', '.join(missing)}")
    box, probs = d["box"], d["probs"]
    if not isinstance(d["track_id"], int) or not isinstance(d["label"], str) or \
            not _number(d["score"]):
        raise FerEdgeError(f"{where}: a face's track_id, label or score has the wrong type")
    if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
        raise FerEdgeError(f"{where}: a face's box is not [x, y, w, h]")
    if not (isinstance(probs, dict) and probs and all(_number(v) for v in probs.values())):
        raise FerEdgeError(f"{where}: a face's probs is not an object of numbers")
    return Face(d["track_id"], d["label"], float(d["score"]), [int(v) for v in box],
                {str(k): float(v) for k, v in probs.items()})


def parse_row(line: str, where: str) -> Row | None:
    """One JSONL line -> Row (None for a blank line); FerEdgeError naming ``where``."""
    if not line.strip():
        return None
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise FerEdgeError(f"{where}: not JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise FerEdgeError(f"{where}: not a JSON object (a fer-edge run --jsonl row)")
    schema = d.get("schema", SCHEMA)  # rows written before the field existed are version 1
    if schema != SCHEMA:
        raise FerEdgeError(f"{where}: schema {schema!r}; this fer-edge reads schema {SCHEMA}")
    if not isinstance(d.get("frame"), int) or not _number(d.get("timestamp")) or \
            not isinstance(d.get("faces"), list):
        raise FerEdgeError(f"{where}: not a fer-edge run --jsonl row (needs frame, timestamp, "
                           "faces)")
    stream = d.get("stream", 0)
    if not isinstance(stream, int) or isinstance(stream, bool) or stream < 0:
        raise FerEdgeError(f"{where}: 'stream' {stream!r} is not a stream index (0, 1, ...)")
    return Row(d["frame"], float(d["timestamp"]), [_face(f, where) for f in d["faces"]],
               stream)


def read_run(path: str | os.PathLike, progress: bool = True) -> list[Row]:
    """Every row of a run's JSONL (a progress bar on long files)."""
    from tqdm import tqdm

    path = Path(path)
    check_regular_file(path)  # a FIFO would block until some writer came
    try:
        size, fh = path.stat().st_size, open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise FerEdgeError(f"{path}: cannot read ({e.strerror or e})") from None
    rows: list[Row] = []
    with fh, tqdm(total=size, unit="B", unit_scale=True, desc="reading", delay=1.0,
                  disable=not progress, leave=False) as bar:
        try:
            for n, line in enumerate(fh, 1):
                bar.update(len(line.encode()))
                row = parse_row(line, f"{path} line {n}")
                if row is not None:
                    rows.append(row)
        except UnicodeDecodeError:
            raise FerEdgeError(f"{path} line {n + 1}: not UTF-8 text (is it a JSONL file?)") \
                from None
    if not rows:
        raise FerEdgeError(f"{path}: no rows; expected the JSONL of fer-edge run --jsonl")
    return rows


def label_order(rows: list[Row]) -> list[str]:
    for r in rows:
        for f in r.faces:
            return list(f.probs)
    return list(FER2013_LABELS)


TrackKey = tuple[int, int]  # (stream, track id): track ids are per stream


def summarise(rows: list[Row]) -> dict[TrackKey, TrackSummary]:
    """Per track of every stream (two streams' track 1 are two tracks), in order of
    appearance: first seen, then stream and track id (several streams' rows reach the JSONL
    in whichever order their frames were ready, so the order never depends on that)."""
    t0 = rows[0].timestamp
    tracks: dict[TrackKey, TrackSummary] = {}
    events: dict[int, TrackEvents] = {}
    for r in rows:
        t = r.timestamp - t0
        for f in r.faces:
            s = tracks.setdefault((r.stream, f.track_id),
                                  TrackSummary(f.track_id, t, t, r.stream))
            s.last, s.frames = t, s.frames + 1
            s.labels[f.label] += 1
        for e in events.setdefault(r.stream, TrackEvents()).update(r.frame, t, r.faces):
            s = tracks[(r.stream, e.track_id)]
            if e.type == "label":
                s.changes += 1
            if e.type in ("appear", "label"):
                s.segments.append((e.source_time, e.label))
    several = len({r.stream for r in rows}) > 1
    for s in tracks.values():
        s.name = f"{s.stream}:{s.track_id}" if several else str(s.track_id)
    return dict(sorted(tracks.items(), key=lambda kv: (kv[1].first, kv[0])))


def check_out(out: Path, exist_ok: bool) -> None:
    """``out`` can take a report: a folder (made if needed) without one unless ``exist_ok``."""
    check_output_dir(out, OUTPUTS, "a report", exist_ok)


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def frames_csv(rows: list[Row], labels: list[str]) -> str:
    t0 = rows[0].timestamp
    out: list[list] = [["time", "timestamp", "stream", "frame", "track", "label", "score",
                        *labels, "x", "y", "w", "h"]]
    for r in rows:
        for f in r.faces:
            out.append([f"{r.timestamp - t0:.3f}", f"{r.timestamp:.6f}", r.stream, r.frame,
                        f.track_id,
                        f.label, f"{f.score:.4f}", *(f"{f.probs.get(k, 0.0):.4f}" for k in labels),
                        *f.box])
    return _csv(out)


def summary_csv(tracks: dict[TrackKey, TrackSummary], labels: list[str]) -> str:
    out: list[list] = [["stream", "track", "first_seen_s", "last_seen_s", "frames", "dominant",
                        "label_changes", *(f"share_{k}" for k in labels)]]
    for s in tracks.values():
        out.append([s.stream, s.track_id, f"{s.first:.3f}", f"{s.last:.3f}", s.frames, s.dominant,
                    s.changes, *(f"{s.share(k):.4f}" for k in labels)])
    return _csv(out)


def _clock(t: float) -> str:
    """m:ss.s (h:mm:ss.s from an hour)."""
    m, s = divmod(round(t, 1), 60)
    return f"{int(m)}:{s:04.1f}" if m < 60 else f"{int(m // 60)}:{int(m % 60):02d}:{s:04.1f}"


def summary_md(source: Path, rows: list[Row], tracks: dict[TrackKey, TrackSummary],
               labels: list[str]) -> str:
    span = rows[-1].timestamp - rows[0].timestamp
    lines = [f"# Emotion timeline: {source.name}", "",
             f"{len(rows)} frames over {_clock(span)} (m:ss), {sum(len(r.faces) for r in rows)} "
             f"face rows, {len(tracks)} track(s).", ""]
    if not tracks:
        return "\n".join([*lines, "No face was found.", ""])
    lines += ["| track | first seen | last seen | frames | dominant | changes | "
              + " | ".join(labels) + " |",
              "|" + "---|" * (6 + len(labels))]
    for s in tracks.values():
        lines.append(f"| {s.name} | {_clock(s.first)} | {_clock(s.last)} | {s.frames} | "
                     f"**{s.dominant}** | {s.changes} | "
                     + " | ".join(f"{100 * s.share(k):.0f}%" for k in labels) + " |")
    lines += ["", "Share: the fraction of the track's frames with that (smoothed) label.", "",
              "## Label segments", ""]
    for s in tracks.values():
        segs = ", ".join(f"{_clock(t)} {lab}" for t, lab in s.segments[:50])
        more = f" (+{len(s.segments) - 50} more)" if len(s.segments) > 50 else ""
        lines.append(f"- track {s.name}: {segs}{more}")
    return "\n".join([*lines, ""])


def _rgb(label: str) -> tuple[float, float, float]:
    from .sinks import COLORS  # BGR, the colours of the annotated video

    b, g, r = COLORS.get(label, (120, 120, 120))
    return (r / 255, g / 255, b / 255)


def _binned(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(t) <= MAX_POINTS:
        return t, p
    idx = np.array_split(np.arange(len(t)), MAX_POINTS)
    return (np.array([t[i].mean() for i in idx]), np.stack([p[i].mean(0) for i in idx]))


def timeline_png(path: Path, rows: list[Row], tracks: dict[TrackKey, TrackSummary],
                 labels: list[str], title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        raise FerEdgeError("timeline.png needs matplotlib: pip install 'fer-edge[report]'") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    t0, span = rows[0].timestamp, max(rows[-1].timestamp - rows[0].timestamp, 1e-3)
    shown = sorted(tracks.values(), key=lambda s: -s.frames)[:MAX_TRACKS_PLOTTED]
    shown.sort(key=lambda s: (s.stream, s.track_id))
    n = max(1, len(shown))
    fig, axes = plt.subplots(n, 1, figsize=(14, 1.2 + 2.1 * n), sharex=True, squeeze=False,
                             layout="constrained")
    colors = [_rgb(k) for k in labels]
    fmt = FuncFormatter(lambda v, _: _clock(v).split(".")[0] if span >= 60 else f"{v:.1f}s")
    # minute plots: ticks on round clock steps (30 s, 1 min, 5 min, ...), about ten of them
    step = next((x for x in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if span / x <= 12),
                3600 * math.ceil(span / 36000))
    for ax, s in zip(axes[:, 0], shown or [None], strict=False):
        ax.set_xlim(0, span)
        ax.xaxis.set_major_formatter(fmt)
        if span >= 60:
            ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.grid(axis="x", alpha=0.3)
        if s is None:
            ax.text(0.5, 0.5, "no face found", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        pts = [(r.timestamp - t0, f) for r in rows if r.stream == s.stream
               for f in r.faces if f.track_id == s.track_id]
        t = np.array([p[0] for p in pts])
        probs = np.array([[f.probs.get(k, 0.0) for k in labels] for _, f in pts])
        tb, pb = _binned(t, probs)
        ax.stackplot(tb, pb.T, colors=colors, linewidth=0)
        # the label as a band above the probabilities
        for (a, lab), nxt in zip(s.segments, [*s.segments[1:], (s.last, "")], strict=True):
            ax.axvspan(a, max(nxt[0], a + span / 2000), ymin=1.02, ymax=1.12,
                       color=_rgb(lab), clip_on=False, lw=0)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1])
        ax.text(-0.005, 1.07, "label", transform=ax.transAxes, ha="right", va="center",
                fontsize=8)
        ax.set_ylabel(f"track {s.name}\nprobability")
        ax.set_title(f"track {s.name}: {_clock(s.first)}–{_clock(s.last)}, mostly "
                     f"{s.dominant} ({100 * s.share(s.dominant):.0f}%), {s.changes} label "
                     "change(s)", loc="left", fontsize=10, pad=24)
    axes[-1, 0].set_xlabel("time (m:ss)" if span >= 60 else "time")
    hidden = len(tracks) - len(shown)
    fig.suptitle(title + (f"  ({hidden} shorter track(s) only in the CSVs)" if hidden else ""),
                 fontsize=12)
    fig.legend(handles=[Patch(color=c, label=k) for k, c in zip(labels, colors, strict=True)],
               loc="outside lower center", ncol=len(labels), frameon=False)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    from ..inputs.files import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def write_report(jsonl: str | os.PathLike, out: str | os.PathLike, exist_ok: bool = False,
                 progress: bool = True) -> dict[int, TrackSummary]:
    """Read ``jsonl`` and write the report files into ``out`` (see the module docstring)."""
    out, jsonl = Path(out), Path(jsonl)
    check_out(out, exist_ok)
    rows = read_run(jsonl, progress)
    labels = label_order(rows)
    tracks = summarise(rows)
    with writing(out, "write the report"):  # a full disk: one line, exit 1, never a silent 0
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "frames.csv", frames_csv(rows, labels))
        atomic_write_text(out / "summary.csv", summary_csv(tracks, labels))
        atomic_write_text(out / "summary.md", summary_md(jsonl, rows, tracks, labels))
        timeline_png(out / "timeline.png", rows, tracks, labels,
                     f"Emotions over time: {jsonl.name}")
    return tracks
