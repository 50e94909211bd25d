"""The one FPS meter: a stream's real frame rate, the frames the loop finished per second of
wall-clock time. The runner keeps one per stream and puts its reading in every
``FrameResult.fps``, so the frames drawn, the live view (``/health``, the page), the MQTT
heartbeat and the run summary all report the same number.

The rate is counted, not averaged from intervals: ``fps`` is the frames finished in the last
``window`` seconds divided by that time (an EMA of ``1 / interval`` is biased upwards, without
bound, when frames come in bursts, e.g. several streams or a read-ahead buffer emptied at
once); ``mean`` is every frame over the time since the meter started.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class FrameRate:
    """Frames per second of one stream. ``clock`` is a monotonic clock in seconds (a fake one
    in tests)."""

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if not window > 0:
            raise ValueError(f"window={window}: must be > 0 seconds")
        self.window, self.clock = window, clock
        self.started = clock()
        self.frames = 0
        self._times: deque[float] = deque()

    def tick(self) -> float:
        """One frame finished now; returns :attr:`fps`."""
        now = self.clock()
        self.frames += 1
        self._times.append(now)
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return self.fps

    @property
    def fps(self) -> float:
        """Frames finished in the last ``window`` seconds (or since the start, if sooner) per
        second; 0.0 before any time has passed."""
        if not self._times:
            return 0.0
        now = self._times[-1]
        span = min(self.window, now - self.started)
        return len(self._times) / span if span > 0 else 0.0

    @property
    def mean(self) -> float:
        """Every frame over the time since the meter started (the run summary's figure)."""
        if not self._times:
            return 0.0
        span = self._times[-1] - self.started
        return self.frames / span if span > 0 else 0.0
