"""Face-track events: a track appears, its smoothed label changes, it disappears.

One place turns per-frame faces into events; the MQTT publisher (``mqtt_events``) sends
them live and the timeline report (``timeline``) counts and lists them from a JSONL file,
so both tell the same story. A face is anything with ``track_id``, ``label``, ``score`` and
``box`` (a pipeline ``FaceResult`` or a face read back from JSONL).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

SCHEMA = 1  # version of the JSONL rows and MQTT messages: docs/schema.md


class FaceLike(Protocol):
    track_id: int
    label: str
    score: float
    box: tuple[int, int, int, int] | list[int]


@dataclass
class TrackEvent:
    type: str  # "appear" | "label" | "disappear"
    track_id: int
    label: str
    score: float
    frame: int
    source_time: float  # the frame's timestamp (file position, or wall clock for live)
    box: list[int]
    previous: str | None = None  # "label": the label before the change
    reason: str | None = None  # "disappear": "lost" (left the picture) or "end" (run ended)
    seen_s: float | None = None  # "disappear": seconds between appearing and disappearing
    time: float = field(default_factory=time.time)  # wall clock when the event was made

    def to_dict(self) -> dict:
        d = {"type": self.type, "track": self.track_id, "label": self.label,
             "score": round(float(self.score), 4), "box": [int(v) for v in self.box],
             "frame": self.frame, "source_time": round(float(self.source_time), 6),
             "time": round(self.time, 3)}
        for k in ("previous", "reason", "seen_s"):
            v = getattr(self, k)
            if v is not None:
                d[k] = round(v, 3) if isinstance(v, float) else v
        return d


@dataclass
class _Seen:
    label: str
    score: float
    box: list[int]
    first: float
    last: float
    frame: int


class TrackEvents:
    """Feed every frame's faces to :meth:`update`; it returns that frame's events in order
    (disappearances first, then appearances and label changes by track id). :meth:`finish`
    ends every live track (``reason`` "end")."""

    def __init__(self) -> None:
        self.live: dict[int, _Seen] = {}

    def update(self, frame: int, source_time: float,
               faces: Iterable[FaceLike]) -> list[TrackEvent]:
        now = {f.track_id: f for f in faces}
        out = [self._gone(tid, "lost") for tid in sorted(set(self.live) - set(now))]
        for tid in sorted(now):
            f = now[tid]
            box = [int(v) for v in f.box]
            seen = self.live.get(tid)
            if seen is None:
                self.live[tid] = _Seen(f.label, f.score, box, source_time, source_time, frame)
                out.append(TrackEvent("appear", tid, f.label, f.score, frame, source_time, box))
                continue
            if f.label != seen.label:
                out.append(TrackEvent("label", tid, f.label, f.score, frame, source_time, box,
                                      previous=seen.label))
            seen.label, seen.score, seen.box = f.label, f.score, box
            seen.last, seen.frame = source_time, frame
        return out

    def finish(self) -> list[TrackEvent]:
        return [self._gone(tid, "end") for tid in sorted(self.live)]

    def _gone(self, tid: int, reason: str) -> TrackEvent:
        s = self.live.pop(tid)
        return TrackEvent("disappear", tid, s.label, s.score, s.frame, s.last, s.box,
                          reason=reason, seen_s=s.last - s.first)
